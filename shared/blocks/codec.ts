import { createHash, webcrypto } from 'node:crypto';
import { promisify } from 'node:util';
import { zstdCompress, zstdDecompress } from 'node:zlib';
import type { RepositoryKeys } from './keys.ts';
import type { BlockId } from '../domain/types.ts';
import { CodecPool } from './codec-pool.ts';
import type { CodecResponse } from './codec-worker.ts';
import type { HttpLocation } from '../ports/block-store.ts';
import type { HttpFailure } from '../adapters/http-object.ts';
import { aad, checkHeader, COMPRESSION, compressionSample, HEADER_BYTES, newHeader, sampleSaysCompress, zstdOptions } from './codec-sync.ts';

/**
 * The stored form of a block:
 *   header = magic "BK2B" | format u8 | compression u8 | key id (8) | nonce (12)   (26 bytes)
 *   body   = AES-256-GCM(zstd(plaintext) or plaintext), tag appended, AAD = header ‖ block id
 * A large block is compressed only if a sample of it compresses (codec-sync.ts).
 *
 * Two implementations of the one format: with `workers`, each block's work runs start to finish
 * on a worker thread (codec-pool.ts, the agent's pipelines); without, on libuv's thread pool
 * through WebCrypto and async zlib (the cloud functions, which bundle no worker file).
 */
const compress = promisify(zstdCompress);
const decompress = promisify(zstdDecompress);
const subtle = webcrypto.subtle;

export { HEADER_BYTES };

export class BlockFormatError extends Error {}
export class WrongKeyError extends Error {}

/** A codec thread's GET or PUT of a stored object did not do its work (fetchAndDecode, upload): go through the store instead. */
export class TransferFailedError extends Error {
  readonly failure: HttpFailure;
  constructor(failure: HttpFailure) {
    super(`${failure.name}: ${failure.message}`);
    this.failure = failure;
  }
}

export interface CodecOptions {
  /** Worker threads to run the codec on; 0 (default): WebCrypto and async zlib on libuv's pool. */
  workers?: number;
}

export class BlockCodec {
  readonly keys: RepositoryKeys;
  private aesKeyMade: Promise<webcrypto.CryptoKey> | null = null;
  private hmacKeyMade: Promise<webcrypto.CryptoKey> | null = null;
  private readonly zeros: Buffer;
  private readonly pool: CodecPool | null;

  constructor(keys: RepositoryKeys, maxBlockSize: number, opts: CodecOptions = {}) {
    this.keys = keys;
    this.zeros = Buffer.alloc(maxBlockSize);
    this.pool = opts.workers ? new CodecPool(keys, maxBlockSize, opts.workers) : null;
  }

  // WebCrypto keys, made on first use: with workers they are never needed, and importing one
  // loads WebCrypto's modules (7.5 ms of a restore's start-up).
  private get aesKey(): Promise<webcrypto.CryptoKey> {
    this.aesKeyMade ??= subtle.importKey('raw', this.keys.encryptionKey, 'AES-GCM', false, ['encrypt', 'decrypt']);
    return this.aesKeyMade;
  }

