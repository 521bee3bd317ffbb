/**
 * Helpers for the end-to-end CLI tests: run the real `backy2` binary as a child process in a
 * sandbox of its own (temp cwd, temp $HOME and $BACKY2_HOME), make test images and configs,
 * and look at what ends up in the repository's data directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { readBlockMap } from '../../shared/app/block-map.ts';

export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
/** The pinned Node 24 (package.json), as `npx backy2` uses it. */
export const NODE = join(REPO_ROOT, 'node_modules/.bin/node');
/** The `bin` entry of package.json: what `npx backy2` runs. */
export const BIN = join(REPO_ROOT, 'agent/bin/backy2.js');

export const MiB = 1024 * 1024;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout and stderr together (for messages that may go to either). */
  output: string;
}

export interface RunOptions {
  cwd: string;
  env: Record<string, string>;
  timeoutMs?: number;
}

/** A running CLI process: its result, and a way to wait for something on its stderr. */
export interface RunningCli {
  child: ChildProcess;
  result: Promise<CliResult>;
  /** Resolves when stderr (so far) matches `re`; rejects if the process ends first. */
  waitForStderr(re: RegExp, timeoutMs?: number): Promise<void>;
  stderrSoFar(): string;
}

/** Environment of a child: the parent's minus anything that could point it at another repository or cloud. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(BACKY2_|AWS_)/.test(k)) continue;
    env[k] = v;
  }
  // Node's compile cache keeps the type-stripped, compiled CLI between runs: each run starts in
  // about half the time, and the suite runs the CLI a few hundred times.
  return { NODE_COMPILE_CACHE: join(tmpdir(), 'backy2-test-compile-cache'), ...env, NO_COLOR: '1', ...extra };
}

export function startCli(args: string[], opts: RunOptions): RunningCli {
  const child = spawn(NODE, [BIN, ...args], { cwd: opts.cwd, env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    for (const l of listeners) l();
  });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const result = new Promise<CliResult>((resolveResult, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`backy2 ${args.join(' ')} did not finish within ${timeoutMs} ms\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      for (const l of listeners) l();
      resolveResult({ code: code ?? (signal ? 128 : -1), stdout, stderr, output: stdout + stderr });
    });
  });
  const waitForStderr = (re: RegExp, waitMs = 60_000) =>
    new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => done(new Error(`timed out waiting for ${re} on stderr of backy2 ${args.join(' ')}; got:\n${stderr}`)), waitMs);
      const check = () => {
        if (re.test(stderr)) done();
        else if (child.exitCode !== null || child.signalCode !== null)
          done(new Error(`backy2 ${args.join(' ')} ended before ${re} appeared; stderr:\n${stderr}`));
      };
      const done = (err?: Error) => {
        clearTimeout(timer);
        listeners.delete(check);
        if (err) fail(err);
        else ok();
      };
      listeners.add(check);
      check();
    });
  return { child, result, waitForStderr, stderrSoFar: () => stderr };
}

export function runCli(args: string[], opts: RunOptions): Promise<CliResult> {
  return startCli(args, opts).result;
}

/** A scratch directory per test: cwd, $HOME and $BACKY2_HOME of every CLI run in it. */
export class Sandbox {
  readonly dir: string;
  /** $BACKY2_HOME: where the embedded default repository lives. */
  readonly home: string;

