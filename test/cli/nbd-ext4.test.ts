/**
 * The way in without a kernel module: a backed-up ext4 image served by backy2 nbd, exposed as a
 * file by nbdfuse (libnbd), checked by e2fsck -fn, and a known file read through fuse2fs -o ro.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, MiB, Repo, seeded } from '../support/cli.ts';
import { nbdStarted, tool, type RunningNbd } from '../support/nbd.ts';

async function waitFor(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * fusermount3 -u, tried again while the mount is busy: right after the last read the kernel can
 * still hold the FUSE file system for a moment (exit 1, "Device or resource busy" under load).
 */
async function unmount(dir: string, timeoutMs = 10_000): Promise<{ code: number; stderr: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await tool('fusermount3', ['-u', dir]);
    if (r.code === 0 || Date.now() > deadline) return r;
    await sleep(200);
  }
}

const mounted = (dir: string) =>
  readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === dir);

describe('backy2 nbd + nbdfuse + e2fsck + fuse2fs: files out of a backed-up ext4 image', { timeout: 180_000 }, () => {
  let repo: Repo;
  let uid: string;
  let nbd: RunningNbd;
  let nbdfuse: ChildProcess | null = null;
  const hello = 'backy2 nbd: a file read straight out of the backup\n';
  const big = seeded(99, 3 * MiB + 123);

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: MiB });
    const tree = repo.path('tree');
    mkdirSync(repo.path('tree/etc'), { recursive: true });
    writeFileSync(repo.path('tree/etc/hello.txt'), hello);
    writeFileSync(repo.path('tree/big.bin'), big);
    const mkfs = await tool('mkfs.ext4', ['-q', '-F', '-d', tree, repo.path('fs.img'), '24M']);
    expect(mkfs.code, mkfs.stderr).toBe(0);
    uid = await repo.backup('fs.img', 'fs');
    nbd = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
  }, HOOK_TIMEOUT);

  afterAll(async () => {
    for (const dir of ['fs-mnt', 'nbd-mnt']) if (mounted(repo.path(dir))) await unmount(repo.path(dir));
    nbdfuse?.kill();
    if (nbd?.cli.child.exitCode === null) await nbd.stop();
    repo.remove();
  });

  test('e2fsck -fn finds the file system clean; fuse2fs -o ro reads the files bit-exact', async () => {
    const nbdMnt = repo.path('nbd-mnt');
    mkdirSync(nbdMnt);
    nbdfuse = spawn('nbdfuse', ['-r', nbdMnt, nbd.url(uid)], { stdio: 'ignore' });
    await waitFor('nbdfuse to expose the export', () => existsSync(`${nbdMnt}/nbd`));
    expect(readFileSync(`${nbdMnt}/nbd`).equals(readFileSync(repo.path('fs.img')))).toBe(true);

    const fsck = await tool('e2fsck', ['-fn', `${nbdMnt}/nbd`]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    expect(fsck.stdout).toMatch(/\d+\/\d+ files/);

    const fsMnt = repo.path('fs-mnt');
    mkdirSync(fsMnt);
    const mount = await tool('fuse2fs', [`${nbdMnt}/nbd`, fsMnt, '-o', 'ro,fakeroot']);
    expect(mount.code, mount.stderr).toBe(0);
    await waitFor('fuse2fs to mount', () => existsSync(`${fsMnt}/etc/hello.txt`));
    expect(readFileSync(`${fsMnt}/etc/hello.txt`, 'utf8')).toBe(hello);
    expect(readFileSync(`${fsMnt}/big.bin`).equals(big)).toBe(true);
    const fsUnmounted = await unmount(fsMnt);
    expect(fsUnmounted.code, fsUnmounted.stderr).toBe(0);
    const nbdUnmounted = await unmount(nbdMnt);
    expect(nbdUnmounted.code, nbdUnmounted.stderr).toBe(0);
    expect(nbd.cli.stderrSoFar()).toMatch(new RegExp(`serving ${uid} read-only`));
  });
});
