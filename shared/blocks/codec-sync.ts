import {
  type Cipheriv,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createSecretKey,
  type Decipheriv,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { constants, ZstdCompress, ZstdDecompress, type ZstdOptions, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import type { BlockId } from '../domain/types.ts';

/**
 * The block format of codec.ts, implemented with node:crypto and node:zlib's synchronous calls:
 * what the codec's worker threads run (one block start to finish on one thread, no hops, no
 * copies between them). Byte for byte the same format as the WebCrypto path; the tests encode
 * with one and decode with the other.
 */
export const MAGIC = Buffer.from('BK2B');
export const FORMAT = 1;
export const HEADER_BYTES = 26;
export const COMPRESSION = { none: 0, zstd: 1 } as const;

/** Sampling before compressing: SAMPLES slices of SAMPLE_BYTES, spread over a large block. */
const SAMPLES = 4;
const SAMPLE_BYTES = 16 * 1024;

export interface SyncKeys {
  keyId: Buffer;
  encryptionKey: Buffer;
  dedupKey: Buffer;
  /** Older keys (rotation): decode only. */
  readKeys?: readonly { keyId: Buffer; encryptionKey: Buffer }[] | undefined;
}

export type DecodeFailure = { kind: 'format' | 'wrongKey'; message: string };

/**
 * zstd level 1, with zlib's output chunk as large as the input: the default 16 KiB chunk costs a
 * round trip between the thread pool and the main thread (and a copy) per 16 KiB.
 */
const ZSTD_LEVEL_1 = { [constants.ZSTD_c_compressionLevel]: 1 };
export const zstdOptions = (inputLength: number) => ({ chunkSize: Math.max(64 * 1024, inputLength), params: ZSTD_LEVEL_1 });

/**
 * One synchronous zstd call into a single output chunk of `chunkSize` (no joins, no copies).
 * zlib's engine keeps that chunk as its output buffer, and the engine outlives young-generation
 * collections (its native handle is released by a full one): every block's output would wait in
 * the old generation (a codec thread held 60-80 MiB of them). The engine (`info: true`) is told
 * to let go of it, so the output dies young once the caller is done with it.
 */
function zstdOnce(run: typeof zstdCompressSync | typeof zstdDecompressSync, input: Buffer, options: ZstdOptions): Buffer {
  const { buffer, engine } = run(input, { ...options, info: true }) as unknown as { buffer: Buffer; engine: { _outBuffer?: unknown } };
  engine._outBuffer = undefined;
  return buffer;
}

const compressSync = (input: Buffer) => zstdOnce(zstdCompressSync, input, zstdOptions(input.length));

/** The part of node:zlib's engine that its own one-shot calls use (lib/zlib.js, processChunkSync). */
interface ZstdEngine {
  _outBuffer: Buffer;
  _outOffset: number;
  _finishFlushFlag: number;
  _processChunk(chunk: Buffer, flushFlag: number): Buffer;
}

/**
 * One synchronous zstd call whose output goes into `into` (memory that stays mapped: shared block
 * memory, or this thread's scratch) instead of a fresh buffer: a fresh 4 MiB output costs a page
 * fault per 4 KiB and, for a decode, a copy into shared memory afterwards (a restore's decode:
 * 6.2 → 3.8 ms per block). node:zlib's one-shot calls do exactly this with a buffer of their
 * own; the engine closes itself at the end. Output that does not fit comes back as a fresh
 * buffer (correct, just slower), so callers check where the result lives.
 */
function zstdInto(Engine: typeof ZstdCompress | typeof ZstdDecompress, input: Buffer, into: Buffer, options: ZstdOptions = {}): Buffer {
  const engine = new Engine({ ...options, chunkSize: into.length }) as unknown as ZstdEngine;
  engine._outBuffer = into;
  engine._outOffset = 0;
  return engine._processChunk(input, engine._finishFlushFlag);
}

/** Whether `view` lies in `memory` (a result written where it was asked to be). */
export const isViewOf = (view: Buffer, memory: Buffer) => view.buffer === memory.buffer && view.byteOffset === memory.byteOffset;

/**
 * This thread's memory, kept between blocks, for a block's body on its way between zstd and
 * AES-GCM (compressed before it is encrypted, decrypted before it is decompressed). Only one
 * step of one block uses it at a time; nothing returned to a caller points into it.
 */
let scratch = Buffer.alloc(0);
function scratchFor(inputLength: number): Buffer {
  // zstd's worst case (ZSTD_compressBound) is the input plus 1/256 of it plus a frame header.
  const bound = inputLength + (inputLength >> 7) + 1024;
  if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound);
  return scratch;
}

/**
 * `source` copied into `target` from `at` on. Buffer#copy (TypedArray#set) copies into memory of
 * a SharedArrayBuffer with relaxed atomics, and byte by byte when the offsets are not 8-aligned,
 * as a stored object's body is (it starts 26 bytes in): 0.9-1.3 GB/s here, against 7-16 GB/s for
 * fill(), whose native memcpy does not care what kind of memory it is (a random block's encode:
 * 7.3 → 3.6-4.9 ms). With a range exactly as long as `source`, fill() copies it once.
 */
export function copyInto(source: Buffer, target: Buffer, at: number): void {
  if (source.length > 0) target.fill(source, at, at + source.length);
}

/**
 * AES-GCM in pieces this small, each piece's output copied to where the block is going: one
 * update() over a whole block returns a fresh 4 MiB buffer, and its pages are faulted in and
 * unmapped again for every block (here 5 ms of system time per 4 MiB, against 1.5 ms for the
 * decryption itself). Pieces below malloc's mmap threshold reuse the thread's heap.
 */
const GCM_PIECE = 64 * 1024;

/**
 * Encrypts `body` to `out` from `at` on, with `header` written at 0 once the first piece is read.
 * `out` may be the memory `body` is in (a plaintext encrypted in its shared memory, where each
 * output lands `at` bytes after its input): a piece's output is written only after the next
 * piece has been read, so no byte is overwritten before it is encrypted (needs at < GCM_PIECE).
 */
function sealInto(cipher: Cipheriv, body: Buffer, out: Buffer, at: number, header: Buffer): void {
  let pending: Buffer | null = null;
  let pendingAt = at;
  let headerWritten = false;
  for (let offset = 0; offset < body.length; offset += GCM_PIECE) {
    const piece = cipher.update(body.subarray(offset, offset + GCM_PIECE));
    if (!headerWritten) {
      copyInto(header, out, 0);
      headerWritten = true;
    }
    if (pending) copyInto(pending, out, pendingAt);
    pending = piece;
    pendingAt = at + offset;
  }
  if (pending) copyInto(pending, out, pendingAt);
  if (!headerWritten) copyInto(header, out, 0);
}

/**
 * Decrypts `sealed` into `out` from 0 on. `out` may be the memory `sealed` is in, starting
 * before it (a stored object decrypted in its shared memory): each piece lands where its input
 * and the piece before it were, both read already.
 */
function openInto(decipher: Decipheriv, sealed: Buffer, out: Buffer): Buffer {
  for (let offset = 0; offset < sealed.length; offset += GCM_PIECE) copyInto(decipher.update(sealed.subarray(offset, offset + GCM_PIECE)), out, offset);
  return out.subarray(0, sealed.length);
}

/** The slices a large block's compressibility is judged by; null: too small to sample, just try. */
export function compressionSample(plaintext: Buffer): Buffer | null {
  if (plaintext.length < SAMPLES * SAMPLE_BYTES * 4) return null;
  const stride = Math.floor((plaintext.length - SAMPLE_BYTES) / (SAMPLES - 1));
  return Buffer.concat(Array.from({ length: SAMPLES }, (_, i) => plaintext.subarray(i * stride, i * stride + SAMPLE_BYTES)));
}

/** A sample that shrinks by less than 3 % says the whole block would not shrink either. */
export const sampleSaysCompress = (sample: Buffer, packed: Buffer) => packed.length < sample.length * 0.97;

export function newHeader(keyId: Buffer, compressed: boolean): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt8(FORMAT, 4);
  header.writeUInt8(compressed ? COMPRESSION.zstd : COMPRESSION.none, 5);
  keyId.copy(header, 6);
  randomBytes(12).copy(header, 14);
  return header;
}

