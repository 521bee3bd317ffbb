/**
 * What the bench steps share: the temporary directory, the image generator, running a child
 * process and measuring its wall time and peak RSS, and printing tables and medians.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { zstdCompressSync } from 'node:zlib';
import { compressionSample, sampleSaysCompress, zstdOptions } from '../../shared/blocks/codec-sync.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** What users run (`npx backy2`): the launcher, with Node's compile cache. */
export const BIN = join(ROOT, 'agent/bin/backy2.js');
export const MiB = 1024 * 1024;
export const BLOCK = 4 * MiB;

export const dir = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'backy2-bench-'));
export const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

// ---------------------------------------------------------------------------------------------
// The image

const WORDS = (
  'the of and to in is that for it as with was on be by at this from or an are which not but have had has were all their can more one ' +
  'new also its into some other time only may these than after first most about such over any through where when many would people out ' +
  'make well used like three between system data file user server request error value return state block version backup disk image page ' +
  'table index memory update read write start stop check kernel module driver network socket client session cache buffer thread process ' +
  'signal mount device volume snapshot archive restore scrub cleanup config option default level debug info warning message status result ' +
  'count total size offset length'
).split(' ');
const HEX = Buffer.from('0123456789abcdef');

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/** 1024 "log line" templates; each line is a template plus two random hex fields (zstd -1: ~3.5x). */
const TEMPLATES = (() => {
  const r = xorshift(42);
  return Array.from({ length: 1024 }, () => Buffer.from(Array.from({ length: 4 + (r() % 10) }, () => WORDS[r() % WORDS.length]).join(' ') + ' ', 'latin1'));
})();

export function textBlock(b: Buffer, seed: number): void {
  const r = xorshift(seed);
  let p = 0;
  while (p < b.length) {
    p += TEMPLATES[r() % TEMPLATES.length]!.copy(b, p);
    for (let f = 0; f < 2 && p < b.length; f++) {
      const y = r();
      for (let i = 0; i < 6 && p < b.length; i++) b[p++] = HEX[(y >>> (i * 4)) & 15]!;
      if (p < b.length) b[p++] = 32;
    }
    if (p < b.length) b[p++] = 10;
  }
}

export type BlockKind = 'zero' | 'random' | 'text';
/** Blocks cycle zero, random, text, text: a quarter zeros, a quarter random, half compressible. */
export const kindOf = (i: number): BlockKind => (i % 4 === 0 ? 'zero' : i % 4 === 1 ? 'random' : 'text');

/**
 * Writes the bench image (every block distinct); returns how many blocks of each kind it has.
 * Another `variant` gives other text blocks (random blocks always differ): an image sharing no block.
 */
export function writeImage(path: string, bytes: number, variant = 0): Record<BlockKind, number> {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(BLOCK);
  const counts = { zero: 0, random: 0, text: 0 };
  try {
    for (let i = 0, at = 0; at < bytes; i++, at += BLOCK) {
      const len = Math.min(BLOCK, bytes - at);
      const b = buf.subarray(0, len);
      const kind = kindOf(i);
      counts[kind]++;
      if (kind === 'zero') b.fill(0);
      else if (kind === 'random') randomFillSync(b);
      else textBlock(b, i * 7919 + 1 + variant * 1_000_003);
      writeSync(fd, b, 0, len, at);
    }
  } finally {
    closeSync(fd);
  }
  return counts;
}

/**
 * The kinds of an existing image's blocks (BENCH_IMAGE), judged as the codec judges them: all
 * zeros; "text" when zstd shrinks the block's sample (encodeSync then compresses it); otherwise
 * "random" (stored as it is). The bound is then computed for this image as for the generated one.
 */
export function classifyImage(path: string): { counts: Record<BlockKind, number>; kinds: BlockKind[] } {
  const fd = openSync(path, 'r');
  const counts = { zero: 0, random: 0, text: 0 };
  const kinds: BlockKind[] = [];
  const buf = Buffer.alloc(BLOCK);
  const zeros = Buffer.alloc(BLOCK);
  try {
    for (let at = 0; ; at += BLOCK) {
      const got = readSync(fd, buf, 0, BLOCK, at);
      if (got === 0) break;
      const block = buf.subarray(0, got);
      const sample = compressionSample(block) ?? block;
      const kind: BlockKind = block.equals(zeros.subarray(0, got))
        ? 'zero'
        : sampleSaysCompress(sample, zstdCompressSync(sample, zstdOptions(sample.length)))
          ? 'text'
          : 'random';
      counts[kind]++;
      kinds.push(kind);
    }
  } finally {
    closeSync(fd);
  }
  return { counts, kinds };
}

