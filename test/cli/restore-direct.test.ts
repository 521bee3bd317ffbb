/**
 * A restore writes its blocks with O_DIRECT where the target allows it (agent/io/direct.ts): the
 * bytes must be the same as through the page cache, the restored image must not be left in the
 * page cache (what O_DIRECT is for: no copy into it, no writeback of it, the host's cache kept),
 * and BACKY2_DIRECT_IO=0 must write through the page cache as before. `fincore` (util-linux)
 * counts a file's pages in the page cache.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, Repo, runCli, type BlockSpec } from '../support/cli.ts';

const BS = 256 * 1024;
const COUNT = 40;
// Every 4th block sparse, the rest distinct data, and a short last block (written through the page cache).
const SPECS: BlockSpec[] = Array.from({ length: COUNT }, (_, i) => (i % 4 === 0 ? 'zero' : 3000 + i));
const TAIL = 5000;

/** Bytes of `path` in the page cache. */
function cachedBytes(path: string): number {
  const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' });
  return Number(out.trim());
}

describe('restore with O_DIRECT', { timeout: 90_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  const dataBytes = SPECS.filter((s) => s !== 'zero').length * BS;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, simultaneousReads: 4, simultaneousWrites: 4 });
    image = makeImage(repo.path('src.img'), SPECS, BS, { spec: 7000, bytes: TAIL });
    uid = await repo.backup('src.img', 'direct');
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('restores bit-exact without leaving the image in the page cache, and leaves no probe file behind', async () => {
    const r = await repo.cli('-d', 'restore', uid, 'file://direct.img');
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toMatch(/Blocks are written with O_DIRECT where aligned/);
    // At most the preflight's block and the short tail go through the page cache.
    expect(cachedBytes(repo.path('direct.img'))).toBeLessThanOrEqual(2 * BS);
    expect(readFileSync(repo.path('direct.img')).equals(image)).toBe(true);
    expect(readdirSync(repo.dir).filter((f) => f.includes('backy2-probe') || f.includes('backy2-partial'))).toEqual([]);
  });

  test('BACKY2_DIRECT_IO=0 writes through the page cache, bit-exact', async () => {
    const r = await runCli(['-c', repo.configPath, '-d', 'restore', uid, 'file://cached.img'], {
      cwd: repo.dir,
      env: { ...repo.env(), BACKY2_DIRECT_IO: '0' },
    });
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toMatch(/Blocks are written through the page cache/);
    expect(cachedBytes(repo.path('cached.img'))).toBeGreaterThanOrEqual(dataBytes);
    expect(readFileSync(repo.path('cached.img')).equals(image)).toBe(true);
  });

  test('onto a block device (a loop device): bit-exact, sparse blocks zeroed over old data', async () => {
    const backing = repo.path('disk.img');
    // Old data everywhere: a restore without -s must zero the sparse blocks.
    makeImage(
      backing,
      Array.from({ length: COUNT + 1 }, (_, i) => 9000 + i),
      BS,
    );
    const device = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    try {
      const r = await repo.cli('-d', 'restore', '-f', uid, `file://${device}`);
      expect(r.code, r.output).toBe(0);
      expect(r.stderr).toMatch(/Blocks are written with O_DIRECT where aligned/);
      const restored = readFileSync(device).subarray(0, image.length);
      expect(restored.equals(image)).toBe(true);
    } finally {
      execFileSync('losetup', ['-d', device]);
    }
  });
});
