/**
 * The primitives every block costs, measured on this machine in this run (one core, node:crypto
 * and node:zlib as the codec uses them, on blocks of the bench image), and the bound they set:
 * the CPU seconds the image's blocks need at those rates, spread over all cores. No tool can
 * do the same work faster; our ratio to the bound says how much the pipeline adds.
 *
 * Left out of the bound: process start-up and the metadata store. The disk (restore's fsync) is
 * bounded apart (diskFlushRate), as the time the data needs to reach it.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { BLOCK, type BlockKind, median, MiB, textBlock } from './harness.ts';

export interface Primitives {
  /** MiB/s on one core, of the input unless said otherwise. */
  hmacSha256: number;
  sha256: number;
  aesGcmEncrypt: number;
  aesGcmDecrypt: number;
  zstdCompressText: number;
  /** zstd level 1 on the 64 KiB sample of a random block (the codec's compressibility probe). */
  zstdCompressSample: number;
  /** Of the output (the plaintext). */
  zstdDecompressText: number;
  memcpy: number;
  /** pread of the image's 4 MiB blocks, in order, from the page cache into one buffer: what reading a source or a stored object costs. */
  pageCacheRead: number;
  /** One 4 MiB write into a new file, through the page cache (no fsync): what storing an object costs the kernel. */
  newFileWrite: number;
  zeroCheck: number;
  /** Text blocks' compression ratio at zstd level 1. */
  textRatio: number;
}

const zstd1 = (chunk: number) => ({ chunkSize: Math.max(64 * 1024, chunk), params: { [constants.ZSTD_c_compressionLevel]: 1 } });

/** MiB/s of `fn` on `bytes` bytes: the median of 5 timed runs of ~0.15 s each. */
function rateOf(bytes: number, fn: () => void): number {
  fn();
  const rates: number[] = [];
  for (let round = 0; round < 5; round++) {
    let n = 0;
    const started = process.hrtime.bigint();
    let elapsed = 0;
    while (elapsed < 0.15) {
      fn();
      n++;
      elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    }
    rates.push((bytes * n) / MiB / elapsed);
  }
  return median(rates);
}

function readBlock(image: string, idx: number): Buffer {
  const fd = openSync(image, 'r');
  try {
    const b = Buffer.alloc(BLOCK);
    readSync(fd, b, 0, BLOCK, idx * BLOCK);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** Up to `n` of the image's blocks of `kind`, spread over it (the first, the last, and between). */
function blocksOf(image: string, kinds: readonly BlockKind[], kind: BlockKind, n: number): Buffer[] {
  const at = kinds.flatMap((k, i) => (k === kind ? [i] : []));
  const picked = at.length <= n ? at : Array.from({ length: n }, (_, j) => at[Math.round((j * (at.length - 1)) / (n - 1))]!);
  return picked.map((i) => readBlock(image, i));
}

/**
 * `kinds`: each block's kind (the generated image's layout, or classifyImage's of a given one).
 * Rates that do not depend on the data (hashes, AES-GCM, copies) are measured on random bytes;
 * zstd's on up to 8 of the image's compressible blocks, which also give the compression ratio.
 */
export function measurePrimitives(image: string, kinds: readonly BlockKind[]): Primitives {
  const random = Buffer.alloc(BLOCK);
  randomFillSync(random);
  const fallbackText = Buffer.alloc(BLOCK);
  textBlock(fallbackText, 1);
  const texts = blocksOf(image, kinds, 'text', 8);
  if (texts.length === 0) texts.push(fallbackText);
  const packedTexts = texts.map((t) => zstdCompressSync(t, zstd1(t.length)));
  let next = 0;
  const eachText = <T>(fn: (i: number) => T) => fn(next++ % texts.length);
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const encrypt = (b: Buffer) => {
    const c = createCipheriv('aes-256-gcm', key, iv);
    const out = c.update(b);
    c.final();
    return { out, tag: c.getAuthTag() };
  };
  const { out: cipherText, tag } = encrypt(random);
  const sample = Buffer.concat([0, 1, 2, 3].map((i) => random.subarray(i * (BLOCK / 4), i * (BLOCK / 4) + 16 * 1024)));
  const zeros = Buffer.alloc(BLOCK);
  const zeroBlock = Buffer.alloc(BLOCK);
  const target = Buffer.allocUnsafe(BLOCK);
  return {
    hmacSha256: rateOf(BLOCK, () => createHmac('sha256', key).update(random).digest()),
    sha256: rateOf(BLOCK, () => createHash('sha256').update(random).digest()),
    aesGcmEncrypt: rateOf(BLOCK, () => encrypt(random)),
    aesGcmDecrypt: rateOf(BLOCK, () => {
      const d = createDecipheriv('aes-256-gcm', key, iv);
      d.setAuthTag(tag);
      d.update(cipherText);
      d.final();
    }),
    zstdCompressText: rateOf(BLOCK, () => eachText((i) => zstdCompressSync(texts[i]!, zstd1(BLOCK)))),
    zstdCompressSample: rateOf(sample.length, () => zstdCompressSync(sample, zstd1(sample.length))),
    zstdDecompressText: rateOf(BLOCK, () => eachText((i) => zstdDecompressSync(packedTexts[i]!, { chunkSize: BLOCK }))),
    memcpy: rateOf(BLOCK, () => random.copy(target)),
    pageCacheRead: pageCacheReadRate(image, target),
    newFileWrite: newFileWriteRate(dirname(image), random),
    zeroCheck: rateOf(BLOCK, () => zeroBlock.equals(zeros)),
    textRatio: texts.reduce((n, t) => n + t.length, 0) / packedTexts.reduce((n, p) => n + p.length, 0),
  };
}

/**
 * MiB/s of reading `image` (in the page cache: just generated, and read by every tool since) in
 * 4 MiB preads into `into`. The kernel's copy out of the page cache runs at a fraction of a
 * memcpy between buffers in the CPU's cache (here 3-4 against 8-9 GB/s), and every tool pays it.
 */
function pageCacheReadRate(image: string, into: Buffer): number {
  const fd = openSync(image, 'r');
  try {
    const blocks = Math.max(1, Math.floor(fstatSync(fd).size / BLOCK));
    let next = 0;
    return rateOf(BLOCK, () => {
      readSync(fd, into, 0, BLOCK, (next++ % blocks) * BLOCK);
    });
  } finally {
    closeSync(fd);
  }
}

/**
 * MiB/s of writing `block` into new files beside the image, one 4 MiB write each, through the
 * page cache and without fsync: the kernel allocates and fills pages and the filesystem its
 * delayed extents, which every tool that stores its objects as files pays. Each file is removed
 * (in the timing) once 8 newer ones exist, so the pages are reused: memory the kernel of a VM
 * touches for the first time costs several times more (720 against 3400-3800 MiB/s here), and the
 * bound is what the machine does at its best.
 */
function newFileWriteRate(directory: string, block: Buffer): number {
  const written: string[] = [];
  try {
    return rateOf(BLOCK, () => {
      const path = join(directory, `.new-file-write-probe-${written.length}`);
      written.push(path);
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, block, 0, BLOCK, 0);
      } finally {
        closeSync(fd);
      }
      if (written.length > 8) rmSync(written[written.length - 9]!, { force: true });
    });
  } finally {
    for (const path of written.slice(-9)) rmSync(path, { force: true });
  }
}

