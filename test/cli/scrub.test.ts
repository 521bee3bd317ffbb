/**
 * scrub and restore against damaged storage: a missing, altered or truncated block file is
 * found (exit 20), the block and every version using it become invalid, restoring such a version
 * fails loudly without leaving a target, and a clean scrub after the repair makes it valid again.
 */
import { copyFileSync, existsSync, readdirSync, readFileSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, flag, makeImage, overwriteBlock, blockData, Repo } from '../support/cli.ts';

const BS = 256 * 1024;

describe('scrub finds damaged blocks; repairs make versions valid again', { timeout: 90_000 }, () => {
  let repo: Repo;
  let imageA: Buffer;
  let uidA: string;
  let uidB: string;
  let idsA: (string | null)[];
  const valid = async (uid: string) => flag((await repo.version(uid))!.valid);
  /** Restoring must fail with `code`, leave no target and no partial file behind. */
  const restoreFails = async (uid: string, codes: number[]) => {
    const r = await repo.cli('restore', uid, 'file://restored.img');
    expect(codes, r.output).toContain(r.code);
    expect(existsSync(repo.path('restored.img'))).toBe(false);
    expect(readdirSync(repo.dir).filter((f) => f.includes('restored.img'))).toEqual([]);
    return r;
  };

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    imageA = makeImage(repo.path('a.img'), [1, 2, 3, 'zero', 4], BS);
    makeImage(repo.path('b.img'), [5, 1, 6], BS); // shares seed 1 with a.img
    uidA = await repo.backup('a.img', 'a');
    uidB = await repo.backup('b.img', 'b');
    idsA = await repo.blockIdsOf(uidA);
    for (const id of idsA) if (id) copyFileSync(repo.blockPath(id), repo.path(`saved-${id}`));
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  const put_back = (id: string) => copyFileSync(repo.path(`saved-${id}`), repo.blockPath(id));

  test('a deleted block file: exit 20, "Blob not found", this and every other version using it invalid', async () => {
    const shared = idsA[0]!;
    expect(await repo.blockIdsOf(uidB)).toContain(shared);
    unlinkSync(repo.blockPath(shared));

    const r = await repo.cli('scrub', uidA);
    expect(r.code, r.output).toBe(20);
    expect(r.stderr).toMatch(new RegExp(`ERROR: Blob not found: Block\\(id=${shared}, version_uid=${uidA}`));
    expect(r.stderr).toContain(`Marked version invalid (UID ${uidA})`);
    expect(r.stderr).toContain(`Marked version invalid (UID ${uidB})`);
    expect(await valid(uidA)).toBe(0);
    expect(await valid(uidB)).toBe(0);
    const table = await repo.cliG(['-m', '-s'], 'ls', '-f', 'uid,valid');
    expect(table.stdout.trim().split('\n').sort()).toEqual([`${uidA}|0`, `${uidB}|0`].sort());

    const restore = await restoreFails(uidA, [6]);
    expect(restore.stderr).toMatch(/missing/);
    // An invalid version is no base for an incremental backup.
    const inc = await repo.cli('backup', 'file://a.img', 'a', '-f', uidA);
    expect(inc.code).toBe(4);
    expect(inc.stderr).toMatch(/invalid/);
  });

  test('the block put back: scrub exits 0 and the versions are valid again', async () => {
    put_back(idsA[0]!);
    const r = await repo.cli('scrub', uidA);
    expect(r.code, r.output).toBe(0);
    expect(await valid(uidA)).toBe(1);
    expect(await valid(uidB)).toBe(0); // not scrubbed yet
    expect((await repo.cli('scrub', uidB)).code).toBe(0);
    expect(await valid(uidB)).toBe(1);
    expect((await repo.cli('restore', uidA, 'file://restored.img')).code).toBe(0);
    expect(readFileSync(repo.path('restored.img')).equals(imageA)).toBe(true);
    unlinkSync(repo.path('restored.img'));
  });

  test('a backup that meets a block a scrub found missing uploads it again, which repairs the older versions', async () => {
    const id = idsA[4]!;
    unlinkSync(repo.blockPath(id));
    expect((await repo.cli('scrub', uidA)).code).toBe(20);
    expect(await valid(uidA)).toBe(0);
    const again = await repo.backup('a.img', 'a');
    expect(existsSync(repo.blockPath(id))).toBe(true);
    expect(await valid(again)).toBe(1);
    expect((await repo.cli('scrub', uidA)).code).toBe(0);
    expect(await valid(uidA)).toBe(1);
    expect((await repo.cli('rm', '-f', again)).code).toBe(0);
  });

  test('a block file with one byte flipped: exit 20; restore fails with exit 7 and leaves no target', async () => {
    const id = idsA[1]!;
    const body = readFileSync(repo.blockPath(id));
    body[Math.floor(body.length / 2)]! ^= 0x01;
    writeFileSync(repo.blockPath(id), body);

    const r = await repo.cli('scrub', uidA);
    expect(r.code, r.output).toBe(20);
    expect(r.stderr).toMatch(new RegExp(`ERROR: .*checksum.*Block\\(id=${id}`));
    expect(await valid(uidA)).toBe(0);
    expect(await valid(uidB)).toBe(1); // does not use that block

    await restoreFails(uidA, [7]);
    // Every time: a failed restore closes its codec workers cleanly (not exit 13 half-way, as it once did).
    const again = await Promise.all(Array.from({ length: 6 }, (_, i) => repo.cli('restore', uidA, `file://again-${i}.img`)));
    expect(again.map((r) => r.code)).toEqual([7, 7, 7, 7, 7, 7]);
    expect(readdirSync(repo.dir).filter((f) => f.includes('again-'))).toEqual([]);
    // An existing target is not touched by a failed forced restore either.
    writeFileSync(repo.path('keep.img'), 'keep me');
    const forced = await repo.cli('restore', '-f', uidA, 'file://keep.img');
    expect(forced.code).toBe(7);
    expect(readFileSync(repo.path('keep.img'), 'utf8')).toBe('keep me');

    put_back(id);
    expect((await repo.cli('scrub', uidA)).code).toBe(0);
    expect(await valid(uidA)).toBe(1);
  });

  test('a truncated block file: exit 20; restore fails; repaired, valid again', async () => {
    const id = idsA[2]!;
    truncateSync(repo.blockPath(id), 100);
    const r = await repo.cli('scrub', uidA);
    expect(r.code, r.output).toBe(20);
    expect(r.stderr).toMatch(new RegExp(`ERROR: stored size 100 differs .*Block\\(id=${id}`));
    expect(await valid(uidA)).toBe(0);
    await restoreFails(uidA, [6, 7]);
    put_back(id);
    expect((await repo.cli('scrub', uidA)).code).toBe(0);
    expect(await valid(uidA)).toBe(1);
  });

  test('a block file replaced by another valid object: restore verifies the block id (exit 7)', async () => {
    // Swap two stored objects: each is a well-formed object of this repository, but not of its id.
    const [x, y] = [idsA[1]!, idsA[2]!];
    copyFileSync(repo.path(`saved-${y}`), repo.blockPath(x));
    const r = await repo.cli('scrub', uidA);
    expect(r.code).toBe(20);
    await restoreFails(uidA, [7]);
    put_back(x);
    expect((await repo.cli('scrub', uidA)).code).toBe(0);
  });

  test('scrub -s file://SOURCE: 0 against the unchanged source, 20 against a modified one', async () => {
    const ok = await repo.cli('scrub', uidA, '-s', 'file://a.img');
    expect(ok.code, ok.output).toBe(0);

    copyFileSync(repo.path('a.img'), repo.path('a-mod.img'));
    overwriteBlock(repo.path('a-mod.img'), 1, BS, blockData('random', BS));
    overwriteBlock(repo.path('a-mod.img'), 3, BS, blockData('text', BS)); // was sparse
    const bad = await repo.cli('scrub', uidA, '-s', 'file://a-mod.img');
    expect(bad.code).toBe(20);
    expect(bad.stderr).toMatch(/Source mismatch at block 1 \(id/);
    expect(bad.stderr).toMatch(/Source mismatch at block 3 \(sparse in backup\)/);

    const missing = await repo.cli('scrub', uidA, '-s', 'file://nope.img');
    expect(missing.code).toBe(1);
  });

  test('scrub -p 50 checks about half of the distinct blocks', async () => {
    const many = await Repo.create({ blockSize: 4096 });
    try {
      makeImage(
        many.path('many.img'),
        Array.from({ length: 64 }, (_, i) => i + 100),
        4096,
      );
      const uid = await many.backup('many.img', 'many');
      const r = await many.cliG(['--json'], 'scrub', '-p', '50', uid);
      expect(r.code, r.output).toBe(0);
      const out = JSON.parse(r.stdout) as { checked: number; failures: unknown[] };
      expect(out.failures).toEqual([]);
      // Each of the 64 distinct blocks is picked with probability 1/2: all or none is 2^-64.
      expect(out.checked).toBeGreaterThan(0);
      expect(out.checked).toBeLessThan(64);
      const full = JSON.parse((await many.cliG(['--json'], 'scrub', uid)).stdout) as { checked: number };
      expect(full.checked).toBe(64);
      for (const p of ['0', '101', 'abc']) expect((await many.cli('scrub', '-p', p, uid)).code).toBe(1);
    } finally {
      many.remove();
    }
  });
});
