import { z } from 'zod';

/** Schema pieces every boundary uses (events, api commands, export files, scrub batches). */
export const uid = z.string().uuid();
export const blockId = z.string().regex(/^[0-9a-f]{64}$/, 'block id must be 64 hex chars');
export const instant = z.string().datetime({ offset: true });
export const tags = z.array(z.string().min(1).max(255)).max(100);
