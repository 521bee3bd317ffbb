import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { deriveKeys, deriveWrapKey } from './keys.ts';

/**
 * The key ring: how a repository keeps one dedup key across master-key rotation. Block ids are
 * HMAC(dedup key, plaintext), so a new master key must not bring its own HKDF dedup key, or no
 * block written before would ever dedup again. Each master key that may open the repository has
 * an object `keys/<key id>` in the block store holding the repository's dedup key, wrapped with
 * AES-256-GCM under a key derived from that master key:
 *   entry = "BK2K" | format u8 | key id (8) | nonce (12) | encrypted dedup key (32) | tag (16)
 *   AAD   = "BK2K" | format | key id   (an entry cannot be moved to another key id's name)
 * The first key's own HKDF dedup key is the repository's; a repository that never rotated has no
 * ring at all.
 */
export const KEY_RING_PREFIX = 'keys/';
export const keyRingKey = (keyId: Buffer) => `${KEY_RING_PREFIX}${keyId.toString('hex')}`;

const MAGIC = Buffer.from('BK2K');
const FORMAT = 1;
const HEAD = 13; // magic, format, key id
const ENTRY_BYTES = HEAD + 12 + 32 + 16;

export class KeyRingError extends Error {}

/** What a master key contributes to the ring: its key id (the entry's name) and its wrapping key. */
export interface RingOwner {
  keyId: Buffer;
  wrapKey: Buffer;
}

export const ringOwner = (master: Buffer): RingOwner => ({ keyId: deriveKeys(master).keyId, wrapKey: deriveWrapKey(master) });

/** The ring entry for `owner`, wrapping `dedupKey` (the repository's). */
export function wrapDedupKey(owner: RingOwner, dedupKey: Buffer): Buffer {
  const head = Buffer.concat([MAGIC, Buffer.of(FORMAT), owner.keyId]);
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', owner.wrapKey, nonce);
  cipher.setAAD(head);
  const body = Buffer.concat([cipher.update(dedupKey), cipher.final()]);
  return Buffer.concat([head, nonce, body, cipher.getAuthTag()]);
}

/** The repository's dedup key from `owner`'s ring entry; throws KeyRingError if it does not open. */
export function unwrapDedupKey(owner: RingOwner, entry: Buffer): Buffer {
  const keyId = owner.keyId;
  if (entry.length !== ENTRY_BYTES || !entry.subarray(0, 4).equals(MAGIC) || entry.readUInt8(4) !== FORMAT)
    throw new KeyRingError(`key ring entry ${keyId.toString('hex')} is malformed (${entry.length} bytes)`);
  if (!entry.subarray(5, HEAD).equals(keyId))
    throw new KeyRingError(`key ring entry names key id ${entry.subarray(5, HEAD).toString('hex')}, not ${keyId.toString('hex')}`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', owner.wrapKey, entry.subarray(HEAD, HEAD + 12));
    decipher.setAAD(entry.subarray(0, HEAD));
    decipher.setAuthTag(entry.subarray(ENTRY_BYTES - 16));
    return Buffer.concat([decipher.update(entry.subarray(HEAD + 12, ENTRY_BYTES - 16)), decipher.final()]);
  } catch {
    throw new KeyRingError(`key ring entry ${keyId.toString('hex')} does not open with this key (altered, or not written for it)`);
  }
}

/** The key id a ring object's name stands for, or null for anything else under the prefix. */
export function ringKeyIdOf(objectKey: string): string | null {
  const m = /^keys\/([0-9a-f]{16})$/.exec(objectKey);
  return m ? m[1]! : null;
}
