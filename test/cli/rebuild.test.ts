/**
 * Event sourcing for real: after a history that produces every kind of event, dropping the
 * projections and replaying the event log gives identical projections, identical `ls` output
 * and identical restores.
 */
import { copyFileSync, readFileSync, unlinkSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { HOOK_TIMEOUT, blockData, fileSha, makeImage, overwriteBlock, Repo, sha256 } from '../support/cli.ts';

const BS = 256 * 1024;
const PROJECTIONS = { versions: 'uid', map_chunks: 'uid, chunk', blocks: 'id' } as const;

/** Every row of every projection table, in a stable order, blobs as hex. */
function dumpProjections(db: DatabaseSync): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const [table, order] of Object.entries(PROJECTIONS)) {
    out[table] = (db.prepare(`SELECT * FROM ${table} ORDER BY ${order}`).all() as Record<string, unknown>[]).map((row) =>
      Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v])),
    );
  }
  return out;
}

function withDb<T>(path: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe('rebuild-projections replays the event log into identical projections', { timeout: 120_000 }, () => {
  let repo: Repo;
  let graceZero: string;
  const live: Record<string, Buffer> = {};

  /** What a user can observe: ls in two formats and the bytes of every restorable version. */
  async function observe(): Promise<{ json: string; machine: string; restores: Record<string, string> }> {
    const [json, machine] = await Promise.all([repo.cliG(['--json'], 'ls'), repo.cliG(['-m'], 'ls')]);
    expect(json.code).toBe(0);
    const restores: Record<string, string> = {};
    await Promise.all(
      Object.keys(live).map(async (uid) => {
        const target = `restore-${randomUUID()}.img`;
        const r = await repo.cli('restore', uid, `file://${target}`);
        expect(r.code, r.output).toBe(0);
        restores[uid] = fileSha(repo.path(target));
        unlinkSync(repo.path(target));
      }),
    );
    return { json: json.stdout, machine: machine.stdout, restores };
  }

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    graceZero = repo.writeConfig('grace0.cfg', { cleanupGraceSeconds: 0 });
    const img1 = makeImage(repo.path('one.img'), [1, 2, 'zero', 3, 1], BS, { spec: 'text', bytes: 1000 });
    const a = await repo.backup('one.img', 'one');
    live[a] = img1;
    overwriteBlock(repo.path('one.img'), 1, BS, blockData(4, BS));
    const b = await repo.backup('one.img', 'one', '-f', a);
    live[b] = readFileSync(repo.path('one.img'));
    const img3 = makeImage(repo.path('three.img'), [5, 'zero', 'zero', 6], BS);
    const c = await repo.backup('three.img', 'three', '-s', 'snap', '-t', 'x,y', '-e', '2040-01-01');
    live[c] = img3;

    // A scrub that fails and one that succeeds after the repair.
    const ids = await repo.blockIdsOf(a);
    copyFileSync(repo.blockPath(ids[0]!), repo.path('saved'));
    unlinkSync(repo.blockPath(ids[0]!));
    expect((await repo.cli('scrub', a)).code).toBe(20);
    copyFileSync(repo.path('saved'), repo.blockPath(ids[0]!));
    expect((await repo.cli('scrub', a)).code).toBe(0);

    for (const args of [
      ['protect', c],
      ['add-tag', b, 'kept,extra'],
      ['remove-tag', b, 'extra'],
      ['expire', b, '2001-01-01'],
      ['protect', b],
      ['unprotect', b],
    ])
      expect((await repo.cli(...args)).code, args.join(' ')).toBe(0);

    // Removed versions, blocks marked unreferenced, claimed and deleted.
    makeImage(repo.path('gone.img'), [7, 8, 'zero'], BS);
    const d = await repo.backup('gone.img', 'gone');
    expect((await repo.cli('rm', '-f', d)).code).toBe(0);
    expect((await repo.cli('cleanup')).code).toBe(0); // marks only (grace 1 h)
    expect((await repo.run('-c', graceZero, 'cleanup')).code).toBe(0); // deletes
    // A block marked unreferenced and then relied on again by a new backup (touched).
    makeImage(repo.path('again.img'), [9, 10], BS);
    const e = await repo.backup('again.img', 'again');
    expect((await repo.cli('rm', '-f', e)).code).toBe(0);
    expect((await repo.cli('cleanup')).code).toBe(0);
    const f = await repo.backup('again.img', 'again');
    live[f] = readFileSync(repo.path('again.img'));

    // A backup that failed, through the same core the CLI uses.
    const store = SqliteMetadataStore.open(repo.sqlitePath);
    try {
      const policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86400 };
      const uid = randomUUID();
      await executeVersionCommand(
        store,
        {
          type: 'StartVersion',
          uid,
          name: 'failed',
          snapshotName: '',
          sizeBytes: BS,
          blockSize: BS,
          chunkEntries: 1024,
          baseUid: null,
          tags: [],
          expire: null,
          host: 'test',
        },
        policy,
      );
      await executeVersionCommand(store, { type: 'FailVersion', uid, reason: 'source vanished' }, policy);
    } finally {
      store.close();
    }
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('the history contains every kind of event', () => {
    const types = withDb(repo.sqlitePath, (db) => (db.prepare('SELECT DISTINCT type FROM events').all() as { type: string }[]).map((r) => r.type).sort());
    expect(types).toEqual(
      [
        'BlocksDeleted',
        'BlocksDeletionClaimed',
        'BlocksMarkedUnreferenced',
        'BlocksRecorded',
        'BlocksReferenced',
        'ExpirySet',
        'ScrubCompleted',
        'TagsAdded',
        'TagsRemoved',
        'VersionCommitted',
        'VersionFailed',
        'VersionProtected',
        'VersionRemoved',
        'VersionStarted',
        'VersionUnprotected',
      ].sort(),
    );
  });

  test('`backy2 rebuild-projections`: identical tables, ls output and restores', async () => {
    const tables = withDb(repo.sqlitePath, dumpProjections);
    expect(tables['versions']!.length).toBe(7);
    expect(tables['blocks']!.length).toBeGreaterThan(5);
    const before = await observe();

    const r = await repo.cli('rebuild-projections');
    expect(r.code, r.output).toBe(0);
    expect(withDb(repo.sqlitePath, dumpProjections)).toEqual(tables);
    expect(await observe()).toEqual(before);
    // ... and the restores are the backed-up images.
    for (const [uid, data] of Object.entries(live)) expect(before.restores[uid], uid).toBe(sha256(data));
  });

  test('the projections are derived: emptied by hand, they come back from the log alone', async () => {
    const tables = withDb(repo.sqlitePath, dumpProjections);
    const before = await observe();
    withDb(repo.sqlitePath, (db) => {
      for (const t of Object.keys(PROJECTIONS)) db.exec(`DELETE FROM ${t}`);
    });
    expect(JSON.parse((await repo.cliG(['--json'], 'ls')).stdout)).toEqual([]);
    expect((await repo.cli('rebuild-projections')).code).toBe(0);
    expect(withDb(repo.sqlitePath, dumpProjections)).toEqual(tables);
    expect(await observe()).toEqual(before);
  });

  test('SqliteMetadataStore.rebuildProjections gives identical tables', async () => {
    const store = SqliteMetadataStore.open(repo.sqlitePath);
    try {
      const before = dumpProjections(store.db);
      const versionsBefore = await store.listVersions();
      store.rebuildProjections();
      expect(dumpProjections(store.db)).toEqual(before);
      expect(await store.listVersions()).toEqual(versionsBefore);
    } finally {
      store.close();
    }
    // And the repository still works afterwards.
    expect((await repo.cli('scrub', Object.keys(live)[0]!)).code).toBe(0);
  });
});