// ---------------------------------------------------------------------------------------------
// Measuring a child process

export interface Measured {
  seconds: number;
  peakRssMiB: number | null;
  /** User + system CPU seconds of the command and its children (null without /usr/bin/time). */
  cpuSeconds: number | null;
  stdout: string;
  stderr: string;
}

export const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Measured> {
  const timeFile = join(dir, `.time-${process.hrtime.bigint()}`);
  const [file, argv] = timeBin ? [timeBin, ['-f', '%M %U %S', '-o', timeFile, cmd, ...args]] : [cmd, args];
  // Every command starts with the page cache clean: the kernel's writeback of an earlier step's
  // files (a gigabyte from a backup or a restore) would otherwise compete with whichever tool
  // runs next, and on 2 cores that changed a restore's time by up to 40 %.
  spawnSync('sync');
  return new Promise((resolvePromise, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(file, argv, { env: { ...process.env, ...opts.env }, cwd: opts.cwd ?? dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Without /usr/bin/time: poll the kernel's high-water mark of the child's resident set.
    let hwmKiB = 0;
    const poll = timeBin
      ? null
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
            if (m) hwmKiB = Math.max(hwmKiB, Number(m[1]));
          } catch {
            /* exited */
          }
        }, 10);
    child.on('error', reject);
    child.on('close', (code) => {
      if (poll) clearInterval(poll);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${stderr.slice(-2000)}`));
      let peakKiB: number | null = hwmKiB || null;
      let cpuSeconds: number | null = null;
      if (timeBin) {
        const [rss, user, sys] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
        rmSync(timeFile, { force: true });
        peakKiB = rss || null;
        cpuSeconds = Number.isFinite(user! + sys!) ? user! + sys! : null;
      }
      resolvePromise({ seconds, peakRssMiB: peakKiB === null ? null : peakKiB / 1024, cpuSeconds, stdout, stderr });
    });
  });
}

/**
 * Seconds a `sync` takes: run right after a command, what it left for the kernel to write. Our
 * restore syncs its target before it exits; restic and borg leave their writes in the page cache.
 */
export function syncSeconds(): number {
  const started = process.hrtime.bigint();
  spawnSync('sync');
  return Number(process.hrtime.bigint() - started) / 1e9;
}

export function bytesUnder(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, name) => sum + bytesUnder(join(path, name)), 0);
}

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: BLOCK })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function findFile(root: string, name: string): string {
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    const full = join(root, entry.name);
    if (entry.isFile() && entry.name === name) return full;
    if (entry.isDirectory()) {
      try {
        return findFile(full, name);
      } catch {
        /* not here */
      }
    }
  }
  throw new Error(`${name} not found under ${root}`);
}

export const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
export const versionOf = (bin: string, arg: string) => spawnSync(bin, [arg], { encoding: 'utf8' }).stdout.trim().split('\n')[0] ?? bin;

// ---------------------------------------------------------------------------------------------
// Printing

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** "3.21" for one value, "3.21 (2.90-3.55)" for several: the median and the range. */
export function spread(xs: number[], digits = 2): string {
  const m = median(xs).toFixed(digits);
  if (xs.length < 2) return m;
  return `${m} (${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)})`;
}

/** A Markdown table: the first `left` columns left-aligned, the rest right-aligned. */
export function markdownTable(head: string[], body: string[][], left = 2): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i < left ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  return [line(head), '|' + widths.map((w, i) => (i < left ? '-'.repeat(w + 1) + '-' : '-'.repeat(w + 1) + ':')).join('|') + '|', ...body.map(line)].join('\n');
}

/** The machine's load average now (the machine these benches run on is shared). */
export const loadAverage = () => {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
};
