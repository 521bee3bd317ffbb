import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdDecompress } from 'node:zlib';
import type { RepositoryKeys } from './keys.ts';
import type { BlockId } from '../domain/types.ts';

/**
 * The stored form of a block:
 *   header = magic "BK2B" | format u8 | compression u8 | key id (8) | nonce (12)   (26 bytes)
 *   body   = AES-256-GCM(zstd(plaintext) or plaintext), tag appended, AAD = header ‖ block id
 * Hashing, compression and encryption all run on libuv's thread pool (WebCrypto and async
 * zlib), so blocks in flight spread over the cores without a worker pool.
 */
const MAGIC = Buffer.from('BK2B');
const FORMAT = 1;
export const HEADER_BYTES = 26;
const enum_ = { none: 0, zstd: 1 } as const;

const compress = promisify(zstdCompress);
const decompress = promisify(zstdDecompress);
const subtle = webcrypto.subtle;

export class BlockFormatError extends Error {}
export class WrongKeyError extends Error {}

export class BlockCodec {
  readonly keys: RepositoryKeys;
  private readonly aesKey: Promise<webcrypto.CryptoKey>;
  private readonly hmacKey: Promise<webcrypto.CryptoKey>;
  private readonly zeros: Buffer;

  constructor(keys: RepositoryKeys, maxBlockSize: number) {
    this.keys = keys;
    this.aesKey = subtle.importKey('raw', keys.encryptionKey, 'AES-GCM', false, ['encrypt', 'decrypt']);
    this.hmacKey = subtle.importKey('raw', keys.dedupKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    this.zeros = Buffer.alloc(maxBlockSize);
  }

  isZero(block: Buffer): boolean {
    return block.length <= this.zeros.length
      ? block.equals(this.zeros.subarray(0, block.length))
      : block.every((b) => b === 0);
  }

  async blockId(plaintext: Buffer): Promise<BlockId> {
    const mac = await subtle.sign('HMAC', await this.hmacKey, plaintext);
    return Buffer.from(mac).toString('hex');
  }

  async encode(plaintext: Buffer, id: BlockId): Promise<Buffer> {
    const packed = await compress(plaintext, { params: { [constants.ZSTD_c_compressionLevel]: 1 } });
    const useZstd = packed.length < plaintext.length;
    const header = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(header, 0);
    header.writeUInt8(FORMAT, 4);
    header.writeUInt8(useZstd ? enum_.zstd : enum_.none, 5);
    this.keys.keyId.copy(header, 6);
    randomBytes(12).copy(header, 14);
    const body = await subtle.encrypt(
      { name: 'AES-GCM', iv: header.subarray(14, 26), additionalData: aad(header, id) },
      await this.aesKey,
      useZstd ? packed : plaintext,
    );
    return Buffer.concat([header, Buffer.from(body)]);
  }

  /** Decrypts, decompresses and proves the plaintext hashes to `id`; throws otherwise. */
  async decode(stored: Buffer, id: BlockId): Promise<Buffer> {
    if (stored.length < HEADER_BYTES + 16 || !stored.subarray(0, 4).equals(MAGIC))
      throw new BlockFormatError(`block ${id} is not a backy2 block object (${stored.length} bytes)`);
    const header = stored.subarray(0, HEADER_BYTES);
    if (header.readUInt8(4) !== FORMAT) throw new BlockFormatError(`block ${id} has unknown format ${header.readUInt8(4)}`);
    const keyId = header.subarray(6, 14);
    if (!keyId.equals(this.keys.keyId))
      throw new WrongKeyError(`block ${id} was written with key id ${keyId.toString('hex')}, but the configured key has id ${this.keys.keyId.toString('hex')}: wrong encryption_key?`);
    let body: Buffer;
    try {
      body = Buffer.from(
        await subtle.decrypt(
          { name: 'AES-GCM', iv: header.subarray(14, 26), additionalData: aad(header, id) },
          await this.aesKey,
          stored.subarray(HEADER_BYTES),
        ),
      );
    } catch {
      throw new BlockFormatError(`block ${id} failed authentication (altered or truncated object)`);
    }
    const plaintext = header.readUInt8(5) === enum_.zstd ? await decompress(body) : body;
    if ((await this.blockId(plaintext)) !== id) throw new BlockFormatError(`block ${id} decrypted to data with a different block id`);
    return plaintext;
  }
}

const aad = (header: Buffer, id: BlockId) => Buffer.concat([header, Buffer.from(id, 'hex')]);

/** Checksum of the stored object, recorded at upload so scrubs without the key can verify it. */
export const storedChecksum = (stored: Buffer) => createHash('sha256').update(stored).digest('hex');

/** Object key of a block: spread over prefixes. */
export const blockKey = (id: BlockId) => `blocks/${id.slice(0, 2)}/${id.slice(2, 4)}/${id}`;
export const manifestKey = (uid: string) => `manifests/${uid}`;
