import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { BlockCodec, BlockFormatError, HEADER_BYTES, WrongKeyError, blockKey, storedChecksum } from '../../shared/blocks/codec.ts';
import { deriveKeys } from '../../shared/blocks/keys.ts';
import { CodecPool, pageAlignedSharedMemory, type WithWasmMemory } from '../../shared/blocks/codec-pool.ts';
import type { Worker } from 'node:worker_threads';
import { blockIdSync, decodeSync, encodeSync, isViewOf, STORED_OVERHEAD } from '../../shared/blocks/codec-sync.ts';

/**
 * The stored block format: encode → decode round-trips; anything else (a flipped byte, a
 * truncation, another key, an object stored under another block id) is rejected.
 */
const MASTER = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const webCodec = new BlockCodec(deriveKeys(MASTER), 4 * 1024 * 1024);
const otherWebCodec = new BlockCodec(deriveKeys(Buffer.alloc(32, 7)), 4 * 1024 * 1024);
// The same format on worker threads (what the agent uses).
const poolCodec = new BlockCodec(deriveKeys(MASTER), 4 * 1024 * 1024, { workers: 2 });
const otherPoolCodec = new BlockCodec(deriveKeys(Buffer.alloc(32, 7)), 4 * 1024 * 1024, { workers: 1 });
afterAll(async () => {
  await poolCodec.close();
  await otherPoolCodec.close();
});

/** Data of the three kinds a disk image holds. */
const randomData = fc.uint8Array({ minLength: 1, maxLength: 32 * 1024 }).map((b) => Buffer.from(b));
const compressibleData = fc
  .tuple(
    fc.array(fc.constantFrom('root:x:0:0:', '/usr/bin/', 'Lorem ipsum ', '\n', 'dolor sit amet, ', '#!/bin/sh'), { minLength: 1, maxLength: 20 }),
    fc.integer({ min: 1, max: 2000 }),
  )
  .map(([words, repeat]) => Buffer.from(Array.from({ length: repeat }, (_, i) => words[i % words.length]).join('')));
const zeroData = fc.integer({ min: 1, max: 64 * 1024 }).map((n) => Buffer.alloc(n));
const anyData = fc.oneof(randomData, compressibleData, zeroData);

async function expectRejected(p: Promise<unknown>, kind: 'format' | 'any' = 'any'): Promise<Error> {
  let thrown: unknown;
  try {
    await p;
  } catch (e) {
    thrown = e;
  }
  expect(thrown, 'decode should reject').toBeInstanceOf(Error);
  if (kind === 'format') expect(thrown).toBeInstanceOf(BlockFormatError);
  else expect(thrown instanceof BlockFormatError || thrown instanceof WrongKeyError).toBe(true);
  return thrown as Error;
}

