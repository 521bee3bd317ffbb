import type { BlockRef } from './types.ts';

/**
 * A version's block map is stored in chunks of `chunkEntries` blocks, each packed as
 * 36 bytes per block (32-byte id, all zeros for a sparse block; u32 length), never as one
 * row or item per block: a 6 TiB device is 1.6 M blocks but only ~1600 chunks.
 */
export const DEFAULT_CHUNK_ENTRIES = 1024;
const ENTRY_BYTES = 36;
const ZERO_ID = Buffer.alloc(32);

export function packChunk(entries: BlockRef[]): Buffer {
  const out = Buffer.alloc(entries.length * ENTRY_BYTES);
  entries.forEach((e, i) => {
    const at = i * ENTRY_BYTES;
    if (e.id !== null) out.write(e.id, at, 32, 'hex');
    out.writeUInt32BE(e.length, at + 32);
  });
  return out;
}

export function unpackChunk(packed: Buffer, firstIdx: number): BlockRef[] {
  if (packed.length % ENTRY_BYTES !== 0) throw new Error(`Corrupt block map chunk: ${packed.length} bytes`);
  const entries: BlockRef[] = [];
  for (let at = 0; at < packed.length; at += ENTRY_BYTES) {
    const id = packed.subarray(at, at + 32);
    entries.push({
      idx: firstIdx + at / ENTRY_BYTES,
      id: id.equals(ZERO_ID) ? null : id.toString('hex'),
      length: packed.readUInt32BE(at + 32),
    });
  }
  return entries;
}

export const chunkOf = (idx: number, chunkEntries: number) => Math.floor(idx / chunkEntries);

/** Number of blocks in chunk `chunk` of a version with `blockCount` blocks. */
export const chunkLength = (chunk: number, blockCount: number, chunkEntries: number) => Math.min(chunkEntries, blockCount - chunk * chunkEntries);

/** Length of block `idx` of a source of `sizeBytes`. */
export const blockLength = (idx: number, sizeBytes: number, blockSize: number) => Math.min(blockSize, sizeBytes - idx * blockSize);
