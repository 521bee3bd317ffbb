/**
 * npm run bench: times backup, unchanged re-backup and restore of a generated image against the
 * embedded store (SQLite + block directory) in a temporary directory, each as a child process
 * whose wall time, peak RSS and stored bytes are measured; and, when they are installed, the same
 * three steps with restic and borg on the same image, in the same run, with ratios ours/peer.
 *
 *   BENCH_SIZE_MIB   image size in MiB (default 1024): a quarter zeros, a quarter random,
 *                    half text-like data that zstd level 1 compresses about 3.5x
 *   BENCH_PEERS=0    skip restic and borg
 *   BENCH_DIR        where the temporary directory goes (default: the OS temp dir)
 *   BENCH_KEEP=1     keep the temporary directory
 *   BENCH_JSON=FILE  also write the results as JSON
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'agent/cli/main.ts');
const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;

const sizeMiB = Number(process.env['BENCH_SIZE_MIB'] ?? 1024);
if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new Error(`BENCH_SIZE_MIB must be a positive integer, got ${process.env['BENCH_SIZE_MIB']}`);
const withPeers = process.env['BENCH_PEERS'] !== '0';
const keep = process.env['BENCH_KEEP'] === '1';
const dir = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'backy2-bench-'));
const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

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

function textBlock(b: Buffer, seed: number): void {
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

/** Blocks cycle zero, random, text, text: a quarter zeros, a quarter random, half compressible; every block distinct. */
function writeImage(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(BLOCK);
  try {
    for (let i = 0, at = 0; at < bytes; i++, at += BLOCK) {
      const len = Math.min(BLOCK, bytes - at);
      const b = buf.subarray(0, len);
      if (i % 4 === 0) b.fill(0);
      else if (i % 4 === 1) randomFillSync(b);
      else textBlock(b, i * 7919 + 1);
      writeSync(fd, b, 0, len, at);
    }
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Measuring a child process

interface Measured {
  seconds: number;
  peakRssMiB: number | null;
  stdout: string;
}

const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Measured> {
  const timeFile = join(dir, `.time-${process.hrtime.bigint()}`);
  const [file, argv] = timeBin ? [timeBin, ['-f', '%M', '-o', timeFile, cmd, ...args]] : [cmd, args];
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
      if (timeBin) {
        const text = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!;
        rmSync(timeFile, { force: true });
        peakKiB = Number(text) || null;
      }
      resolvePromise({ seconds, peakRssMiB: peakKiB === null ? null : peakKiB / 1024, stdout });
    });
  });
}