for (const [name, codec, otherCodec] of [
  ['WebCrypto', webCodec, otherWebCodec],
  ['worker threads', poolCodec, otherPoolCodec],
] as const) {
  describe(`BlockCodec round trip (${name})`, () => {
    it('encode → decode gives the plaintext back for random, compressible and zero data', async () => {
      await fc.assert(
        fc.asyncProperty(anyData, async (data) => {
          const id = await codec.blockId(data);
          const stored = await codec.encode(data, id);
          expect((await codec.decode(stored, id)).equals(data)).toBe(true);
        }),
        { numRuns: 150 },
      );
    });

    it('compresses what compresses and stores incompressible data raw (header flag, size)', async () => {
      const text = Buffer.from('The quick brown fox jumps over the lazy dog. '.repeat(2000));
      const packedText = await codec.encode(text, await codec.blockId(text));
      expect(packedText.readUInt8(5)).toBe(1);
      expect(packedText.length).toBeLessThan(text.length / 10);
      const noise = randomBytes(64 * 1024);
      const packedNoise = await codec.encode(noise, await codec.blockId(noise));
      expect(packedNoise.readUInt8(5)).toBe(0);
      expect(packedNoise.length).toBe(noise.length + HEADER_BYTES + 16);
    });

    it('a full 4 MiB block round-trips', async () => {
      const data = Buffer.concat([randomBytes(1024 * 1024), Buffer.alloc(1024 * 1024), Buffer.from('abcdefgh'.repeat(256 * 1024))]);
      const id = await codec.blockId(data);
      expect((await codec.decode(await codec.encode(data, id), id)).equals(data)).toBe(true);
    });

    it('the header names magic, format, key id and a fresh nonce; two encodings of one block differ', async () => {
      const data = Buffer.from('same block');
      const id = await codec.blockId(data);
      const [a, b] = [await codec.encode(data, id), await codec.encode(data, id)];
      expect(a.subarray(0, 4).toString()).toBe('BK2B');
      expect(a.subarray(6, 14).equals(codec.keys.keyId)).toBe(true);
      expect(a.subarray(14, 26).equals(b.subarray(14, 26))).toBe(false);
      expect(a.equals(b)).toBe(false);
    });
  });

  describe(`BlockCodec rejects tampering (${name})`, () => {
    it('any flipped bit in any byte is rejected', async () => {
      await fc.assert(
        fc.asyncProperty(anyData, fc.nat(), fc.integer({ min: 1, max: 255 }), async (data, at, mask) => {
          const id = await codec.blockId(data);
          const stored = await codec.encode(data, id);
          const pos = at % stored.length;
          const bad = Buffer.from(stored);
          bad[pos] = bad[pos]! ^ mask;
          // A changed key id says "wrong key"; every other change is a format or authentication failure.
          await expectRejected(codec.decode(bad, id), pos >= 6 && pos < 14 ? 'any' : 'format');
        }),
        { numRuns: 200 },
      );
    });

    it('every truncation is rejected', async () => {
      await fc.assert(
        fc.asyncProperty(anyData, fc.nat(), async (data, cut) => {
          const id = await codec.blockId(data);
          const stored = await codec.encode(data, id);
          await expectRejected(codec.decode(stored.subarray(0, cut % stored.length), id), 'format');
        }),
        { numRuns: 150 },
      );
    });

    it('appended bytes are rejected', async () => {
      const data = Buffer.from('block');
      const id = await codec.blockId(data);
      await expectRejected(codec.decode(Buffer.concat([await codec.encode(data, id), Buffer.from([0])]), id), 'format');
    });

    it('an object written with another key is rejected with WrongKeyError naming the key ids', async () => {
      await fc.assert(
        fc.asyncProperty(anyData, async (data) => {
          const id = await otherCodec.blockId(data);
          const stored = await otherCodec.encode(data, id);
          const e = await expectRejected(codec.decode(stored, id));
          expect(e).toBeInstanceOf(WrongKeyError);
          expect(e.message).toContain(codec.keys.keyId.toString('hex'));
          expect(e.message).toContain(otherCodec.keys.keyId.toString('hex'));
        }),
        { numRuns: 30 },
      );
    });

    it('the block id is bound as associated data: an object swapped under another id fails', async () => {
      await fc.assert(
        fc.asyncProperty(anyData, anyData, async (a, b) => {
          const [idA, idB] = [await codec.blockId(a), await codec.blockId(b)];
          fc.pre(idA !== idB);
          const storedA = await codec.encode(a, idA);
          const e = await expectRejected(codec.decode(storedA, idB), 'format');
          expect(e.message).toMatch(/failed authentication/);
        }),
        { numRuns: 100 },
      );
    });

    it('a non-block object and an unknown format are rejected with what is wrong', async () => {
      const data = Buffer.from('x');
      const id = await codec.blockId(data);
      expect((await expectRejected(codec.decode(Buffer.from('hello, this is not a block at all, really not'), id), 'format')).message).toMatch(
        /not a backy2 block object/,
      );
      const stored = await codec.encode(data, id);
      stored.writeUInt8(9, 4);
      expect((await expectRejected(codec.decode(stored, id), 'format')).message).toMatch(/unknown format 9/);
    });
  });
}

