/**
 * backup -c UID (continue an interrupted backup) and backup -r HINTS.json (rbd diff hints),
 * end to end through the CLI against real files.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { fileSha, HOOK_TIMEOUT, makeImage, MiB, overwriteBlock, Repo, seeded, type RunningCli } from '../support/cli.ts';

const CHUNK_ENTRIES = 1024;

interface JsonBackup {
  uid: string;
  stats: { bytesRead: number; bytesWritten: number; blocksWritten: number; blocksDedup: number; blocksSparse: number };
}

async function versionState(repo: Repo, name: string): Promise<{ uid: string; status: string; recordedChunks: number; chunkCount: number } | undefined> {
  const store = SqliteMetadataStore.open(repo.sqlitePath);
  try {
    return (await store.listVersions()).find((v) => v.name === name);
  } finally {
    store.close();
  }
}

/** Stops the backup (SIGSTOP) once it has recorded `atLeast` chunks but not all of them. */
async function stopAfterChunks(
  repo: Repo,
  running: RunningCli,
  name: string,
  atLeast: number,
): Promise<{ uid: string; recordedChunks: number; chunkCount: number }> {
  for (let i = 0; i < 3000; i++) {
    const v = await versionState(repo, name).catch(() => undefined);
    if (v && v.recordedChunks >= atLeast) {
      running.child.kill('SIGSTOP');
      const frozen = (await versionState(repo, name))!;
      expect(frozen.recordedChunks, 'the backup finished before it could be interrupted').toBeLessThan(frozen.chunkCount);
      return frozen;
    }
    await sleep(10);
  }
  throw new Error('backup never recorded a chunk');
}