export const aad = (header: Buffer, id: BlockId) => Buffer.concat([header, Buffer.from(id, 'hex')]);

/** The key id in a stored object's header, or null when it is no block object. */
export function storedKeyId(stored: Buffer): Buffer | null {
  if (stored.length < HEADER_BYTES + 16 || !stored.subarray(0, 4).equals(MAGIC)) return null;
  return stored.subarray(6, 14);
}

/** The encryption key for a stored key id: the current key, or an older one still configured for reading. */
export function encryptionKeyFor(keys: SyncKeys, keyId: Buffer): Buffer | null {
  if (keyId.equals(keys.keyId)) return keys.encryptionKey;
  return keys.readKeys?.find((k) => k.keyId.equals(keyId))?.encryptionKey ?? null;
}

/** Checks magic, format and key id; returns a failure, or the encryption key to decrypt with. */
export function checkHeader(stored: Buffer, id: BlockId, keys: SyncKeys): DecodeFailure | { encryptionKey: Buffer } {
  if (stored.length < HEADER_BYTES + 16 || !stored.subarray(0, 4).equals(MAGIC))
    return { kind: 'format', message: `block ${id} is not a backy2 block object (${stored.length} bytes)` };
  if (stored.readUInt8(4) !== FORMAT) return { kind: 'format', message: `block ${id} has unknown format ${stored.readUInt8(4)}` };
  const storedId = stored.subarray(6, 14);
  const encryptionKey = encryptionKeyFor(keys, storedId);
  if (!encryptionKey) {
    const old = keys.readKeys?.length ? ` (older keys configured: ${keys.readKeys.map((k) => k.keyId.toString('hex')).join(', ')})` : '';
    return {
      kind: 'wrongKey',
      message: `block ${id} was written with key id ${storedId.toString('hex')}, but the configured key has id ${keys.keyId.toString('hex')}${old}: wrong encryption_key, or an old key missing from old_encryption_keys?`,
    };
  }
  return { encryptionKey };
}

