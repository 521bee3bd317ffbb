/**
 * cleanup against backups in progress: `cleanup -f` is refused (exit 8) while a backup runs, a
 * backup waits for a running `cleanup -f`, and no block referenced by a committed version or a
 * backup in progress is ever deleted, whatever the interleaving.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CLEANUP_LOCK } from '../../agent/backend/embedded.ts';
import { HOOK_TIMEOUT, blockData, flag, makeImage, MiB, overwriteBlock, pauseOutsideTransaction, Repo, resume } from '../support/cli.ts';

const BS = 4096;

describe('cleanup while a backup is in progress', { timeout: 120_000 }, () => {
  let repo: Repo;
  let graceZero: string;
  let fast: string;
  beforeAll(async () => {
    // Small blocks, one read and one write at a time: backups take long enough to be caught running.
    repo = await Repo.create({ blockSize: BS, simultaneousReads: 1, simultaneousWrites: 1 });
    graceZero = repo.writeConfig('grace0.cfg', { blockSize: BS, simultaneousReads: 1, simultaneousWrites: 1, cleanupGraceSeconds: 0 });
    fast = repo.writeConfig('fast.cfg', { blockSize: BS, simultaneousReads: 4, simultaneousWrites: 4 });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('cleanup -f during a backup is refused with exit 8 and deletes nothing; the backup then commits and restores', async () => {
    // Garbage to collect: a removed version's blocks.
    makeImage(repo.path('old.img'), [1, 2, 3], BS);
    const old = await repo.backup('old.img', 'old');
    expect((await repo.cli('rm', '-f', old)).code).toBe(0);

    const image = randomBytes(2 * MiB);
    writeFileSync(repo.path('big.img'), image);
    const running = repo.startCli('backup', 'file://big.img', 'big');
    await running.waitForStderr(/Backed up \d+\/512 blocks/);
    await pauseOutsideTransaction(running.child, repo.sqlitePath);
    let files: string[];
    try {
      files = repo.blockFiles();
      const c = await repo.cli('cleanup', '-f');
      expect(c.code, c.output).toBe(8);
      expect(c.stderr).toMatch(/backup is in progress/);
      expect(repo.blockFiles()).toEqual(files);
    } finally {
      resume(running.child);
    }
    const r = await running.result;
    expect(r.code, r.output).toBe(0);
    const uid = /New version: (\S+)/.exec(r.stderr)![1]!;
    expect((await repo.run('-c', fast, 'restore', uid, 'file://big.out')).code).toBe(0);
    expect(readFileSync(repo.path('big.out')).equals(image)).toBe(true);

    // Now nothing runs: cleanup -f collects the removed version's blocks and keeps the new ones.
    const c = await repo.cliG(['--json'], 'cleanup', '-f');
    expect(c.code, c.output).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ deleted: 3 });
    expect((await repo.cli('scrub', uid)).code).toBe(0);
    expect(repo.blockFiles()).toHaveLength(512);
    expect((await repo.cli('rm', '-f', uid)).code).toBe(0);
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect(repo.blockFiles()).toEqual([]);
  });

  test('a backup waits while cleanup -f holds the repository lock, then runs', async () => {
    makeImage(repo.path('small.img'), [10, 11], BS);
    const db = new DatabaseSync(repo.sqlitePath);
    // The lock as a running `cleanup -f` in another (live) process holds it.
    db.prepare('INSERT INTO locks (name, holder, pid, host, at) VALUES (?, ?, ?, ?, ?)').run(
      CLEANUP_LOCK,
      'backy2 cleanup --force',
      process.pid,
      hostname(),
      new Date().toISOString(),
    );
    let released = false;
    try {
      const other = await repo.cli('cleanup', '-f');
      expect(other.code).toBe(8);
      expect(other.stderr).toMatch(/locked/);

      const running = repo.startCli('-m', 'backup', 'file://small.img', 'waiting');
      await sleep(2500);
      expect(running.child.exitCode).toBeNull();
      expect(await repo.ls('waiting')).toEqual([]); // not started: nothing recorded yet
      db.prepare('DELETE FROM locks WHERE name = ?').run(CLEANUP_LOCK);
      released = true;
      const r = await running.result;
      expect(r.code, r.output).toBe(0);
      expect((await repo.ls('waiting')).map((v) => flag(v.valid))).toEqual([1]);
    } finally {
      if (!released) db.prepare('DELETE FROM locks WHERE name = ?').run(CLEANUP_LOCK);
      db.close();
    }
  });

  test('a lock left by a dead process does not block backups or cleanup', async () => {
    const db = new DatabaseSync(repo.sqlitePath);
    try {
      // A pid far above pid_max on Linux: certainly not running.
      db.prepare('INSERT INTO locks (name, holder, pid, host, at) VALUES (?, ?, ?, ?, ?)').run(
        CLEANUP_LOCK,
        'crashed cleanup',
        99_999_999,
        hostname(),
        new Date().toISOString(),
      );
    } finally {
      db.close();
    }
    makeImage(repo.path('after-crash.img'), [12], BS);
    const uid = await repo.backup('after-crash.img', 'after-crash');
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect((await repo.cli('scrub', uid)).code).toBe(0);
  });

  test('no block a committed version or a backup in progress references is deleted, with cleanups running all along', async () => {
    // v1 is removed; v2, a backup of a mostly identical image, runs while cleanups (grace 0, so
    // they delete what they may at once) run again and again. v2 dedups against v1's blocks.
    // 1100 blocks: two block-map chunks, so the backup records one while the cleanups run.
    const blocks = Array.from({ length: 1100 }, (_, i) => (i % 10 === 9 ? 'zero' : i + 1000));
    const image1 = makeImage(repo.path('v1.img'), blocks, BS);
    const v1 = await repo.backup('v1.img', 'gc');
    const keep = await repo.backup('v1.img', 'gc-keep'); // a committed version sharing every block
    writeFileSync(repo.path('v2.img'), image1);
    for (let i = 0; i < 1100; i += 97) overwriteBlock(repo.path('v2.img'), i, BS, blockData('random', BS));
    const image2 = readFileSync(repo.path('v2.img'));
    expect((await repo.cli('rm', '-f', v1)).code).toBe(0);
    expect((await repo.cli('rm', '-f', keep)).code).toBe(0);

    const running = repo.start('-c', fast, 'backup', 'file://v2.img', 'gc');
    const round = async () => {
      const soft = await repo.run('-c', graceZero, 'cleanup');
      const full = await repo.run('-c', graceZero, 'cleanup', '-f');
      expect([0, 8], soft.output).toContain(soft.code);
      expect([0, 8], full.output).toContain(full.code);
      return [soft.code, full.code];
    };
    // One round for certain while v2 has looked blocks up but not yet recorded them ...
    await running.waitForStderr(/Backed up \d+\/1100 blocks/);
    await pauseOutsideTransaction(running.child, repo.sqlitePath);
    try {
      // grace 0: this run marks v1's blocks and would delete them at once, but v2 started first.
      expect(await round()).toEqual([0, 8]);
    } finally {
      resume(running.child);
    }
    // ... and more while it runs on.
    for (let rounds = 0; running.child.exitCode === null && rounds < 5; rounds++) await round();
    const r = await running.result;
    expect(r.code, r.output).toBe(0);
    const v2 = /New version: (\S+)/.exec(r.stderr)![1]!;

    for (let i = 0; i < 2; i++) expect((await repo.run('-c', graceZero, 'cleanup')).code).toBe(0);
    expect((await repo.run('-c', fast, 'scrub', v2)).code).toBe(0);
    expect((await repo.run('-c', fast, 'restore', v2, 'file://v2.out')).code).toBe(0);
    expect(readFileSync(repo.path('v2.out')).equals(image2)).toBe(true);
    // Every block of every listed version is there; after cleanup -f, nothing else is.
    const wanted = new Set<string>();
    for (const v of await repo.ls()) for (const id of await repo.blockIdsOf(v.uid)) if (id) wanted.add(id);
    const stored = () => new Set(repo.blockFiles().map((f) => f.split('/').at(-1)!));
    const before = stored();
    expect([...wanted].filter((id) => !before.has(id))).toEqual([]);
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect(stored()).toEqual(wanted);
  });
});
