/**
 * The restore pipeline keeps many blocks in flight; these check what that must not change:
 * after a failed read mid-way, the blocks reported as restored (for -c) really are on disk and
 * the resume completes bit-exact; `restore -s` leaves sparse regions of an existing target
 * untouched (it skips them, it does not write zeros), while a restore without -s zeroes them.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, Repo, type BlockSpec } from '../support/cli.ts';

const BS = 64 * 1024;
const COUNT = 48;
// Mixed blocks: every 3rd sparse, the rest distinct (compressible or not).
const SPECS: BlockSpec[] = Array.from({ length: COUNT }, (_, i) => (i % 3 === 0 ? 'zero' : i % 3 === 1 ? 1000 + i : 'text'));
SPECS.forEach((s, i) => {
  if (s === 'text') SPECS[i] = 2000 + i; // distinct, so every data block is a stored object of its own
});

describe('restore pipeline', { timeout: 90_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  let ids: (string | null)[];
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, simultaneousReads: 4, simultaneousWrites: 4 });
    image = makeImage(repo.path('src.img'), SPECS, BS);
    uid = await repo.backup('src.img', 'pipeline');
    ids = await repo.blockIdsOf(uid);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('a read failure mid-way: no target appears, and every block reported as kept is on disk', async () => {
    const bad = 31; // a data block (31 % 3 === 1)
    const path = repo.blockPath(ids[bad]!);
    renameSync(path, `${path}.away`);
    mkdirSync(path); // reading it fails (EISDIR): a storage read error, which may pass
    try {
      const r = await repo.cli('restore', uid, 'file://out.img');
      expect(r.code, r.output).toBe(6);
      const m = /Blocks up to (\d+) are kept in (\S+): resume with -c (\d+)/.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      const kept = Number(m![1]);
      expect(kept).toBeLessThan(bad);
      expect(Number(m![3])).toBe(kept + 1);
      expect(existsSync(repo.path('out.img'))).toBe(false);
      const partial = readFileSync(m![2]!);
      expect(partial.subarray(0, (kept + 1) * BS).equals(image.subarray(0, (kept + 1) * BS))).toBe(true);
    } finally {
      rmSync(path, { recursive: true });
      renameSync(`${path}.away`, path);
    }
  });

  test('-c resumes the kept partial restore and the result is bit-exact', async () => {
    const bad = 40;
    const path = repo.blockPath(ids[bad]!);
    renameSync(path, `${path}.away`);
    mkdirSync(path);
    let from: number;
    try {
      const r = await repo.cli('restore', uid, 'file://resumed.img');
      expect(r.code, r.output).toBe(6);
      from = Number(/resume with -c (\d+)/.exec(r.stderr)![1]);
    } finally {
      rmSync(path, { recursive: true });
      renameSync(`${path}.away`, path);
    }
    const r = await repo.cli('restore', '-c', String(from), uid, 'file://resumed.img');
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path('resumed.img')).equals(image)).toBe(true);
  });

  test('restore -s into an existing target skips sparse blocks; without -s they are written as zeros', async () => {
    const filler = Buffer.alloc(image.length, 0x5a);
    writeFileSync(repo.path('inplace.img'), filler);
    // -c 0 restores in place into the existing file (as onto a block device).
    const skipped = await repo.cli('restore', '-s', '-c', '0', uid, 'file://inplace.img');
    expect(skipped.code, skipped.output).toBe(0);
    const after = readFileSync(repo.path('inplace.img'));
    for (let i = 0; i < COUNT; i++) {
      const got = after.subarray(i * BS, (i + 1) * BS);
      if (ids[i] === null) expect(got.equals(filler.subarray(0, BS)), `sparse block ${i} was written`).toBe(true);
      else expect(got.equals(image.subarray(i * BS, (i + 1) * BS)), `block ${i}`).toBe(true);
    }
    const zeroed = await repo.cli('restore', '-c', '0', uid, 'file://inplace.img');
    expect(zeroed.code, zeroed.output).toBe(0);
    expect(readFileSync(repo.path('inplace.img')).equals(image)).toBe(true);
  });
});
