/**
 * The tools the bench compares: ours (embedded store: SQLite + block directory) and, when
 * installed, restic and borg, each with backup, unchanged re-backup and restore of one image.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, dir, findFile, type Measured, run, versionOf } from './harness.ts';

export interface Tool {
  name: string;
  version: string;
  repo: string;
  init(): Promise<void>;
  backup(): Promise<Measured>;
  rebackup(): Promise<Measured>;
  /** Another backup of the (changed) image against the last one, as the tool's users run it. */
  backupAgain(label: string): Promise<Measured>;
  /** Restores the second backup; returns the restored file's path. */
  restore(): Promise<{ measured: Measured; path: string }>;
}

export const OURS = 'backy2 (ours)';

export interface Ours extends Tool {
  /** Runs `backy2 -c CONFIG ARGS` against this repository. */
  cli(...args: string[]): Promise<Measured>;
  /** The uid of the unchanged re-backup (after `rebackup()`). */
  second(): string;
  /** How to start `backy2 -c CONFIG ARGS` as a long-running child (the nbd step's server). */
  command(...args: string[]): { file: string; args: string[]; env: NodeJS.ProcessEnv };
}

/** Our repository under `name`; `extra` lines go to [DEFAULTS] (BENCH_READS/BENCH_WRITES set the pipeline depth). */
export function ours(image: string, name = 'ours', extra: string[] = []): Ours {
  const repo = join(dir, name);
  const config = join(dir, `${name}.cfg`);
  const env = { BACKY2_HOME: join(repo, 'home') };
  const cli = (...args: string[]) => run(process.execPath, [BIN, '-c', config, ...args], { env });
  let first = '';
  let second = '';
  return {
    name: OURS,
    version: `node ${process.version}`,
    repo,
    cli,
    second: () => second,
    command: (...args: string[]) => ({ file: process.execPath, args: [BIN, '-c', config, ...args], env }),
    async init() {
      mkdirSync(repo, { recursive: true });
      writeFileSync(
        config,
        [
          '[DEFAULTS]',
          `encryption_key: ${'b'.repeat(64)}`,
          ...(process.env['BENCH_READS'] ? [`simultaneous_reads: ${process.env['BENCH_READS']}`] : []),
          ...(process.env['BENCH_WRITES'] ? [`simultaneous_writes: ${process.env['BENCH_WRITES']}`] : []),
          ...extra,
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
    backupAgain: () => cli('-m', 'backup', '-f', second, `file://${image}`, 'bench'),
    async restore() {
      const path = join(dir, `restored-${name}.img`);
      return { measured: await cli('restore', second, `file://${path}`), path };
    },
  };
}

export function restic(image: string, name = 'restic'): Tool {
  const repo = join(dir, name);
  const env = { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: 'bench', XDG_CACHE_HOME: join(dir, `${name}-cache`) };
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
    // The changed file's mtime makes restic read it again (content-defined chunks dedup the rest).
    backupAgain: () => r('backup', '-q', image),
    async restore() {
      const target = join(dir, `restored-${name}`);
      const measured = await r('restore', '-q', 'latest', '--target', target);
      return { measured, path: findFile(target, 'image.img') };
    },
  };
}

export function borg(name = 'borg'): Tool {
  const repo = join(dir, name);
  const env = {
    BORG_REPO: repo,
    BORG_PASSPHRASE: 'bench',
    BORG_BASE_DIR: join(dir, `${name}-base`),
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
  };
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
    backupAgain: (label) => b(['create', '--compression', 'zstd,1', `::${label}`, 'image.img']),
    async restore() {
      const target = join(dir, `restored-${name}`);
      mkdirSync(target, { recursive: true });
      return { measured: await b(['extract', '::second'], target), path: join(target, 'image.img') };
    },
  };
}
