/**
 * backy2 nbd against real NBD clients (libnbd's nbdcopy and nbdinfo): versions are served
 * bit-exact, listed with their description, sparse blocks reported as holes.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, MiB, Repo } from '../support/cli.ts';
import { nbdStarted, tool, type RunningNbd } from '../support/nbd.ts';

const BS = MiB;

describe('backy2 nbd -r: serving versions read-only', { timeout: 120_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  let other: string;
  let nbd: RunningNbd;

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    image = makeImage(repo.path('vm.img'), [1, 'zero', 'zero', 2, 'text', 'zero', 3], BS, { spec: 4, bytes: 300_000 });
    uid = await repo.backup('vm.img', 'vm1', '-s', 'snap-monday');
    makeImage(repo.path('other.img'), [5, 6], BS);
    other = await repo.backup('other.img', 'vm2');
    nbd = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
  }, HOOK_TIMEOUT);
  afterAll(async () => {
    if (nbd?.cli.child.exitCode === null) await nbd.stop();
    repo.remove();
  });

  test('nbdcopy copies a version back bit-exact (by uid and by a unique uid prefix)', async () => {
    const r = await tool('nbdcopy', [nbd.url(uid), repo.path('copy.img')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(repo.path('copy.img')).equals(image)).toBe(true);
    const byPrefix = await tool('nbdcopy', [nbd.url(other.slice(0, 8)), repo.path('other-copy.img')]);
    expect(byPrefix.code, byPrefix.stderr).toBe(0);
    expect(readFileSync(repo.path('other-copy.img')).equals(readFileSync(repo.path('other.img')))).toBe(true);
  });

  test('nbdinfo --list shows every committed version with name, snapshot name and date', async () => {
    const r = await tool('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${nbd.port}`]);
    expect(r.code, r.stderr).toBe(0);
    const exports = (JSON.parse(r.stdout) as { exports: { 'export-name': string; description: string; 'export-size': number; is_read_only: boolean }[] })
      .exports;
    expect(exports.map((e) => e['export-name']).sort()).toEqual([uid, other].sort());
    const vm1 = exports.find((e) => e['export-name'] === uid)!;
    expect(vm1.description).toMatch(/^vm1 \(snap-monday\) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(vm1['export-size']).toBe(image.length);
    expect(vm1.is_read_only).toBe(true);
  });

  test('block status (base:allocation) reports sparse blocks as holes', async () => {
    const r = await tool('nbdinfo', ['--map', '--json', nbd.url(uid)]);
    expect(r.code, r.stderr).toBe(0);
    const map = JSON.parse(r.stdout) as { offset: number; length: number; type: number }[];
    const holes = map.filter((e) => e.type === 3).map((e) => [e.offset / BS, e.length / BS]);
    expect(holes).toEqual([
      [1, 2],
      [5, 1],
    ]);
  });

  test('with a cache smaller than a block, blocks are evicted and their memory reused while replies are in flight: still bit-exact', async () => {
    // Many distinct 2 MiB blocks, four connections with many requests each, a cache that holds none
    // of them, little read-ahead: blocks are fetched (and memory reused) all through the copy.
    const big = await Repo.create({ blockSize: 2 * MiB });
    const small = await (async () => {
      const many = makeImage(
        big.path('many.img'),
        Array.from({ length: 48 }, (_, i) => (i % 5 === 4 ? 'zero' : i % 7 === 0 ? 'text' : 'random')),
        2 * MiB,
      );
      const manyUid = await big.backup('many.img', 'vm3');
      return { many, manyUid, nbd: await nbdStarted(big.startCli('nbd', '-r', '-p', '0', '--cache-mib', '1', '--read-ahead', '2')) };
    })();
    try {
      for (let round = 0; round < 2; round++) {
        const r = await tool('nbdcopy', [
          '--connections=4',
          '--requests=32',
          '--request-size=65536',
          small.nbd.url(small.manyUid),
          big.path(`many-copy-${round}.img`),
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(readFileSync(big.path(`many-copy-${round}.img`)).equals(small.many)).toBe(true);
      }
    } finally {
      await small.nbd.stop();
      big.remove();
    }
  });

  test('the server logs each connection; SIGTERM stops it cleanly (exit 0)', async () => {
    expect(nbd.cli.stderrSoFar()).toMatch(/NBD connection \d+ from 127\.0\.0\.1:\d+/);
    expect(nbd.cli.stderrSoFar()).toContain(`serving ${uid} read-only`);
    const stopped = await nbd.stop();
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toContain('Stopping the NBD server');
  });
});
