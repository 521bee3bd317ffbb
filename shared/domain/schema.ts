import { z } from 'zod';

/** Schema pieces every boundary uses (events, api commands, export files, scrub batches). */
export const uid = z.string().uuid();
/** A SHA-256 or HMAC-SHA256 in hex: block ids (keyed) and the stored objects' checksums. */
const SHA256_HEX = /^[0-9a-f]{64}$/;
export const blockId = z.string().regex(SHA256_HEX, 'block id must be 64 hex chars');
export const sha256Hex = z.string().regex(SHA256_HEX, 'checksum must be 64 hex chars');
export const instant = z.string().datetime({ offset: true });
/** A version's name, a tag, a lease holder: what names.ts checks further at the command boundary. */
export const label = z.string().min(1).max(255);
export const tags = z.array(label).max(100);
