/**
 * export UID FILE|- and import FILE|- end to end, embedded: a version exported from one repository
 * is imported into a fresh one (new SQLite database, a copy of the block directory, the same key)
 * and restores bit-exact; every refused import leaves the repository exactly as it was.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BIN, HOOK_TIMEOUT, NODE, Repo, fileSha, makeImage, overwriteBlock, randomKey, type BlockSpec } from '../support/cli.ts';

const BS = 4096;

/** `backy2 -c CONFIG ARGS` with `input` on stdin (the sandbox helpers give the CLI no stdin). */
function cliWithStdin(repo: Repo, input: Buffer | string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(BACKY2_|AWS_)/.test(k)) env[k] = v;
  const r = spawnSync(NODE, [BIN, '-c', repo.configPath, ...args], {
    cwd: repo.dir,
    env: { ...env, ...repo.env(), NO_COLOR: '1' },
    input,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** What must not change when an import is refused: `ls --json`, and the event log's length. */
async function snapshot(repo: Repo): Promise<{ ls: string; events: number; blocks: number }> {
  const ls = await repo.cliG(['--json'], 'ls');
  expect(ls.code, ls.output).toBe(0);
  const db = new DatabaseSync(repo.sqlitePath, { readOnly: true });
  try {
    const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return { ls: ls.stdout, events: count('SELECT COUNT(*) AS n FROM events'), blocks: count('SELECT COUNT(*) AS n FROM blocks') };
  } finally {
    db.close();
  }
}

/**
 * A fresh repository with the same key and block size and a copy of `source`'s block directory
 * (without its journal: a copy with the journal is the same repository, which `recover` rebuilds).
 */
async function copyRepo(source: Repo, key = source.key): Promise<Repo> {
  const target = await Repo.create({ blockSize: BS, key });
  cpSync(source.dataDir, target.dataDir, { recursive: true, force: true, filter: (src) => src !== join(source.dataDir, 'journal') });
  return target;
}

describe('export and import (embedded)', { timeout: 240_000 }, () => {
  let a: Repo;
  let image: string;
  let first: string;
  let uid: string;
  let exportFile: string;
  const others: Repo[] = [];

  beforeAll(async () => {
    a = await Repo.create({ blockSize: BS });
    // 2.5 block-map chunks (1024 blocks each): data, sparse and repeated blocks, a short tail.
    const blocks: BlockSpec[] = Array.from({ length: 2600 }, (_, i) => (i % 10 === 3 ? 'zero' : i % 17 === 0 ? 'text' : i + 1));
    image = a.path('vm.img');
    makeImage(image, blocks, BS, { spec: 'random', bytes: 999 });
    first = await a.backup(image, 'vm1', '-s', 'snap1');
    overwriteBlock(image, 7, BS, Buffer.alloc(BS, 0x5a));
    // An incremental backup: chunks 1 and 2 are references to the first version's, which the export follows.
    uid = await a.backup(image, 'vm1', '-s', 'snap2', '-f', first, '-t', 'daily,keep');
    expect((await a.cli('protect', uid)).code).toBe(0);
    expect((await a.cli('expire', uid, '2031-02-03')).code).toBe(0);
    exportFile = a.path('vm1.export.json');
  }, HOOK_TIMEOUT);

  afterAll(() => {
    for (const r of [a, ...others]) r?.remove();
  });

  test('export writes the file and prints a summary row (-m), --json likewise; - writes the same bytes to stdout', async () => {
    const r = await a.cliG(['-m'], 'export', uid, exportFile);
    expect(r.code, r.output).toBe(0);
    const text = readFileSync(exportFile, 'utf8');
    expect(r.stdout).toBe(`uid|name|file|bytes\n${uid}|vm1|${exportFile}|${Buffer.byteLength(text)}\n`);
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({
      format: 'backy2-serverless-export',
      formatVersion: 1,
      version: { uid, name: 'vm1', snapshotName: 'snap2', protected: true, valid: true, baseUid: first },
    });
    expect(lines.filter((l) => l['kind'] === 'chunk')).toHaveLength(3);
    expect(lines.at(-1)).toMatchObject({ kind: 'end', chunks: 3 });

    const json = await a.cliG(['--json'], 'export', uid.slice(0, 8), a.path('again.json'));
    expect(json.code, json.output).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([{ uid, name: 'vm1', file: a.path('again.json'), bytes: Buffer.byteLength(text) }]);
    expect(readFileSync(a.path('again.json'), 'utf8')).toBe(text);

    const stdout = await a.cli('export', uid, '-');
    expect(stdout.code, stdout.stderr).toBe(0);
    expect(stdout.stdout).toBe(text);
  });

  test('export - to a reader that stops early fails with 6 (the output is incomplete)', () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(BACKY2_|AWS_)/.test(k)) env[k] = v;
    const script = `"${NODE}" "${BIN}" -c "${a.configPath}" export ${uid} - | head -c 100 > /dev/null; echo "rc=\${PIPESTATUS[0]}"`;
    const r = spawnSync('bash', ['-c', script], { cwd: a.dir, env: { ...env, ...a.env(), NO_COLOR: '1' }, encoding: 'utf8', timeout: 120_000 });
    expect(r.stdout.trim(), r.stderr).toBe('rc=6');
    expect(r.stderr).toMatch(/Writing the export failed: write EPIPE/);
  });

  test('import into a fresh repository (same key, copied block directory) restores bit-exact, scrubs clean, survives cleanup', async () => {
    const b = await copyRepo(a);
    others.push(b);
    const r = await b.cliG(['--json'], 'import', exportFile);
    expect(r.code, r.output).toBe(0);
    const original = (await a.ls()).find((v) => v.uid === uid)!;
    expect(JSON.parse(r.stdout)).toEqual(original);
    expect(await b.ls()).toEqual([original]);

    const restore = await b.cli('restore', uid, 'file://restored.img');
    expect(restore.code, restore.output).toBe(0);
    expect(fileSha(b.path('restored.img'))).toBe(fileSha(image));
    const scrub = await b.cli('scrub', uid);
    expect(scrub.code, scrub.output).toBe(0);

    // Cleanup without a grace period keeps every block the imported version references.
    const eager = b.writeConfig('eager.cfg', { cleanupGraceSeconds: 0 });
    expect((await b.run('-c', eager, 'cleanup')).code).toBe(0);
    expect((await b.run('-c', eager, 'cleanup', '-f')).code).toBe(0);
    rmSync(b.path('restored.img'));
    expect((await b.cli('restore', uid, 'file://restored.img')).code).toBe(0);
    expect(fileSha(b.path('restored.img'))).toBe(fileSha(image));

    // The import is events: replaying the log gives the same listing.
    expect((await b.cli('rebuild-projections')).code).toBe(0);
    expect(await b.ls()).toEqual([original]);
  });

  test('import - reads stdin; -m prints the ls row', async () => {
    const c = await copyRepo(a);
    others.push(c);
    const r = cliWithStdin(c, readFileSync(exportFile), '-m', 'import', '-');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('date|name|snapshot_name|size|size_bytes|uid|valid|protected|tags|expire');
    expect(r.stdout).toContain(`|${uid}|1|1|daily,keep|2031-02-03`);
    expect((await c.cli('restore', uid, 'file://r.img')).code).toBe(0);
    expect(fileSha(c.path('r.img'))).toBe(fileSha(image));
  });

  test('an existing uid (also in the exporting repository itself, also removed) → 22, nothing changed', async () => {
    const before = await snapshot(a);
    const r = await a.cli('import', exportFile);
    expect(r.code, r.output).toBe(22);
    expect(r.stderr).toContain(`Version ${uid} already exists`);
    expect(await snapshot(a)).toEqual(before);

    const d = await copyRepo(a);
    others.push(d);
    expect((await d.cli('import', exportFile)).code).toBe(0);
    expect((await d.cli('unprotect', uid)).code).toBe(0);
    expect((await d.cli('rm', '-f', uid)).code).toBe(0);
    const removed = await snapshot(d);
    const again = await d.cli('import', exportFile);
    expect(again.code, again.output).toBe(22);
    expect(again.stderr).toMatch(/already exists \(removed\)/);
    expect(await snapshot(d)).toEqual(removed);
  });

  test('malformed JSON, another format, a newer formatVersion, a truncated or empty file → 23, nothing changed', async () => {
    const e = await copyRepo(a);
    others.push(e);
    const text = readFileSync(exportFile, 'utf8');
    const before = await snapshot(e);
    const variants: Record<string, string> = {
      'garbage.json': '{"format": "backy2-serverless-export", formatVersion',
      'backy2.csv': 'backy2 Version 2.12 metadata dump\n',
      'other.json': text.replace('"format":"backy2-serverless-export"', '"format":"benji"'),
      'newer.json': text.replace('"formatVersion":1', '"formatVersion":2'),
      'truncated.json': text.slice(0, Math.floor(text.length * 0.6)),
      'no-end.json': text.trimEnd().split('\n').slice(0, -1).join('\n') + '\n',
      'empty.json': '',
    };
    for (const [name, body] of Object.entries(variants)) {
      writeFileSync(e.path(name), body);
      const r = await e.cli('import', name);
      expect([name, r.code], r.output).toEqual([name, 23]);
      expect(r.stderr.split('\n').filter((l) => l.includes('ERROR'))).toHaveLength(1);
    }
    expect(cliWithStdin(e, variants['truncated.json']!, 'import', '-').code).toBe(23);
    expect(await snapshot(e)).toEqual(before);
  });

  test('a missing block object → 6, another key → 7, a missing file → 1; nothing changed', async () => {
    const f = await copyRepo(a);
    others.push(f);
    const ids = (await a.blockIdsOf(uid)).filter((id): id is string => id !== null);
    rmSync(f.blockPath(ids[100]!));
    const before = await snapshot(f);
    const missing = await f.cli('import', exportFile);
    expect(missing.code, missing.output).toBe(6);
    expect(missing.stderr).toContain(ids[100]!);
    expect(await snapshot(f)).toEqual(before);

    const g = await copyRepo(a, randomKey());
    others.push(g);
    const emptyG = await snapshot(g);
    const wrongKey = await g.cli('import', exportFile);
    expect(wrongKey.code, wrongKey.output).toBe(7);
    expect(await snapshot(g)).toEqual(emptyG);

    expect((await g.cli('import', 'no-such-file.json')).code).toBe(1);
  });

  test('export of an unknown uid → 3, of a backup still in progress → 4, and writes no file', async () => {
    const unknown = await a.cli('export', randomUUID(), 'x.json');
    expect(unknown.code, unknown.output).toBe(3);
    const pending = randomUUID();
    const { SqliteMetadataStore } = await import('../../shared/adapters/local/sqlite-store.ts');
    const { executeVersionCommand } = await import('../../shared/app/execute.ts');
    const store = SqliteMetadataStore.open(a.sqlitePath);
    try {
      await executeVersionCommand(
        store,
        {
          type: 'StartVersion',
          uid: pending,
          name: 'vm2',
          snapshotName: '',
          sizeBytes: BS,
          blockSize: BS,
          chunkEntries: 1024,
          baseUid: null,
          tags: [],
          expire: null,
          host: 'h',
        },
        { minAgeDaysForRm: 0, maxBackupAgeSeconds: 86400 },
      );
    } finally {
      store.close();
    }
    const inProgress = await a.cli('export', pending, 'p.json');
    expect(inProgress.code, inProgress.output).toBe(4);
    expect(inProgress.stderr).toMatch(/is pending; only committed versions can be exported/);
    expect(() => readFileSync(a.path('p.json'))).toThrow();
    expect(() => readFileSync(a.path('x.json'))).toThrow();
  });
});