function bytesUnder(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, name) => sum + bytesUnder(join(path, name)), 0);
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: BLOCK })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function findFile(root: string, name: string): string {
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

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const versionOf = (bin: string, arg: string) => spawnSync(bin, [arg], { encoding: 'utf8' }).stdout.trim().split('\n')[0] ?? bin;

// ---------------------------------------------------------------------------------------------
// The tools

interface Row {
  tool: string;
  step: 'backup' | 're-backup' | 'restore';
  seconds: number;
  mibPerSecond: number;
  peakRssMiB: number | null;
  storedBytes: number | null;
}

interface Tool {
  name: string;
  version: string;
  init(): Promise<void>;
  backup(): Promise<Measured>;
  rebackup(): Promise<Measured>;
  /** Restores the second backup; returns the restored file's path. */
  restore(): Promise<{ measured: Measured; path: string }>;
  repo: string;
}

function ours(image: string): Tool {
  const repo = join(dir, 'ours');
  const config = join(dir, 'backy.cfg');
  const env = { BACKY2_HOME: join(repo, 'home') };
  const cli = (...args: string[]) => run(process.execPath, [CLI, '-c', config, ...args], { env });
  let first = '';
  let second = '';
  return {
    name: 'backy2 (ours)',
    version: `node ${process.version}`,
    repo,
    async init() {
      mkdirSync(repo, { recursive: true });
      writeFileSync(
        config,
        [
          '[DEFAULTS]',
          `encryption_key: ${'b'.repeat(64)}`,
          ...(process.env['BENCH_READS'] ? [`simultaneous_reads: ${process.env['BENCH_READS']}`] : []),
          ...(process.env['BENCH_WRITES'] ? [`simultaneous_writes: ${process.env['BENCH_WRITES']}`] : []),
          '[MetaBackend]',
          `engine: sqlite:///${join(repo, 'backy.sqlite')}`,
          '[DataBackend]',
          'type: file',
          `path: ${join(repo, 'data')}`,
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      await cli('initdb');
    },
    async backup() {
      const m = await cli('-m', 'backup', `file://${image}`, 'bench');
      first = m.stdout.trim().split('\n').pop()!;
      return m;
    },
    async rebackup() {
      const m = await cli('-m', 'backup', '-f', first, `file://${image}`, 'bench');
      second = m.stdout.trim().split('\n').pop()!;
      return m;
    },
    async restore() {
      const path = join(dir, 'restored-ours.img');
      return { measured: await cli('restore', second, `file://${path}`), path };
    },
  };
}

function restic(image: string): Tool {
  const repo = join(dir, 'restic');
  const env = { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: 'bench', XDG_CACHE_HOME: join(dir, 'restic-cache') };
  const r = (...args: string[]) => run('restic', args, { env });
  return {
    name: 'restic',
    version: versionOf('restic', 'version'),
    repo,
    async init() {
      await r('init', '-q');
    },
    backup: () => r('backup', '-q', image),
    // --force re-reads the unchanged file (as a block device is always re-read), instead of trusting mtime.
    rebackup: () => r('backup', '-q', '--force', image),
    async restore() {
      const target = join(dir, 'restored-restic');
      const measured = await r('restore', '-q', 'latest', '--target', target);
      return { measured, path: findFile(target, 'image.img') };
    },
  };
}

function borg(image: string): Tool {
  const repo = join(dir, 'borg');
  const env = { BORG_REPO: repo, BORG_PASSPHRASE: 'bench', BORG_BASE_DIR: join(dir, 'borg-base'), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' };
  const b = (args: string[], cwd = dir) => run('borg', args, { env, cwd });
  return {
    name: 'borg',
    version: versionOf('borg', '--version'),
    repo,
    async init() {
      await b(['init', '--encryption=repokey-blake2']);
    },
    backup: () => b(['create', '--compression', 'zstd,1', '::first', 'image.img']),
    // The files cache would skip the unchanged file without reading it; a block device is always read.
    rebackup: () => b(['create', '--compression', 'zstd,1', '--files-cache=disabled', '::second', 'image.img']),
    async restore() {
      const target = join(dir, 'restored-borg');
      mkdirSync(target, { recursive: true });
      return { measured: await b(['extract', '::second'], target), path: join(target, 'image.img') };
    },
  };
}

async function bench(tool: Tool, image: string, imageBytes: number, imageHash: string): Promise<Row[]> {
  log(`${tool.name}: init`);
  await tool.init();
  const rows: Row[] = [];
  const row = (step: Row['step'], m: Measured, storedBytes: number | null): Row => ({
    tool: tool.name,
    step,
    seconds: m.seconds,
    mibPerSecond: imageBytes / MiB / m.seconds,
    peakRssMiB: m.peakRssMiB,
    storedBytes,
  });
  log(`${tool.name}: backup`);
  rows.push(row('backup', await tool.backup(), bytesUnder(tool.repo)));
  log(`${tool.name}: re-backup`);
  rows.push(row('re-backup', await tool.rebackup(), bytesUnder(tool.repo)));
  log(`${tool.name}: restore`);
  const { measured, path } = await tool.restore();
  rows.push(row('restore', measured, null));
  const restored = await sha256(path);
  if (restored !== imageHash) throw new Error(`${tool.name}: the restored image differs from the original`);
  rmSync(path, { force: true });
  return rows;
}

// ---------------------------------------------------------------------------------------------

function table(rows: Row[]): string {
  const head = ['tool', 'step', 'seconds', 'MiB/s', 'peak RSS MiB', 'repository MiB'];
  const body = rows.map((r) => [
    r.tool,
    r.step,
    r.seconds.toFixed(2),
    r.mibPerSecond.toFixed(1),
    r.peakRssMiB === null ? '?' : r.peakRssMiB.toFixed(0),
    r.storedBytes === null ? '' : (r.storedBytes / MiB).toFixed(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  return [line(head), '|' + widths.map((w, i) => (i < 2 ? '-'.repeat(w + 1) + '-' : '-'.repeat(w + 1) + ':')).join('|') + '|', ...body.map(line)].join('\n');
}

function ratios(rows: Row[], peer: string): string {
  const lines: string[] = [];
  for (const step of ['backup', 're-backup', 'restore'] as const) {
    const a = rows.find((r) => r.tool === 'backy2 (ours)' && r.step === step);
    const b = rows.find((r) => r.tool === peer && r.step === step);
    if (!a || !b) continue;
    const rss = a.peakRssMiB !== null && b.peakRssMiB !== null ? (a.peakRssMiB / b.peakRssMiB).toFixed(2) : '?';
    const stored = a.storedBytes !== null && b.storedBytes ? (a.storedBytes / b.storedBytes).toFixed(2) : '';
    lines.push(`| ${peer} | ${step} | ${(a.mibPerSecond / b.mibPerSecond).toFixed(2)} | ${rss} | ${stored} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const image = join(dir, 'image.img');
  const imageBytes = sizeMiB * MiB;
  log(`generating a ${sizeMiB} MiB image in ${dir}`);
  const genStart = Date.now();
  writeImage(image, imageBytes);
  const imageHash = await sha256(image);
  log(`image ready in ${((Date.now() - genStart) / 1000).toFixed(1)} s`);

  const tools: Tool[] = [ours(image)];
  const skipped: string[] = [];
  if (withPeers) {
    if (has('restic')) tools.push(restic(image));
    else skipped.push('restic (not installed)');
    if (has('borg')) tools.push(borg(image));
    else skipped.push('borg (not installed)');
  } else skipped.push('restic and borg (BENCH_PEERS=0)');

  const rows: Row[] = [];
  for (const tool of tools) rows.push(...(await bench(tool, image, imageBytes, imageHash)));

  const cpu = cpus();
  const header = [
    `backy2 bench, ${new Date().toISOString().slice(0, 10)}: ${sizeMiB} MiB image (1/4 zeros, 1/4 random, 1/2 text-like ~3.5x under zstd -1), block size 4 MiB`,
    `machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; ${tools.map((t) => `${t.name}: ${t.version}`).join('; ')}`,
    `peak RSS: ${timeBin ? '/usr/bin/time %M' : '/proc/PID/status VmHWM, polled'}; repository MiB: bytes of all files in the repository after the step`,
    ...(skipped.length ? [`skipped: ${skipped.join(', ')}`] : []),
  ];
  const out = [...header, '', table(rows)];
  const peers = tools.filter((t) => t.name !== 'backy2 (ours)').map((t) => t.name);
  if (peers.length) {
    out.push('', 'ratios ours/peer (throughput > 1: we are faster; RSS and repository < 1: we use less)', '', '| peer | step | throughput | peak RSS | repository |', '|---|---|---:|---:|---:|');
    for (const p of peers) out.push(ratios(rows, p));
  }
  process.stdout.write(out.join('\n') + '\n');
  if (process.env['BENCH_JSON']) writeFileSync(process.env['BENCH_JSON'], JSON.stringify({ sizeMiB, header, rows }, null, 2));
}

try {
  await main();
} finally {
  if (keep) log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
