import { mkdtempSync, readFileSync, rmSync, writeFileSync, type Dirent } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedBackend } from '../../../agent/backend/embedded.ts';
import { runBackup, type BackupRequest } from '../../../agent/pipeline/backup.ts';
import { runRestore } from '../../../agent/pipeline/restore.ts';
import { Log } from '../../../agent/ui/log.ts';
import { SqliteMetadataStore } from '../../../shared/adapters/local/sqlite-store.ts';
import { parseConfig } from '../../../shared/config/config.ts';

/** A real embedded repository (SQLite event store + block directory) in a temporary directory. */
export interface TestRepo {
  dir: string;
  dataPath: string;
  sqlitePath: string;
  store: SqliteMetadataStore;
  backend: EmbeddedBackend;
  log: Log;
  /** Writes an image file under the repo's temp dir and returns its path. */
  image(name: string, data: Buffer): string;
  backup(data: Buffer, name: string, extra?: Partial<BackupRequest>): Promise<string>;
  /** Restores `uid` and returns the bytes. */
  restore(uid: string): Promise<Buffer>;
  /** Object keys under blocks/ in the data directory. */
  storedBlocks(): Promise<string[]>;
  close(): void;
}

export const MASTER_KEY = Buffer.from('5ca1ab1e'.repeat(8), 'hex');
export const quietLog = () => new Log('error');

export function makeRepo(opts: { blockSize?: number; graceSeconds?: number; minAgeDaysForRm?: number; maxBackupAgeSeconds?: number } = {}): TestRepo {
  const dir = mkdtempSync(join(tmpdir(), 'backy2-unit-'));
  const sqlitePath = join(dir, 'backy.sqlite');
  const dataPath = join(dir, 'data');
  const config = parseConfig(
    [
      '[DEFAULTS]',
      `block_size: ${opts.blockSize ?? 4096}`,
      `disallow_rm_when_younger_than_days: ${opts.minAgeDaysForRm ?? 0}`,
      `cleanup_grace_seconds: ${opts.graceSeconds ?? 3600}`,
      `max_backup_age_seconds: ${opts.maxBackupAgeSeconds ?? 86400}`,
      'simultaneous_reads: 3',
      'simultaneous_writes: 3',
      '[MetaBackend]',
      `engine: sqlite:///${sqlitePath}`,
      '[DataBackend]',
      'type: file',
      `path: ${dataPath}`,
    ].join('\n'),
    'test',
  );
  const store = SqliteMetadataStore.init(sqlitePath);
  const backend = new EmbeddedBackend(config, { sqlitePath, dataPath }, store, MASTER_KEY);
  const log = quietLog();
  let n = 0;
  const repo: TestRepo = {
    dir,
    dataPath,
    sqlitePath,
    store,
    backend,
    log,
    image(name, data) {
      const path = join(dir, name);
      writeFileSync(path, data);
      return path;
    },
    async backup(data, name, extra = {}) {
      const path = repo.image(`src-${n++}.img`, data);
      const { version } = await runBackup(
        backend,
        { sourceUrl: `file://${path}`, name, snapshotName: '', tags: [], expire: null, baseUid: null, ...extra },
        log,
        false,
      );
      rmSync(path);
      return version.uid;
    },
    async restore(uid) {
      const path = join(dir, `restore-${n++}.img`);
      await runRestore(backend, { uid, targetUrl: `file://${path}`, sparse: false, force: false, continueFrom: null }, log, false);
      const data = readFileSync(path);
      rmSync(path);
      return data;
    },
    storedBlocks: () => listFiles(join(dataPath, 'blocks')),
    close() {
      void backend.codec.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return repo;
}

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(e.name);
    }
  };
  await walk(root);
  return out.sort();
}

/** An image of `blocks` blocks of `blockSize` bytes, each block filled from a pattern number (0 = zeros). */
export function patternImage(patterns: number[], blockSize = 4096, tail = 0): Buffer {
  const blocks = patterns.map((p) => patternBlock(p, blockSize));
  if (tail) blocks.push(patternBlock(patterns[0] ?? 1, blockSize).subarray(0, tail));
  return Buffer.concat(blocks);
}

export function patternBlock(p: number, blockSize = 4096): Buffer {
  const b = Buffer.alloc(blockSize);
  if (p === 0) return b;
  // Deterministic, distinct per pattern, partly compressible.
  let x = (p * 2654435761) >>> 0;
  for (let i = 0; i < blockSize; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(i % 64 < 32 ? x : p, i);
  }
  return b;
}

/** Table contents, sorted, for comparing projections. */
export function dumpTables(store: SqliteMetadataStore, tables: string[]): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const t of tables) {
    const rows = store.db.prepare(`SELECT * FROM ${t}`).all() as Record<string, unknown>[];
    out[t] = rows
      .map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v]))))
      .sort();
  }
  return out;
}