  constructor(prefix = 'backy2-cli-') {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
    this.home = join(this.dir, 'backy2-home');
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  env(): Record<string, string> {
    return { HOME: this.dir, BACKY2_HOME: this.home };
  }

  /** Runs `backy2 ARGS` with cwd = the sandbox and no config (unless ARGS has -c). */
  run(...args: string[]): Promise<CliResult> {
    return runCli(args, { cwd: this.dir, env: this.env() });
  }

  start(...args: string[]): RunningCli {
    return startCli(args, { cwd: this.dir, env: this.env() });
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface ConfigOptions {
  blockSize?: number;
  /** 64 hex chars; random if omitted. */
  key?: string;
  minAgeDays?: number;
  simultaneousReads?: number;
  simultaneousWrites?: number;
  cleanupGraceSeconds?: number;
  /** Extra raw lines appended to [DEFAULTS]. */
  extraDefaults?: string[];
}

export const randomKey = () => randomBytes(32).toString('hex');

/** A backy2-style INI config for a repository under `dir`. */
export function configText(dir: string, o: ConfigOptions = {}): string {
  const lines = [
    '# backy2 test config',
    '[DEFAULTS]',
    `block_size: ${o.blockSize ?? MiB}`,
    `encryption_key: ${o.key ?? randomKey()}`,
    `disallow_rm_when_younger_than_days: ${o.minAgeDays ?? 6}`,
    `simultaneous_reads: ${o.simultaneousReads ?? 4}`,
    `simultaneous_writes: ${o.simultaneousWrites ?? 4}`,
    ...(o.cleanupGraceSeconds !== undefined ? [`cleanup_grace_seconds: ${o.cleanupGraceSeconds}`] : []),
    ...(o.extraDefaults ?? []),
    '',
    '[MetaBackend]',
    `engine: sqlite:///${join(dir, 'backy.sqlite')}`,
    '',
    '[DataBackend]',
    'type: file',
    `path: ${join(dir, 'data')}`,
    '',
  ];
  return lines.join('\n');
}

/** A repository configured by a file (`-c`), in a sandbox of its own. */
export class Repo extends Sandbox {
  readonly repoDir: string;
  readonly configPath: string;
  readonly key: string;
  readonly blockSize: number;

  constructor(o: ConfigOptions = {}) {
    super('backy2-repo-');
    this.repoDir = this.path('repo');
    mkdirSync(this.repoDir);
    this.key = o.key ?? randomKey();
    this.blockSize = o.blockSize ?? MiB;
    this.configPath = this.path('backy.test.cfg');
    writeFileSync(this.configPath, configText(this.repoDir, { ...o, key: this.key }));
  }

  /** A new repository, initialised with `backy2 initdb`. */
  static async create(o: ConfigOptions = {}): Promise<Repo> {
    const repo = new Repo(o);
    const r = await repo.cli('initdb');
    if (r.code !== 0) throw new Error(`initdb failed (${r.code}): ${r.output}`);
    return repo;
  }

  get dataDir(): string {
    return join(this.repoDir, 'data');
  }

  get sqlitePath(): string {
    return join(this.repoDir, 'backy.sqlite');
  }

  /** Another config file for the same repository (e.g. with a different key or grace period). */
  writeConfig(name: string, o: ConfigOptions): string {
    const p = this.path(name);
    writeFileSync(p, configText(this.repoDir, { blockSize: this.blockSize, key: this.key, ...o }));
    return p;
  }

  /** `backy2 [GLOBALS] -c CONFIG SUBCOMMAND …`: global flags before the subcommand, as backy2. */
  cli(...args: string[]): Promise<CliResult> {
    return this.run('-c', this.configPath, ...args);
  }

  /** Same with global flags (e.g. ['-m']) before the subcommand. */
  cliG(globals: string[], ...args: string[]): Promise<CliResult> {
    return this.run(...globals, '-c', this.configPath, ...args);
  }

  startCli(...args: string[]): RunningCli {
    return this.start('-c', this.configPath, ...args);
  }

  /** Backs up and returns the new version's uid (from `-m`: the last stdout line). */
  async backup(source: string, name: string, ...extra: string[]): Promise<string> {
    const r = await this.cliG(['-m'], 'backup', source.startsWith('file://') ? source : `file://${source}`, name, ...extra);
    if (r.code !== 0) throw new Error(`backup ${source} ${name} failed (${r.code}): ${r.output}`);
    return lastLine(r.stdout);
  }

  async ls(...args: string[]): Promise<LsRow[]> {
    const r = await this.cliG(['--json'], 'ls', ...args);
    if (r.code !== 0) throw new Error(`ls failed (${r.code}): ${r.output}`);
    return JSON.parse(r.stdout) as LsRow[];
  }

  async version(uid: string): Promise<LsRow | undefined> {
    return (await this.ls()).find((v) => v.uid === uid);
  }

  /** Relative paths of every stored block file under data/blocks. */
  blockFiles(): string[] {
    return listFiles(join(this.dataDir, 'blocks')).map((p) => relative(this.dataDir, p));
  }

  /** Path of the stored object of the block with this id. */
  blockPath(id: string): string {
    return join(this.dataDir, 'blocks', id.slice(0, 2), id.slice(2, 4), id);
  }

  /** Block ids of a version, in block order (null = sparse), read through the metadata store. */
  async blockIdsOf(uid: string): Promise<(string | null)[]> {
    const store = SqliteMetadataStore.open(this.sqlitePath);
    try {
      const version = await store.getVersion(uid);
      if (!version) throw new Error(`no version ${uid}`);
      const ids: (string | null)[] = [];
      for await (const entries of readBlockMap(store, version)) ids.push(...entries.map((e) => e.id));
      return ids;
    } finally {
      store.close();
    }
  }
}

export interface LsRow {
  date: string;
  name: string;
  snapshot_name: string;
  size: number;
  size_bytes: number;
  uid: string;
  valid: number;
  protected: number;
  tags: string;
  expire: string;
}

/** `valid`/`protected` of `ls --json`: exactly the numbers 0 or 1 (anything else fails the test). */
export function flag(x: unknown): 0 | 1 {
  if (x !== 0 && x !== 1) throw new Error(`expected 0 or 1 in ls --json, got ${JSON.stringify(x)}`);
  return x;
}

export const lastLine = (text: string) => text.trimEnd().split('\n').at(-1)!.trim();

export function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(full));
    else out.push(full);
  }
  return out.sort();
}

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
export const fileSha = (path: string) => sha256(readFileSync(path));