describe('backup -c: continue an interrupted backup', { timeout: 240_000 }, () => {
  let repo: Repo;
  const BS = 4096; // 1024 blocks per chunk: a chunk is 4 MiB
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 0, cleanupGraceSeconds: 0, simultaneousReads: 1 });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('after a killed backup, -c reads only the chunks not yet recorded and restores bit-exact', async () => {
    writeFileSync(repo.path('a.img'), seeded(11, 24 * MiB));
    const running = repo.startCli('backup', 'file://a.img', 'vm-a');
    const frozen = await stopAfterChunks(repo, running, 'vm-a', 2);
    running.child.kill('SIGKILL');
    await running.result;
    expect((await versionState(repo, 'vm-a'))!.status).toBe('pending');

    const r = await repo.cliG(['--json'], 'backup', '-c', frozen.uid.slice(0, 8), 'file://a.img', 'vm-a');
    expect(r.code, r.output).toBe(0);
    const out = JSON.parse(r.stdout) as JsonBackup;
    expect(out.uid).toBe(frozen.uid);
    // Recorded chunks are not read again.
    expect(out.stats.bytesRead).toBe(24 * MiB - frozen.recordedChunks * CHUNK_ENTRIES * BS);

    const [row] = await repo.ls('vm-a');
    expect(row).toMatchObject({ uid: frozen.uid, valid: 1, size_bytes: 24 * MiB });
    expect((await repo.cli('restore', frozen.uid, 'file://a.out')).code).toBe(0);
    expect(fileSha(repo.path('a.out'))).toBe(fileSha(repo.path('a.img')));
    expect((await repo.cli('scrub', frozen.uid)).code).toBe(0);
  });

  test('after a failed backup whose blocks cleanup deleted, -c stores them again from the source', async () => {
    const original = seeded(12, 16 * MiB);
    writeFileSync(repo.path('b.img'), original);
    const running = repo.startCli('backup', 'file://b.img', 'vm-b');
    await stopAfterChunks(repo, running, 'vm-b', 2);
    truncateSync(repo.path('b.img'), 9 * MiB); // the source "shrinks": the backup fails
    running.child.kill('SIGCONT');
    const failed = await running.result;
    expect(failed.code, failed.output).toBe(5);
    const v = (await versionState(repo, 'vm-b'))!;
    expect(v.status).toBe('failed');
    expect(v.recordedChunks).toBeGreaterThanOrEqual(2);

    // Nothing references the failed version's blocks: cleanup -f deletes them.
    const before = repo.blockFiles().length;
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect(repo.blockFiles().length).toBeLessThan(before);

    writeFileSync(repo.path('b.img'), original);
    const r = await repo.cliG(['--json'], 'backup', '-c', v.uid, 'file://b.img', 'vm-b');
    expect(r.code, r.output).toBe(0);
    expect((await repo.cli('restore', v.uid, 'file://b.out')).code).toBe(0);
    expect(fileSha(repo.path('b.out'))).toBe(fileSha(repo.path('b.img')));
    expect((await repo.cli('scrub', v.uid)).code).toBe(0);
    // A cleanup now keeps every block of the continued version.
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect((await repo.cli('restore', '-f', v.uid, 'file://b.out')).code).toBe(0);
    expect(fileSha(repo.path('b.out'))).toBe(fileSha(repo.path('b.img')));
  });

  test('refusals: a complete version (4), another size (5), an unknown uid (3), another name or -f with -c (1)', async () => {
    writeFileSync(repo.path('c.img'), seeded(13, 2 * MiB));
    const uid = await repo.backup('c.img', 'vm-c');
    const done = await repo.cli('backup', '-c', uid, 'file://c.img', 'vm-c');
    expect(done.code).toBe(4);
    expect(done.stderr).toMatch(/complete and valid; only an interrupted backup can be continued/);

    // An interrupted version and a source of another size.
    writeFileSync(repo.path('d.img'), seeded(14, 16 * MiB));
    const running = repo.startCli('backup', 'file://d.img', 'vm-d');
    const frozen = await stopAfterChunks(repo, running, 'vm-d', 1);
    running.child.kill('SIGKILL');
    await running.result;
    writeFileSync(repo.path('d-small.img'), seeded(14, 12 * MiB));
    const other = await repo.cli('backup', '-c', frozen.uid, 'file://d-small.img', 'vm-d');
    expect(other.code).toBe(5);
    expect(other.stderr).toMatch(/Source has 12582912 bytes, version .* was a backup of 16777216 bytes/);
    expect((await versionState(repo, 'vm-d'))!.status).toBe('pending');

    expect((await repo.cli('backup', '-c', '00000000-0000-4000-8000-000000000000', 'file://d.img', 'vm-d')).code).toBe(3);
    const name = await repo.cli('backup', '-c', frozen.uid, 'file://d.img', 'vm-x');
    expect(name.code).toBe(1);
    expect(name.stderr).toMatch(/is a backup of "vm-d", not "vm-x"/);
    const combined = await repo.cli('backup', '-c', frozen.uid, '-f', uid, 'file://d.img', 'vm-d');
    expect(combined.code).toBe(1);
    expect(combined.stderr).toMatch(/cannot be combined with --from-version/);
    // After all refusals the version can still be continued.
    expect((await repo.cli('backup', '-c', frozen.uid, 'file://d.img', 'vm-d')).code).toBe(0);
    expect((await repo.cli('restore', frozen.uid, 'file://d.out')).code).toBe(0);
    expect(fileSha(repo.path('d.out'))).toBe(fileSha(repo.path('d.img')));
  });
});

