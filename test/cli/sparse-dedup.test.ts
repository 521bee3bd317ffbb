/**
 * Sparse blocks are recorded, never stored; identical blocks are stored once across all
 * versions; `backup -f BASE` writes only the blocks that differ from the base.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, blockData, makeImage, overwriteBlock, Repo } from '../support/cli.ts';

const BS = 256 * 1024;

interface Stats {
  bytesRead: number;
  bytesWritten: number;
  blocksWritten: number;
  blocksDedup: number;
  blocksSparse: number;
}

async function jsonBackup(repo: Repo, ...args: string[]): Promise<{ uid: string; tags: string[]; stats: Stats }> {
  const r = await repo.cliG(['--json'], 'backup', ...args);
  if (r.code !== 0) throw new Error(`backup ${args.join(' ')}: exit ${r.code}: ${r.output}`);
  return JSON.parse(r.stdout) as { uid: string; tags: string[]; stats: Stats };
}

describe('sparse blocks', { timeout: 60_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    // 12 blocks: 7 zero (sparse), 5 with data; the short tail is zero too.
    image = makeImage(repo.path('sparse.img'), ['zero', 'random', 'zero', 'zero', 'text', 'zero', 'random', 'zero', 'zero', 'random', 'random'], BS, {
      spec: 'zero',
      bytes: 5000,
    });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('zero blocks are not stored', async () => {
    const b = await jsonBackup(repo, 'file://sparse.img', 'sparse');
    uid = b.uid;
    expect(b.stats).toMatchObject({ blocksSparse: 7, blocksWritten: 5, blocksDedup: 0, bytesRead: image.length });
    expect(repo.blockFiles()).toHaveLength(5);
    // The block map records the sparse positions (null ids) at the right places.
    const ids = await repo.blockIdsOf(uid);
    expect(ids.map((id) => (id === null ? 0 : 1))).toEqual([0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0]);
  });

  test('restore is bit-exact including the zero regions, and leaves them as holes', async () => {
    const r = await repo.cli('restore', uid, 'file://restored.img');
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path('restored.img')).equals(image)).toBe(true);
    // A new file is written sparse: only the 5 data blocks are allocated (plus filesystem slack).
    const allocated = statSync(repo.path('restored.img')).blocks * 512;
    expect(allocated).toBeLessThanOrEqual(5 * BS + 64 * 1024);
  });

  test('restore -s onto an existing target (with -f) is still bit-exact; without -f it is refused', async () => {
    writeFileSync(repo.path('dirty.img'), randomBytes(image.length + 3 * BS));
    const dirty = readFileSync(repo.path('dirty.img'));
    const refused = await repo.cli('restore', '-s', uid, 'file://dirty.img');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('Target already exists: file://dirty.img');
    expect(readFileSync(repo.path('dirty.img')).equals(dirty)).toBe(true);

    const r = await repo.cli('restore', '-s', '-f', uid, 'file://dirty.img');
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path('dirty.img')).equals(image)).toBe(true);
  });

  test('an empty source is a version of size 0 that restores to an empty file', async () => {
    writeFileSync(repo.path('empty.img'), '');
    const b = await jsonBackup(repo, 'file://empty.img', 'empty');
    expect(b.stats).toMatchObject({ bytesRead: 0, blocksWritten: 0 });
    const row = (await repo.version(b.uid))!;
    expect([row.size, row.size_bytes, row.valid]).toEqual([0, 0, 1]);
    expect((await repo.cli('restore', b.uid, 'file://empty.out')).code).toBe(0);
    expect(readFileSync(repo.path('empty.out')).length).toBe(0);
  });

  test('an all-zero image stores nothing and restores to zeros of the right size', async () => {
    writeFileSync(repo.path('zeros.img'), Buffer.alloc(3 * BS + 777));
    const before = repo.blockFiles();
    const b = await jsonBackup(repo, 'file://zeros.img', 'zeros');
    expect(b.stats).toMatchObject({ blocksSparse: 4, blocksWritten: 0 });
    expect(repo.blockFiles()).toEqual(before);
    expect((await repo.cli('scrub', b.uid)).code).toBe(0);
    expect((await repo.cli('restore', b.uid, 'file://zeros.out')).code).toBe(0);
    expect(readFileSync(repo.path('zeros.out')).equals(Buffer.alloc(3 * BS + 777))).toBe(true);
  });
});

describe('dedup and incremental backups', { timeout: 90_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid1: string;
  let incUid: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    // Seeds 1, 2, 3 repeat: 8 blocks, 3 distinct contents.
    image = makeImage(repo.path('dup.img'), [1, 2, 1, 1, 2, 3, 1, 3], BS);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('repeated identical blocks are stored once', async () => {
    const b = await jsonBackup(repo, 'file://dup.img', 'dup');
    uid1 = b.uid;
    expect(b.stats).toMatchObject({ blocksWritten: 3, blocksDedup: 5, blocksSparse: 0 });
    expect(repo.blockFiles()).toHaveLength(3);
    const ids = await repo.blockIdsOf(uid1);
    expect(ids[0]).toBe(ids[2]);
    expect(ids[0]).toBe(ids[6]);
    expect(new Set(ids).size).toBe(3);
  });

  test('a second backup of the same image (any name) writes no new block files', async () => {
    const files = repo.blockFiles();
    const mtimes = files.map((f) => statSync(`${repo.dataDir}/${f}`).mtimeMs);
    const again = await jsonBackup(repo, 'file://dup.img', 'dup');
    expect(again.stats).toMatchObject({ blocksWritten: 0, blocksDedup: 8, bytesWritten: 0 });
    const other = await jsonBackup(repo, 'file://dup.img', 'another-name');
    expect(other.stats.blocksWritten).toBe(0);
    expect(repo.blockFiles()).toEqual(files);
    expect(files.map((f) => statSync(`${repo.dataDir}/${f}`).mtimeMs)).toEqual(mtimes);
    expect((await repo.cli('restore', other.uid, 'file://other.out')).code).toBe(0);
    expect(readFileSync(repo.path('other.out')).equals(image)).toBe(true);
  });

  test('backup -f BASE of a modified image writes only the changed blocks; both versions restore bit-exact', async () => {
    writeFileSync(repo.path('mod.img'), image);
    overwriteBlock(repo.path('mod.img'), 1, BS, blockData('random', BS));
    overwriteBlock(repo.path('mod.img'), 5, BS, blockData('random', BS));
    overwriteBlock(repo.path('mod.img'), 7, BS, blockData('zero', BS));
    const modified = readFileSync(repo.path('mod.img'));
    const before = new Set(repo.blockFiles());

    const inc = await jsonBackup(repo, 'file://mod.img', 'dup', '-f', uid1);
    incUid = inc.uid;
    expect(inc.stats).toMatchObject({ blocksWritten: 2, blocksSparse: 1, blocksDedup: 5 });
    const added = repo.blockFiles().filter((f) => !before.has(f));
    expect(added).toHaveLength(2);
    const ids = await repo.blockIdsOf(inc.uid);
    expect(added.map((f) => f.split('/').at(-1)).sort()).toEqual([ids[1], ids[5]].sort());

    expect((await repo.cli('restore', uid1, 'file://v1.out')).code).toBe(0);
    expect((await repo.cli('restore', inc.uid, 'file://v2.out')).code).toBe(0);
    expect(readFileSync(repo.path('v1.out')).equals(image)).toBe(true);
    expect(readFileSync(repo.path('v2.out')).equals(modified)).toBe(true);
    expect((await repo.cli('scrub', inc.uid)).code).toBe(0);
  });

  test('an incremental version still restores after its base is removed and cleaned up', async () => {
    expect((await repo.cli('rm', '-f', uid1)).code).toBe(0);
    const c = await repo.cli('cleanup', '-f');
    expect(c.code, c.output).toBe(0);
    // incUid shares blocks with uid1 (as do other versions): they must survive the removal.
    expect((await repo.cli('scrub', incUid)).code).toBe(0);
    expect((await repo.cli('restore', incUid, 'file://v2-after-rm.out')).code).toBe(0);
    expect(readFileSync(repo.path('v2-after-rm.out')).equals(readFileSync(repo.path('mod.img')))).toBe(true);
    // And it can be the base of the next incremental backup.
    const next = await jsonBackup(repo, 'file://mod.img', 'dup', '-f', incUid);
    expect(next.stats.blocksWritten).toBe(0);
  });

  test('an invalid base is refused and creates no version', async () => {
    const before = (await repo.ls()).length;
    const unknown = await repo.cli('backup', 'file://dup.img', 'dup', '-f', '00000000-0000-4000-8000-000000000000');
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/not found/);
    const garbage = await repo.cli('backup', 'file://dup.img', 'dup', '-f', 'zz');
    expect(garbage.code).toBe(3);

    // A removed version is no base either.
    const gone = await repo.backup('dup.img', 'gone');
    expect((await repo.cli('rm', '-f', gone)).code).toBe(0);
    const removed = await repo.cli('backup', 'file://dup.img', 'dup', '-f', gone);
    expect(removed.code).toBe(3);

    // A base written with another block size cannot be used.
    const other = repo.writeConfig('other-bs.cfg', { blockSize: 2 * BS });
    const bs = await repo.run('-c', other, 'backup', 'file://dup.img', 'dup', '-f', incUid);
    expect(bs.code).toBe(4);
    expect(bs.stderr).toMatch(/block size/);
    expect((await repo.ls()).length).toBe(before);
  });
});

describe('incremental block maps', { timeout: 60_000 }, () => {
  let repo: Repo;
  afterAll(() => repo.remove());

  test('an unchanged block-map chunk of an incremental backup references the base instead of copying it', async () => {
    // 4 KiB blocks: 2500 blocks = 3 chunks of up to 1024 entries (mostly sparse, to keep it fast).
    repo = await Repo.create({ blockSize: 4096 });
    const image = makeImage(
      repo.path('big.img'),
      Array.from({ length: 2500 }, (_, i) => (i % 50 === 1 ? i + 1 : 'zero')),
      4096,
    );
    const base = await repo.backup('big.img', 'big');
    overwriteBlock(repo.path('big.img'), 1500, 4096, blockData('random', 4096)); // chunk 1
    const changed = readFileSync(repo.path('big.img'));
    const inc = await jsonBackup(repo, 'file://big.img', 'big', '-f', base);
    expect(inc.stats.blocksWritten).toBe(1);

    const db = new DatabaseSync(repo.sqlitePath, { readOnly: true });
    const chunks = db.prepare('SELECT chunk, entries IS NULL AS referenced, same_uid, same_chunk FROM map_chunks WHERE uid = ? ORDER BY chunk').all(inc.uid);
    db.close();
    expect(chunks.map((c) => ({ ...c }))).toEqual([
      { chunk: 0, referenced: 1, same_uid: base, same_chunk: 0 },
      { chunk: 1, referenced: 0, same_uid: null, same_chunk: null },
      { chunk: 2, referenced: 1, same_uid: base, same_chunk: 2 },
    ]);
    expect((await repo.cli('restore', base, 'file://base.out')).code).toBe(0);
    expect((await repo.cli('restore', inc.uid, 'file://inc.out')).code).toBe(0);
    expect(readFileSync(repo.path('base.out')).equals(image)).toBe(true);
    expect(readFileSync(repo.path('inc.out')).equals(changed)).toBe(true);

    // The base removed and cleaned up: chunks 0 and 2 of the incremental version still resolve.
    expect((await repo.cli('rm', '-f', base)).code).toBe(0);
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect((await repo.cli('scrub', inc.uid)).code).toBe(0);
    expect((await repo.cli('restore', inc.uid, 'file://inc-after-rm.out')).code).toBe(0);
    expect(readFileSync(repo.path('inc-after-rm.out')).equals(changed)).toBe(true);
  });
});