describe('block ids and keys of objects', () => {
  it('the block id is a keyed hash: deterministic, 64 hex chars, different under another key', async () => {
    await fc.assert(
      fc.asyncProperty(anyData, async (data) => {
        const id = await webCodec.blockId(data);
        expect(id).toMatch(/^[0-9a-f]{64}$/);
        expect(await webCodec.blockId(Buffer.from(data))).toBe(id);
        expect(await otherWebCodec.blockId(data)).not.toBe(id);
      }),
      { numRuns: 50 },
    );
  });

  it('isZero recognises all-zero blocks of any length, and nothing else', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 70_000 }), fc.nat(), (n, at) => {
        const zeros = Buffer.alloc(n);
        expect(webCodec.isZero(zeros)).toBe(true);
        if (n > 0) {
          zeros[at % n] = 1;
          expect(webCodec.isZero(zeros)).toBe(false);
        }
      }),
    );
    const small = new BlockCodec(deriveKeys(MASTER), 16);
    expect(small.isZero(Buffer.alloc(100))).toBe(true);
    expect(small.isZero(Buffer.concat([Buffer.alloc(99), Buffer.from([1])]))).toBe(false);
  });

  it('object keys spread over two prefix levels; the stored checksum is sha256 of the object', () => {
    const id = 'abcdef' + '0'.repeat(58);
    expect(blockKey(id)).toBe(`blocks/ab/cd/${id}`);
    expect(storedChecksum(Buffer.from('abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('the two implementations are one format', () => {
  it('what one encodes the other decodes, ids agree, checksums are of the stored object', async () => {
    await fc.assert(
      fc.asyncProperty(anyData, async (data) => {
        const id = await webCodec.blockId(data);
        expect(await poolCodec.blockId(data)).toBe(id);
        const fromWeb = await webCodec.encodeForUpload(data, id);
        const fromPool = await poolCodec.encodeForUpload(data, id);
        expect(fromWeb.checksum).toBe(storedChecksum(fromWeb.stored));
        expect(fromPool.checksum).toBe(storedChecksum(fromPool.stored));
        // zlib's one-shot and streaming zstd are one format (either decodes) but need not give the
        // same bytes: on tiny inputs they differ by up to a dozen (69 bytes gave 47 and 58). Neither
        // may grow a block past its header and tag, and on larger inputs they agree within 2 %.
        for (const { stored } of [fromWeb, fromPool]) expect(stored.length).toBeLessThanOrEqual(data.length + HEADER_BYTES + 16);
        expect(Math.abs(fromPool.stored.length - fromWeb.stored.length)).toBeLessThanOrEqual(Math.max(16, 0.02 * data.length));
        expect((await poolCodec.decode(fromWeb.stored, id)).equals(data)).toBe(true);
        expect((await webCodec.decode(fromPool.stored, id)).equals(data)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it("does not touch the caller's buffers", async () => {
    const data = Buffer.from('keep me '.repeat(1000));
    const copy = Buffer.from(data);
    const id = await poolCodec.blockId(data);
    const stored = await poolCodec.encode(data, id);
    const storedCopy = Buffer.from(stored);
    await poolCodec.decode(stored, id);
    expect(data.equals(copy) && stored.equals(storedCopy)).toBe(true);
  });
});

describe('a codec worker that is gone', () => {
  it('fails the jobs sent to it afterwards instead of leaving them unanswered (the process would end with exit 13)', async () => {
    const pool = new CodecPool(deriveKeys(MASTER), 1024 * 1024, 1);
    const data = Buffer.from('a block');
    expect((await pool.run('id', data)).ok).toBe(true);
    // As when a thread dies of EMFILE between two blocks (it exits; nothing was pending on it).
    const { slots } = pool as unknown as { slots: { worker: Worker }[] };
    await slots[0]!.worker.terminate();
    await expect(pool.run('id', data)).rejects.toThrow(/codec worker exited/);
    await pool.close();
  });
});

describe("shared block memory (the pipelines' per-block buffers)", () => {
  it('a block read into it is hashed, encoded and decoded in place: the same bytes as with its own buffers, and the memory is reused', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyData, fc.constant(randomBytes(4 * 1024 * 1024))), async (data) => {
        const memory = poolCodec.blockBuffer()!;
        try {
          data.copy(memory);
          const { id, plaintext } = await poolCodec.blockIdOf(memory.subarray(0, data.length));
          expect(id).toBe(await webCodec.blockId(data));
          expect(plaintext.buffer).toBe(memory.buffer);
          const { stored, checksum } = await poolCodec.encodeForUpload(plaintext, id, true);
          expect(stored.buffer).toBe(memory.buffer);
          expect(checksum).toBe(storedChecksum(stored));
          expect((await webCodec.decode(Buffer.from(stored), id)).equals(data)).toBe(true);
          const decoded = await poolCodec.decode(stored, id, true);
          expect(decoded.buffer).toBe(memory.buffer);
          expect(decoded.equals(data)).toBe(true);
        } finally {
          poolCodec.releaseBlockBuffer(memory);
        }
      }),
      { numRuns: 40 },
    );
    // Released memory is handed out again, not made anew.
    const first = poolCodec.blockBuffer()!;
    poolCodec.releaseBlockBuffer(first);
    expect(poolCodec.blockBuffer()!.buffer).toBe(first.buffer);
  });

  it('zstd writes into the memory it is given (no fresh output buffer); a block too large for it still decodes', () => {
    const keys = deriveKeys(MASTER);
    const data = Buffer.from('compress me, '.repeat(200_000)).subarray(0, 2 * 1024 * 1024);
    const id = blockIdSync(keys, data);
    const memory = Buffer.from(new SharedArrayBuffer(data.length + STORED_OVERHEAD));
    const stored = encodeSync(keys, data, id, memory);
    expect(isViewOf(stored, memory) && stored.length < data.length / 10).toBe(true);
    const storedCopy = Buffer.from(stored);
    const plain = decodeSync(keys, stored, id, data.length, memory) as Buffer;
    // Decompressed straight into the memory the stored object was in: no copy left to make.
    expect(Buffer.isBuffer(plain) && isViewOf(plain, memory)).toBe(true);
    expect(plain.equals(data)).toBe(true);
    const small = Buffer.from(new SharedArrayBuffer(1024 * 1024));
    const again = decodeSync(keys, storedCopy, id, data.length, small) as Buffer;
    expect(Buffer.isBuffer(again) && !isViewOf(again, small) && again.equals(data)).toBe(true);
  });

  it('AES-GCM in 64 KiB pieces, in place: every length around a piece boundary encodes over its own plaintext and decodes over its stored object', async () => {
    const keys = deriveKeys(MASTER);
    const P = 64 * 1024;
    for (const length of [1, 25, 26, 27, P - 27, P - 1, P, P + 1, P + 26, 3 * P + 5, 4 * 1024 * 1024]) {
      for (const kind of ['random', 'text'] as const) {
        const data = kind === 'random' ? randomBytes(length) : Buffer.from('abc, def; '.repeat(length)).subarray(0, length);
        const id = blockIdSync(keys, data);
        const memory = Buffer.from(new SharedArrayBuffer(length + STORED_OVERHEAD));
        data.copy(memory);
        const stored = encodeSync(keys, memory.subarray(0, length), id, memory);
        const copy = Buffer.from(stored);
        // The other implementation reads what this one wrote over the plaintext.
        expect((await webCodec.decode(copy, id)).equals(data)).toBe(true);
        const plain = decodeSync(keys, stored, id, length, memory);
        expect(Buffer.isBuffer(plain) && plain.equals(data)).toBe(true);
        const damaged = Buffer.from(copy);
        damaged[damaged.length - 17]! ^= 1;
        expect(decodeSync(keys, damaged, id, length, Buffer.from(new SharedArrayBuffer(length + STORED_OVERHEAD)))).toMatchObject({ kind: 'format' });
      }
    }
  });

  it('a damaged object in shared memory is rejected like any other', async () => {
    const data = Buffer.from('payload '.repeat(5000));
    const id = await webCodec.blockId(data);
    const stored = await webCodec.encode(data, id);
    const memory = poolCodec.blockBuffer()!;
    stored.copy(memory);
    memory[HEADER_BYTES + 5]! ^= 1;
    await expectRejected(poolCodec.decode(memory.subarray(0, stored.length), id, true), 'format');
    poolCodec.releaseBlockBuffer(memory);
  });

  it("check (a scrub's decode) gives the stored checksum with the plaintext, or with the failure, on both implementations", async () => {
    const data = Buffer.from('scrub me '.repeat(3000));
    const id = await webCodec.blockId(data);
    const stored = await webCodec.encode(data, id);
    const damaged = Buffer.from(stored);
    damaged[damaged.length - 1]! ^= 1;
    for (const codec of [webCodec, poolCodec]) {
      const good = await codec.check(Buffer.from(stored), id);
      expect(good.checksum).toBe(storedChecksum(stored));
      expect(good.plaintext?.equals(data)).toBe(true);
      expect(good.error).toBeNull();
      const bad = await codec.check(Buffer.from(damaged), id);
      expect(bad.checksum).toBe(storedChecksum(damaged));
      expect(bad.plaintext).toBeNull();
      expect(bad.error).toBeInstanceOf(BlockFormatError);
    }
  });

  it('without workers there is no shared memory (callers use their own buffers)', () => {
    expect(webCodec.blockBuffer()).toBeNull();
  });

  it('block memory is mapped memory of its own (a shared WebAssembly.Memory), zeroed, at least the size asked for', () => {
    const memory = pageAlignedSharedMemory(4 * 1024 * 1024 + 4096);
    expect(memory).toBeInstanceOf(SharedArrayBuffer);
    expect(memory.byteLength).toBeGreaterThanOrEqual(4 * 1024 * 1024 + 4096);
    expect(memory.byteLength % 65536).toBe(0);
    expect(new Uint8Array(memory).every((b) => b === 0)).toBe(true);
  });

  it('where WebAssembly memory is refused, block memory is a plain SharedArrayBuffer of the size', () => {
    const refused = vi.spyOn((globalThis as unknown as WithWasmMemory).WebAssembly, 'Memory').mockImplementation(() => {
      throw new RangeError('WebAssembly.Memory(): could not allocate memory');
    });
    try {
      const memory = pageAlignedSharedMemory(1000);
      expect(memory).toBeInstanceOf(SharedArrayBuffer);
      expect(memory.byteLength).toBe(1000);
    } finally {
      refused.mockRestore();
    }
  });
});

describe('compression sampling', () => {
  const MiB = 1024 * 1024;
  for (const [name, codec] of [
    ['WebCrypto', webCodec],
    ['worker threads', poolCodec],
  ] as const) {
    it(`${name}: a large random block is stored raw; a large block with compressible parts is compressed`, async () => {
      const noise = randomBytes(4 * MiB);
      const raw = await codec.encode(noise, await codec.blockId(noise));
      expect(raw.readUInt8(5)).toBe(0);
      expect(raw.length).toBe(noise.length + HEADER_BYTES + 16);
      // Half zeros, half noise, interleaved in 64 KiB runs: every sample sees both.
      const mixed = Buffer.concat(Array.from({ length: 64 }, (_, i) => (i % 2 ? randomBytes(64 * 1024) : Buffer.alloc(64 * 1024))));
      const packed = await codec.encode(mixed, await codec.blockId(mixed));
      expect(packed.readUInt8(5)).toBe(1);
      expect(packed.length).toBeLessThan(mixed.length * 0.6);
      expect((await codec.decode(packed, await codec.blockId(mixed))).equals(mixed)).toBe(true);
    });
  }
});