describe('backup -r: rbd diff hints', { timeout: 120_000 }, () => {
  let repo: Repo;
  const BS = 64 * 1024;
  const BLOCKS = 64;
  const hint = (block: number, length: number, exists: boolean | 'true' | 'false', offsetInBlock = 0) => ({
    offset: block * BS + offsetInBlock,
    length,
    exists,
  });
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 0 });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  const writeHints = (name: string, hints: unknown) => {
    writeFileSync(repo.path(name), JSON.stringify(hints) + '\n');
    return name;
  };

  test('with -f: only hinted blocks (and a sanity sample) are read; discarded regions become sparse; restore is bit-exact', async () => {
    makeImage(
      repo.path('base.img'),
      Array.from({ length: BLOCKS }, () => 'random' as const),
      BS,
    );
    const base = await repo.backup('base.img', 'rbd');
    overwriteBlock(repo.path('base.img'), 3, BS, seeded(3, BS));
    overwriteBlock(repo.path('base.img'), 10, BS, seeded(10, BS)); // changed, hinted by a 10-byte range
    overwriteBlock(repo.path('base.img'), 20, BS, Buffer.alloc(BS)); // discarded
    const hints = writeHints('h1.json', [hint(3, BS, 'true'), hint(10, 10, true, 100), hint(20, BS, 'false')]);
    const r = await repo.cliG(['--json'], 'backup', '-f', base, '-r', hints, 'file://base.img', 'rbd');
    expect(r.code, r.output).toBe(0);
    const out = JSON.parse(r.stdout) as JsonBackup;
    // Blocks 3 and 10, plus 10 unhinted blocks compared with the base.
    expect(out.stats.bytesRead).toBe(12 * BS);
    expect(out.stats.blocksWritten).toBe(2);
    expect(out.stats.blocksSparse).toBe(1);
    expect((await repo.blockIdsOf(out.uid))[20]).toBeNull();
    expect((await repo.cli('restore', out.uid, 'file://h1.out')).code).toBe(0);
    expect(fileSha(repo.path('h1.out'))).toBe(fileSha(repo.path('base.img')));
  });

  test('without -f: unhinted regions are sparse; a block only partly discarded is read', async () => {
    const data = Buffer.alloc(BLOCKS * BS);
    seeded(21, 4 * BS).copy(data, 0); // blocks 0-3 hold data
    seeded(22, BS / 2).copy(data, 30 * BS + BS / 2); // second half of block 30 holds data
    writeFileSync(repo.path('thin.img'), data);
    const hints = writeHints('h2.json', [hint(0, 4 * BS, true), hint(30, BS / 2, false)]);
    const r = await repo.cliG(['--json'], 'backup', '-r', hints, 'file://thin.img', 'thin');
    expect(r.code, r.output).toBe(0);
    const out = JSON.parse(r.stdout) as JsonBackup;
    expect(out.stats.bytesRead).toBe((4 + 1 + 10) * BS);
    expect((await repo.cli('restore', out.uid, 'file://h2.out')).code).toBe(0);
    expect(fileSha(repo.path('h2.out'))).toBe(fileSha(repo.path('thin.img')));
  });

  test('hints that miss changes: the sanity check fails the backup (exit 5), or a deep scrub with -s finds them (exit 20)', async () => {
    makeImage(
      repo.path('drift.img'),
      Array.from({ length: BLOCKS }, () => 'random' as const),
      BS,
    );
    const base = await repo.backup('drift.img', 'drift');
    // Everything changed, nothing hinted: the sample must notice.
    makeImage(
      repo.path('drift.img'),
      Array.from({ length: BLOCKS }, () => 'random' as const),
      BS,
    );
    const all = await repo.cli('backup', '-f', base, '-r', writeHints('none.json', []), 'file://drift.img', 'drift');
    expect(all.code).toBe(5);
    expect(all.stderr).toMatch(/lies outside the hints but differs from base version .*: the hints are incomplete/);
    expect((await repo.ls('drift')).filter((v) => v.uid !== base).map((v) => v.valid)).toEqual([0]);

    // One unhinted change among many blocks: the sample may miss it; then scrub -s must not.
    const fresh = await repo.backup('drift.img', 'drift');
    overwriteBlock(repo.path('drift.img'), 41, BS, seeded(41, BS));
    const one = await repo.cliG(['-m'], 'backup', '-f', fresh, '-r', writeHints('none2.json', []), 'file://drift.img', 'drift');
    if (one.code === 5) return; // the sample hit block 41
    expect(one.code, one.output).toBe(0);
    const uid = one.stdout.trim().split('\n').at(-1)!;
    const scrub = await repo.cli('scrub', '-s', 'file://drift.img', uid);
    expect(scrub.code, scrub.output + '\n---\n' + one.output).toBe(20);
    expect(scrub.stderr).toMatch(/Source mismatch at block 41/);
  });

  test('bad hints: not JSON or the wrong shape is exit 1, a range past the end is exit 5; nothing is created', async () => {
    makeImage(repo.path('small.img'), ['random', 'random'], BS);
    const before = (await repo.ls()).length;
    writeFileSync(repo.path('bad.json'), '{"offset": 0');
    const notJson = await repo.cli('backup', '-r', 'bad.json', 'file://small.img', 'bad');
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/Hints file bad.json is not JSON/);
    const shape = await repo.cli('backup', '-r', writeHints('shape.json', [{ offset: -1, length: 3, exists: 'maybe' }]), 'file://small.img', 'bad');
    expect(shape.code).toBe(1);
    expect(shape.stderr).toMatch(/Hints file shape.json: entry 0\.offset/);
    const missing = await repo.cli('backup', '-r', 'nope.json', 'file://small.img', 'bad');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/Cannot read hints file nope.json/);
    const past = await repo.cli('backup', '-r', writeHints('past.json', [hint(1, 2 * BS, true)]), 'file://small.img', 'bad');
    expect(past.code).toBe(5);
    expect(past.stderr).toMatch(/beyond the end of the source/);
    expect((await repo.ls()).length).toBe(before);
    expect(readFileSync(repo.path('small.img')).length).toBe(2 * BS);
  });
});