  private get hmacKey(): Promise<webcrypto.CryptoKey> {
    this.hmacKeyMade ??= subtle.importKey('raw', this.keys.dedupKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return this.hmacKeyMade;
  }

  /** Worker threads in use (0: none). */
  get workers(): number {
    return this.pool?.size ?? 0;
  }

  /**
   * Reusable memory for one block in flight, shared with the workers (codec-pool.ts acquire());
   * null without workers. A block read into it and given to blockIdOf, encodeForUpload or decode
   * has the result written back into it, returned as a view. Give it back with releaseBlockBuffer.
   */
  blockBuffer(): Buffer | null {
    return this.pool?.acquire() ?? null;
  }

  releaseBlockBuffer(memory: Buffer | null): void {
    if (memory) this.pool?.release(memory);
  }

  /** Makes block buffers start where `probe` says (see CodecPool.alignMemory); no-op without workers. */
  alignBlockBuffers(probe: (memory: SharedArrayBuffer) => number | null): void {
    this.pool?.alignMemory(probe);
  }

  /** Whether `data` is a view from the start of an aligned block buffer (alignBlockBuffers). */
  isAlignedBlockBuffer(data: Buffer): boolean {
    return this.pool?.isAligned(data) ?? false;
  }

  isZero(block: Buffer): boolean {
    return block.length <= this.zeros.length ? block.equals(this.zeros.subarray(0, block.length)) : block.every((b) => b === 0);
  }

  async blockId(plaintext: Buffer): Promise<BlockId> {
    if (this.pool) return unwrap(await this.pool.run('id', plaintext)).id!;
    const mac = await subtle.sign('HMAC', await this.hmacKey, plaintext);
    return Buffer.from(mac).toString('hex');
  }

  /**
   * The block id, for a caller that hands its buffer over: with workers it travels to a worker
   * and back without a copy, and the caller continues with the returned buffer (same bytes).
   */
  async blockIdOf(plaintext: Buffer): Promise<{ id: BlockId; plaintext: Buffer }> {
    if (!this.pool) return { id: await this.blockId(plaintext), plaintext };
    const res = unwrap(await this.pool.run('id', plaintext, undefined, true));
    return { id: res.id!, plaintext: res.data ? asBuffer(res.data) : plaintext };
  }

  async encode(plaintext: Buffer, id: BlockId): Promise<Buffer> {
    return (await this.encodeForUpload(plaintext, id)).stored;
  }

  /**
   * The stored object and its checksum (sha256 hex, recorded in the index for key-less scrubs).
   * With `give`, the caller gives up `plaintext` (it may be moved to a worker without a copy).
   */
  async encodeForUpload(plaintext: Buffer, id: BlockId, give = false): Promise<{ stored: Buffer; checksum: string }> {
    if (this.pool) {
      const res = unwrap(await this.pool.run('encode', plaintext, id, give));
      return { stored: resultOf(res, plaintext), checksum: res.checksum! };
    }
    // A block whose sample does not compress (random, already compressed or encrypted data) is
    // stored raw without the attempt, which costs as much as AES-GCM on such data.
    const sample = compressionSample(plaintext);
    const tryIt = sample === null || sampleSaysCompress(sample, await compress(sample, zstdOptions(sample.length)));
    const packed = tryIt ? await compress(plaintext, zstdOptions(plaintext.length)) : null;
    const useZstd = packed !== null && packed.length < plaintext.length;
    const header = newHeader(this.keys.keyId, useZstd);
    const body = await subtle.encrypt(
      { name: 'AES-GCM', iv: header.subarray(14, 26), additionalData: aad(header, id) },
      await this.aesKey,
      useZstd ? packed! : plaintext,
    );
    const stored = Buffer.concat([header, Buffer.from(body)]);
    return { stored, checksum: await storedChecksumAsync(stored) };
  }

  /**
   * Decrypts, decompresses and proves the plaintext hashes to `id`; throws otherwise. With
   * `give`, the caller gives up `stored` (it may be moved to a worker without a copy, or, in
   * shared block memory, have the plaintext written over it).
   */
  async decode(stored: Buffer, id: BlockId, give = false): Promise<Buffer> {
    if (!this.pool) return this.decodeHere(stored, id);
    return decoded(await this.pool.run('decode', stored, id, give), stored);
  }

  /**
   * decode() of a stored object a worker GETs by itself from `location` (BlockStore.locate) into
   * `memory` (from blockBuffer()), where the plaintext is then written over it: the object's bytes
   * never reach this thread. A GET that failed throws TransferFailedError.
   */
  async fetchAndDecode(location: HttpLocation, id: BlockId, memory: Buffer): Promise<Buffer> {
    if (!this.pool) throw new Error('fetchAndDecode needs the codec worker threads');
    const res = await this.pool.fetch(location, memory, id);
    if (!res.ok && res.http) throw new TransferFailedError(res.http);
    return decoded(res, memory);
  }

  /**
   * Whether `stored` is a view from the start of block memory (blockBuffer()), as
   * encodeForUpload's result is when its plaintext was: then upload() can send it from there.
   */
  isBlockBuffer(stored: Buffer): boolean {
    return this.pool?.isShared(stored) ?? false;
  }

  /**
   * A worker PUTs `stored` (in block memory, see isBlockBuffer) to `location`
   * (BlockStore.locateUpload) from that memory: the object's bytes never pass through this
   * thread. A PUT answered other than 200 (412 included: the object exists) throws TransferFailedError.
   */
  async upload(location: HttpLocation, stored: Buffer): Promise<void> {
    if (!this.pool) throw new Error('upload needs the codec worker threads');
    const res = await this.pool.upload(location, stored, stored.length);
    if (!res.ok && res.http) throw new TransferFailedError(res.http);
    unwrap(res);
  }

  /**
   * A scrub's decode: the stored object's checksum (sha256 hex, as recorded in the index) and
   * either the plaintext or why it failed; the checksum is computed on the worker too.
   */
  async check(stored: Buffer, id: BlockId, give = false): Promise<CheckedBlock> {
    if (!this.pool) {
      const checksum = storedChecksum(stored);
      const storedSize = stored.length;
      return this.decodeHere(stored, id).then(
        (plaintext) => ({ checksum, storedSize, plaintext, error: null }),
        (error: Error) => ({ checksum, storedSize, plaintext: null, error }),
      );
    }
    return checkedBlock(await this.pool.run('check', stored, id, give), stored);
  }

  /**
   * check() of a stored object a worker GETs by itself from `location` into `memory`, as
   * fetchAndDecode does (its bytes never reach this thread). A GET that failed throws TransferFailedError.
   */
  async fetchAndCheck(location: HttpLocation, id: BlockId, memory: Buffer): Promise<CheckedBlock> {
    if (!this.pool) throw new Error('fetchAndCheck needs the codec worker threads');
    const res = await this.pool.fetch(location, memory, id, 'check');
    if (!res.ok && res.http) throw new TransferFailedError(res.http);
    return checkedBlock(res, memory);
  }

  /** decode() without workers: WebCrypto and async zlib on libuv's pool. */
  private async decodeHere(stored: Buffer, id: BlockId): Promise<Buffer> {
    const checked = checkHeader(stored, id, this.keys);
    if ('kind' in checked) throw checked.kind === 'wrongKey' ? new WrongKeyError(checked.message) : new BlockFormatError(checked.message);
    const header = stored.subarray(0, HEADER_BYTES);
    let body: Buffer;
    try {
      body = Buffer.from(
        await subtle.decrypt(
          { name: 'AES-GCM', iv: header.subarray(14, 26), additionalData: aad(header, id) },
          checked.encryptionKey === this.keys.encryptionKey
            ? await this.aesKey
            : await subtle.importKey('raw', checked.encryptionKey, 'AES-GCM', false, ['decrypt']),
          stored.subarray(HEADER_BYTES),
        ),
      );
    } catch {
      throw new BlockFormatError(`block ${id} failed authentication (altered or truncated object)`);
    }
    let plaintext = body;
    if (header.readUInt8(5) === COMPRESSION.zstd) {
      try {
        plaintext = await decompress(body, { chunkSize: Math.min(this.zeros.length, Math.max(64 * 1024, body.length * 16)) });
      } catch (e) {
        throw new BlockFormatError(`block ${id} does not decompress: ${(e as Error).message}`);
      }
    }
    if ((await this.blockId(plaintext)) !== id) throw new BlockFormatError(`block ${id} decrypted to data with a different block id`);
    return plaintext;
  }

  /** Stops the worker threads, if any. */
  async close(): Promise<void> {
    await this.pool?.close();
  }
}

function unwrap(res: CodecResponse): Extract<CodecResponse, { ok: true }> {
  if (res.ok) return res;
  throw new Error(res.failure?.message ?? `codec worker failed: ${res.error}`);
}

const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** A decode's plaintext, or its failure thrown as BlockFormatError / WrongKeyError. */
function decoded(res: CodecResponse, stored: Buffer): Buffer {
  if (!res.ok && res.failure) throw res.failure.kind === 'wrongKey' ? new WrongKeyError(res.failure.message) : new BlockFormatError(res.failure.message);
  return resultOf(unwrap(res), stored);
}

/** What a scrub's check found: the stored object's checksum and size, and its plaintext or why it failed. */
export interface CheckedBlock {
  checksum: string;
  storedSize: number;
  plaintext: Buffer | null;
  error: Error | null;
}

function checkedBlock(res: CodecResponse, stored: Buffer): CheckedBlock {
  // A worker that threw is a bug, not a finding about the block: it must not mark the block bad.
  if (!res.ok && !res.failure) unwrap(res);
  const found = { checksum: res.checksum!, storedSize: res.storedSize! };
  try {
    return { ...found, plaintext: decoded(res, stored), error: null };
  } catch (error) {
    return { ...found, plaintext: null, error: error as Error };
  }
}

/** A job's result: its own buffer, or written over the shared memory `given` was in. */
const resultOf = (res: Extract<CodecResponse, { ok: true }>, given: Buffer) =>
  res.data ? asBuffer(res.data) : Buffer.from(given.buffer, given.byteOffset, res.length!);

/** Checksum of the stored object, recorded at upload so scrubs without the key can verify it. */
export const storedChecksum = (stored: Buffer) => createHash('sha256').update(stored).digest('hex');

/** The same checksum, computed on the thread pool (the backup pipeline's main thread has enough to do). */
export const storedChecksumAsync = async (stored: Buffer) => Buffer.from(await subtle.digest('SHA-256', stored)).toString('hex');

/** Object key of a block: spread over prefixes. */
export const blockKey = (id: BlockId) => `blocks/${id.slice(0, 2)}/${id.slice(2, 4)}/${id}`;
export const manifestKey = (uid: string) => `manifests/${uid}`;