/**
 * A key as node:crypto's KeyObject, made once per key: given a Buffer, every createHmac and
 * createCipheriv builds a KeyObject of its own first (85-100 us a call here, against 16-22 us
 * with one made already), and a block takes two or three of them. Key buffers never change.
 */
const keyObjects = new WeakMap<Buffer, KeyObject>();
function secretKey(key: Buffer): KeyObject {
  const known = keyObjects.get(key);
  if (known) return known;
  const made = createSecretKey(key);
  keyObjects.set(key, made);
  return made;
}

export const blockIdSync = (keys: SyncKeys, plaintext: Buffer): BlockId => createHmac('sha256', secretKey(keys.dedupKey)).update(plaintext).digest('hex');

export const checksumSync = (stored: Buffer) => createHash('sha256').update(stored).digest('hex');

/** What a stored object adds to its plaintext at most (header and tag; a body never grows). */
export const STORED_OVERHEAD = HEADER_BYTES + 16;

/**
 * The stored object of a block. With `into` (shared block memory, at least the plaintext's length
 * plus STORED_OVERHEAD; it may be the plaintext's own memory), it is written there and returned
 * as a view of it: the ciphertext is complete before the first byte of `into` is overwritten.
 */
export function encodeSync(keys: SyncKeys, plaintext: Buffer, id: BlockId, into?: Buffer): Buffer {
  const sample = compressionSample(plaintext);
  let body = plaintext;
  let compressed = false;
  if (sample === null || sampleSaysCompress(sample, compressSync(sample))) {
    // Into this thread's scratch: encryption below copies it out before the next block comes.
    const packed = zstdInto(ZstdCompress, plaintext, scratchFor(plaintext.length), { params: ZSTD_LEVEL_1 });
    if (packed.length < plaintext.length) {
      body = packed;
      compressed = true;
    }
  }
  const header = newHeader(keys.keyId, compressed);
  const cipher = createCipheriv('aes-256-gcm', secretKey(keys.encryptionKey), header.subarray(14, 26));
  cipher.setAAD(aad(header, id));
  // GCM's ciphertext is as long as its input; final() gives no bytes, only the tag.
  const length = HEADER_BYTES + body.length + 16;
  const out = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
  sealInto(cipher, body, out, HEADER_BYTES, header);
  cipher.final();
  copyInto(cipher.getAuthTag(), out, length - 16);
  return out;
}

/**
 * The plaintext of a stored object, verified against its id. With `into` (shared block memory;
 * it may hold `stored` itself, which is decrypted before it is overwritten), a compressed block
 * is decompressed straight into it; see isViewOf for where the result is.
 */
export function decodeSync(keys: SyncKeys, stored: Buffer, id: BlockId, maxChunk: number, into?: Buffer): Buffer | DecodeFailure {
  const checked = checkHeader(stored, id, keys);
  if ('kind' in checked) return checked;
  // Copied: with `into` the header's bytes are overwritten by the plaintext.
  const header = Buffer.from(stored.subarray(0, HEADER_BYTES));
  const compressed = header.readUInt8(5) === COMPRESSION.zstd;
  const sealed = stored.subarray(HEADER_BYTES, stored.length - 16);
  // A compressed body goes to this thread's scratch (zstd then writes the plaintext where it is
  // going); a raw one is the plaintext: into `into`, or into memory of its own.
  const bodyMemory = compressed ? scratchFor(sealed.length) : into && into.length >= sealed.length ? into : Buffer.allocUnsafeSlow(sealed.length);
  let body: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', secretKey(checked.encryptionKey), header.subarray(14, 26));
    decipher.setAAD(aad(header, id));
    decipher.setAuthTag(Buffer.from(stored.subarray(stored.length - 16)));
    body = openInto(decipher, sealed, bodyMemory);
    // GCM's final() only checks the tag (no bytes).
    decipher.final();
  } catch {
    return { kind: 'format', message: `block ${id} failed authentication (altered or truncated object)` };
  }
  let plaintext = body;
  if (compressed) {
    try {
      plaintext = into
        ? zstdInto(ZstdDecompress, body, into)
        : zstdOnce(zstdDecompressSync, body, { chunkSize: Math.min(maxChunk, Math.max(64 * 1024, body.length * 16)) });
    } catch (e) {
      return { kind: 'format', message: `block ${id} does not decompress: ${(e as Error).message}` };
    }
  }
  if (blockIdSync(keys, plaintext) !== id) return { kind: 'format', message: `block ${id} decrypted to data with a different block id` };
  return plaintext;
}