describe('restore -c into a new file after a storage read failure', { timeout: 120_000 }, () => {
  let repo: Repo;
  const BS = 64 * 1024;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('the restored part is kept as .NAME.backy2-partial; -c N finishes it into the target', async () => {
    makeImage(
      repo.path('r.img'),
      Array.from({ length: 12 }, () => 'random' as const),
      BS,
    );
    const uid = await repo.backup('r.img', 'r');
    const ids = await repo.blockIdsOf(uid);
    // Block 9's object cannot be read (a directory stands in its place): not missing, unreadable.
    const broken = repo.blockPath(ids[9]!);
    renameSync(broken, repo.path('block9'));
    mkdirSync(broken);

    const failed = await repo.cli('restore', uid, 'file://r.out');
    expect(failed.code).toBe(6);
    const m = /Blocks up to (\d+) are kept in .*\.r\.out\.backy2-partial: resume with -c (\d+)/.exec(failed.stderr);
    expect(m, failed.stderr).not.toBeNull();
    expect(Number(m![2])).toBe(Number(m![1]) + 1);
    expect(Number(m![2])).toBeLessThanOrEqual(9);
    expect(existsSync(repo.path('r.out'))).toBe(false);
    expect(existsSync(repo.path('.r.out.backy2-partial'))).toBe(true);

    rmdirSync(broken);
    renameSync(repo.path('block9'), broken);
    const resumed = await repo.cli('restore', '-c', m![2]!, uid, 'file://r.out');
    expect(resumed.code, resumed.output).toBe(0);
    expect(fileSha(repo.path('r.out'))).toBe(fileSha(repo.path('r.img')));
    expect(existsSync(repo.path('.r.out.backy2-partial'))).toBe(false);
  });

  test('a missing block is not a transient failure: nothing is kept', async () => {
    makeImage(
      repo.path('m.img'),
      Array.from({ length: 6 }, () => 'random' as const),
      BS,
    );
    const uid = await repo.backup('m.img', 'm');
    const ids = await repo.blockIdsOf(uid);
    renameSync(repo.blockPath(ids[4]!), repo.path('block4'));
    const failed = await repo.cli('restore', uid, 'file://m.out');
    expect(failed.code).toBe(6);
    expect(failed.stderr).toMatch(/nothing was written/);
    expect(existsSync(repo.path('.m.out.backy2-partial'))).toBe(false);
    const noResume = await repo.cli('restore', '-c', '2', uid, 'file://m.out');
    expect(noResume.code).toBe(1);
    expect(noResume.stderr).toMatch(/does not exist \(nor a partial restore of it\)/);
    renameSync(repo.path('block4'), repo.blockPath(ids[4]!));
  });
});

describe('an object no index entry knows (left by a killed run)', { timeout: 120_000 }, () => {
  test('a backup that finds it stored describes that object in the index: a scrub stays clean', async () => {
    const BS = 64 * 1024;
    const repo = await Repo.create({ blockSize: BS, minAgeDays: 0, cleanupGraceSeconds: 0 });
    try {
      makeImage(
        repo.path('o.img'),
        Array.from({ length: 6 }, () => 'random' as const),
        BS,
      );
      const first = await repo.backup('o.img', 'o');
      const ids = (await repo.blockIdsOf(first)) as string[];
      const saved = ids.map((id) => readFileSync(repo.blockPath(id)));
      expect((await repo.cli('rm', '-f', first)).code).toBe(0);
      expect((await repo.cli('cleanup', '-f')).code).toBe(0);
      expect(repo.blockFiles()).toEqual([]);
      // Put two objects back, as a killed upload would have left them: stored, but in no index.
      for (const i of [1, 4]) {
        mkdirSync(dirname(repo.blockPath(ids[i]!)), { recursive: true });
        writeFileSync(repo.blockPath(ids[i]!), saved[i]!);
      }
      const second = await repo.backup('o.img', 'o');
      expect((await repo.cli('scrub', second)).code).toBe(0);
      expect((await repo.cli('restore', second, 'file://o.out')).code).toBe(0);
      expect(fileSha(repo.path('o.out'))).toBe(fileSha(repo.path('o.img')));
    } finally {
      repo.remove();
    }
  });
});
