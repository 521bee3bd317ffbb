import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { blockLength, chunkLength, chunkOf, packChunk, unpackChunk } from '../../shared/domain/blockmap.ts';
import type { BlockRef } from '../../shared/domain/types.ts';

/** A block id as the codec makes them: 64 lower-case hex chars, never all zeros (that encodes "sparse"). */
const blockIdArb = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .filter((b) => b.some((x) => x !== 0))
  .map((b) => Buffer.from(b).toString('hex'));
const entriesArb = (firstIdx: number) =>
  fc
    .array(fc.record({ id: fc.option(blockIdArb, { nil: null, freq: 3 }), length: fc.integer({ min: 0, max: 0xffffffff }) }), { maxLength: 300 })
    .map((xs) => xs.map<BlockRef>((x, i) => ({ idx: firstIdx + i, id: x.id, length: x.length })));

describe('packChunk / unpackChunk', () => {
  it('round-trips any chunk, sparse entries included, at any first index', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2_000_000 }).chain((first) => fc.tuple(fc.constant(first), entriesArb(first))),
        ([first, entries]) => {
          const packed = packChunk(entries);
          expect(packed.length).toBe(entries.length * 36);
          expect(unpackChunk(packed, first)).toEqual(entries);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('packs deterministically: equal chunks give equal bytes (so unchanged chunks are detected)', () => {
    fc.assert(
      fc.property(entriesArb(0), (entries) => {
        expect(packChunk(entries).equals(packChunk(structuredClone(entries)))).toBe(true);
      }),
    );
  });

  it('a sparse entry is 32 zero bytes followed by the length', () => {
    const packed = packChunk([{ idx: 0, id: null, length: 4096 }]);
    expect(packed.subarray(0, 32).equals(Buffer.alloc(32))).toBe(true);
    expect(packed.readUInt32BE(32)).toBe(4096);
  });

  it('rejects a packed chunk whose length is not a multiple of an entry', () => {
    fc.assert(
      fc.property(
        entriesArb(0).filter((e) => e.length > 0),
        fc.integer({ min: 1, max: 35 }),
        (entries, cut) => {
          const packed = packChunk(entries);
          expect(() => unpackChunk(packed.subarray(0, packed.length - cut), 0)).toThrow(/Corrupt block map chunk/);
        },
      ),
    );
  });
});

describe('chunk and block arithmetic', () => {
  it('every block belongs to exactly one chunk, and chunk lengths sum to the block count', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 1, max: 4096 }), (blockCount, chunkEntries) => {
        const chunks = Math.ceil(blockCount / chunkEntries);
        let sum = 0;
        let outOfRange = 0;
        for (let c = 0; c < chunks; c++) {
          const len = chunkLength(c, blockCount, chunkEntries);
          if (len <= 0 || len > chunkEntries) outOfRange++;
          sum += len;
        }
        expect(outOfRange).toBe(0);
        expect(sum).toBe(blockCount);
        if (blockCount > 0) expect(chunkOf(blockCount - 1, chunkEntries)).toBe(chunks - 1);
      }),
    );
  });

  it('block lengths cover the source exactly; only the last block is short', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1e12 }), fc.constantFrom(4096, 65536, 4 * 1024 * 1024), (size, blockSize) => {
        const count = Math.ceil(size / blockSize);
        expect(blockLength(0, size, blockSize)).toBe(Math.min(size, blockSize));
        const last = blockLength(count - 1, size, blockSize);
        expect(last).toBeGreaterThan(0);
        expect((count - 1) * blockSize + last).toBe(size);
        if (count > 1) expect(blockLength(count - 2, size, blockSize)).toBe(blockSize);
      }),
    );
  });
});