/**
 * What a block of a test image holds:
 *  'zero'   all zeros (sparse),
 *  'random' fresh random bytes (unique),
 *  number   deterministic pseudo-random content for that seed (same seed ⇒ same block, so it dedups),
 *  'text'   compressible but not zero.
 */
export type BlockSpec = 'zero' | 'random' | 'text' | number;

export function blockData(spec: BlockSpec, size: number): Buffer {
  if (spec === 'zero') return Buffer.alloc(size);
  if (spec === 'random') return randomBytes(size);
  if (spec === 'text') return Buffer.from('backy2 compressible test block. '.repeat(Math.ceil(size / 32)).slice(0, size));
  return seeded(spec, size);
}

/** Deterministic incompressible bytes: SHA-256 in counter mode over the seed. */
export function seeded(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += 32, i++) createHash('sha256').update(`seed:${seed}:${i}`).digest().copy(out, off);
  return out;
}

/** Writes an image made of `blocks` (each `blockSize` long) plus an optional short tail block. */
export function makeImage(path: string, blocks: BlockSpec[], blockSize: number, tail?: { spec: BlockSpec; bytes: number }): Buffer {
  const parts = blocks.map((b) => blockData(b, blockSize));
  if (tail) parts.push(blockData(tail.spec, tail.bytes));
  const data = Buffer.concat(parts);
  writeFileSync(path, data);
  return data;
}

/** Copies `data` over the file's bytes at block `idx`. */
export function overwriteBlock(path: string, idx: number, blockSize: number, data: Buffer): void {
  const buf = readFileSync(path);
  data.copy(buf, idx * blockSize);
  writeFileSync(path, buf);
}

export const sizeOf = (path: string) => statSync(path).size;

/**
 * Stops a running CLI (SIGSTOP) at a moment when it holds no SQLite write transaction, so other
 * processes can use the repository while it is frozen. Resume with `resume`.
 */
export async function pauseOutsideTransaction(child: ChildProcess, sqlitePath: string): Promise<void> {
  for (let attempt = 0; attempt < 500; attempt++) {
    child.kill('SIGSTOP');
    await sleep(20);
    const db = new DatabaseSync(sqlitePath, { timeout: 0 });
    try {
      db.exec('BEGIN IMMEDIATE');
      db.exec('ROLLBACK');
      return;
    } catch {
      child.kill('SIGCONT');
      await sleep(5);
    } finally {
      db.close();
    }
  }
  throw new Error('could not pause the CLI outside a write transaction');
}

export function resume(child: ChildProcess): void {
  child.kill('SIGCONT');
}

/** Parses backy2's human table (`| a | b |` lines) into rows of trimmed cells. */
export function parseTable(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

/** beforeAll hooks that run the CLI several times need more than vitest's default 10 s on a busy machine. */
export const HOOK_TIMEOUT = 120_000;