/**
 * Each primitive's faster rate of two measurements. The host's speed drifts (AES-GCM measured
 * 348 and 1956 MiB/s in two runs an hour apart), and a bound from a slow moment is too easy to
 * beat: the bound is what the machine does at its best.
 */
export function fasterOf(a: Primitives, b: Primitives): Primitives {
  return Object.fromEntries(
    Object.keys(a).map((k) => [k, k === 'textRatio' ? a.textRatio : Math.max(a[k as keyof Primitives], b[k as keyof Primitives])]),
  ) as unknown as Primitives;
}

/**
 * MiB/s at which `directory`'s disk takes new data for good: `mib` MiB of random bytes written in
 * 4 MiB blocks to a new file, then fdatasync, as a restore writes its target (the faster of two).
 */
export function diskFlushRate(directory: string, mib = 256): number {
  const block = Buffer.alloc(BLOCK);
  randomFillSync(block);
  const path = join(directory, '.disk-flush-probe');
  const rates = [0, 1].map(() => {
    const fd = openSync(path, 'w');
    const started = process.hrtime.bigint();
    try {
      for (let at = 0; at < mib * MiB; at += BLOCK) writeSync(fd, block, 0, BLOCK, at);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    rmSync(path, { force: true });
    return mib / seconds;
  });
  return Math.max(...rates);
}

export interface Bound {
  cores: number;
  /** CPU seconds of primitives per step, and the wall seconds on all cores. */
  cpuSeconds: Record<'backup' | 'rebackup' | 'restore' | 'scrub', number>;
  seconds: Record<'backup' | 'rebackup' | 'restore' | 'scrub', number>;
}

/**
 * The work per block, at the measured rates (seconds per MiB = 1 / rate):
 * - backup: read (from the page cache: pageCacheRead) and zero check of every block; for each
 *   data block the keyed hash and the compressibility sample; text blocks are compressed; the
 *   stored object is encrypted, checksummed (SHA-256) and written into a new file (newFileWrite);
 * - re-backup: read, zero check, keyed hash (the block is known: nothing else);
 * - restore: read the stored object (from the page cache), decrypt, decompress (text), keyed
 *   hash, write the plaintext (a memcpy; with O_DIRECT it costs less);
 * - scrub: restore without the write.
 */
export function computeBound(p: Primitives, counts: Record<BlockKind, number>, cores = availableParallelism()): Bound {
  const B = BLOCK / MiB;
  const T = B / p.textRatio;
  const sampleMiB = (64 * 1024) / MiB;
  const all = counts.zero + counts.random + counts.text;
  const data = counts.random + counts.text;
  const read = (mib: number) => mib / p.pageCacheRead;
  const copy = (mib: number) => mib / p.memcpy;
  const store = (mib: number) => mib / p.newFileWrite;
  const backup =
    all * (read(B) + B / p.zeroCheck) +
    data * (B / p.hmacSha256 + sampleMiB / p.zstdCompressSample) +
    counts.text * (B / p.zstdCompressText + T / p.aesGcmEncrypt + T / p.sha256 + store(T)) +
    counts.random * (B / p.aesGcmEncrypt + B / p.sha256 + store(B));
  const rebackup = all * (read(B) + B / p.zeroCheck) + data * (B / p.hmacSha256);
  const scrub =
    counts.random * (read(B) + B / p.aesGcmDecrypt + B / p.hmacSha256) +
    counts.text * (read(T) + T / p.aesGcmDecrypt + B / p.zstdDecompressText + B / p.hmacSha256);
  const restore = scrub + data * copy(B);
  const cpuSeconds = { backup, rebackup, restore, scrub };
  const seconds = Object.fromEntries(Object.entries(cpuSeconds).map(([k, v]) => [k, v / cores])) as Bound['seconds'];
  return { cores, cpuSeconds, seconds };
}
