import { createHash, hkdfSync } from 'node:crypto';
import { usageError } from '../domain/errors.ts';

/**
 * The repository master key (64 hex chars, as backy2's encryption_key) is never used
 * directly: HKDF derives a separate encryption key and dedup (block id) key, and a key id
 * that every stored object names, so keys can rotate later.
 */
export interface RepositoryKeys {
  keyId: Buffer; // 8 bytes
  encryptionKey: Buffer; // 32 bytes, AES-256-GCM
  dedupKey: Buffer; // 32 bytes, HMAC-SHA256
  /**
   * Key rotation (keyring.ts): older master keys' ids and encryption keys, so blocks they wrote
   * stay readable until `rekey`; new blocks are always written with `keyId`.
   */
  readKeys?: readonly ReadKey[];
  /** Wraps the repository's dedup key in the key ring (derived from the configured master key). */
  wrapKey?: Buffer;
}

export interface ReadKey {
  keyId: Buffer;
  encryptionKey: Buffer;
}

const SALT = Buffer.from('backy2-serverless/v1');

export function parseMasterKey(hex: string | undefined, where = 'encryption_key'): Buffer {
  if (hex === undefined || hex.trim() === '') throw usageError(`${where} is missing: set 64 hex characters (openssl rand -hex 32)`);
  const trimmed = hex.trim();
  if (!/^[0-9a-fA-F]*$/.test(trimmed)) throw usageError(`${where} is not hexadecimal: it must be 64 hex characters`);
  if (trimmed.length !== 64) throw usageError(`${where} has ${trimmed.length} hex characters; it must have exactly 64`);
  return Buffer.from(trimmed, 'hex');
}

export function deriveKeys(master: Buffer): RepositoryKeys {
  const derive = (info: string, length: number) => Buffer.from(hkdfSync('sha256', master, SALT, info, length));
  return {
    keyId: derive('key-id', 8),
    encryptionKey: derive('encryption', 32),
    dedupKey: derive('dedup', 32),
  };
}

/** The key that wraps the repository's dedup key in this master key's key-ring entry. */
export const deriveWrapKey = (master: Buffer) => Buffer.from(hkdfSync('sha256', master, SALT, 'key-ring-wrap', 32));

/** A short fingerprint to print next to the key's location (never the key itself). */
export const keyFingerprint = (keys: RepositoryKeys) => createHash('sha256').update(keys.keyId).digest('hex').slice(0, 16);
