/**
 * Block devices as source and target: loop devices over image files (needs root and losetup).
 * Skipped, with the reason in the test name, only where loop devices cannot be attached.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, writeFileSync, writeSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, blockData, flag, makeImage, MiB, Repo } from '../support/cli.ts';

/** Why loop devices cannot be used here, or null if they can. */
function loopUnavailable(): string | null {
  const version = spawnSync('losetup', ['--version'], { encoding: 'utf8' });
  if (version.error) return `losetup not available (${version.error.message})`;
  const dir = mkdtempSync(join(tmpdir(), 'backy2-loop-probe-'));
  try {
    writeFileSync(join(dir, 'probe.img'), Buffer.alloc(MiB));
    const attach = spawnSync('losetup', ['-f', '--show', join(dir, 'probe.img')], { encoding: 'utf8' });
    if (attach.status !== 0) return `losetup cannot attach a loop device: ${(attach.stderr || attach.error?.message || '').trim()}`;
    spawnSync('losetup', ['-d', attach.stdout.trim()]);
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const unavailable = loopUnavailable();
if (unavailable) console.warn(`SKIPPING block device tests: ${unavailable}`);

function attach(file: string): string {
  const r = spawnSync('losetup', ['-f', '--show', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`losetup -f --show ${file}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Reads a whole device (stat() reports size 0 for block devices, so read `size` bytes explicitly). */
function readDevice(dev: string, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const fd = openSync(dev, 'r');
  try {
    for (let got = 0; got < size; ) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) throw new Error(`${dev}: short read at ${got}`);
      got += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

function writeDevice(dev: string, data: Buffer, position: number): void {
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, data, 0, data.length, position);
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(unavailable !== null)(`block devices via loop devices${unavailable ? ` — SKIPPED: ${unavailable}` : ''}`, { timeout: 90_000 }, () => {
  const SIZE = 12 * MiB;
  const loops: string[] = [];
  let repo: Repo;
  let image: Buffer;
  let src: string;
  let dst: string;
  let small: string;
  let uid: string;

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: MiB });
    image = makeImage(repo.path('src.img'), ['random', 'zero', 'text', 'random', 'zero', 'zero', 'random', 1, 1, 'zero', 'random', 'text'], MiB);
    writeFileSync(repo.path('dst.img'), randomBytes(SIZE));
    writeFileSync(repo.path('small.img'), randomBytes(4 * MiB));
    for (const f of ['src.img', 'dst.img', 'small.img']) loops.push(attach(repo.path(f)));
    [src, dst, small] = loops as [string, string, string];
  }, HOOK_TIMEOUT);

  afterAll(() => {
    for (const dev of loops) spawnSync('losetup', ['-d', dev]);
    repo?.remove();
  });

  test('backup of file:///dev/loopN; ls shows the device size; scrub -s against the device is clean', async () => {
    const r = await repo.cliG(['--json'], 'backup', `file://${src}`, 'loopdev');
    expect(r.code, r.output).toBe(0);
    const out = JSON.parse(r.stdout) as { uid: string; stats: { blocksSparse: number; blocksWritten: number; blocksDedup: number } };
    uid = out.uid;
    // 4 zero blocks; 'text' and seed 1 each appear twice.
    expect(out.stats).toMatchObject({ blocksSparse: 4, blocksWritten: 6, blocksDedup: 2 });
    expect(repo.blockFiles()).toHaveLength(6);
    const row = (await repo.version(uid))!;
    expect([Number(row.size), Number(row.size_bytes), flag(row.valid)]).toEqual([12, SIZE, 1]);
    expect((await repo.cli('scrub', uid, '-s', `file://${src}`)).code).toBe(0);
  });

  test('restore onto an existing device is refused without --force and leaves it untouched', async () => {
    const before = readDevice(dst, SIZE);
    const r = await repo.cli('restore', uid, `file://${dst}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Target already exists: file://${dst}`);
    expect(readDevice(dst, SIZE).equals(before)).toBe(true);
  });

  test('restore --force onto a second loop device is bit-exact, zero regions included', async () => {
    const r = await repo.cli('restore', '--force', uid, `file://${dst}`);
    expect(r.code, r.output).toBe(0);
    expect(readDevice(dst, SIZE).equals(image)).toBe(true);
  });

  test('restore to a file is bit-exact', async () => {
    const r = await repo.cli('restore', uid, 'file://from-device.img');
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path('from-device.img')).equals(image)).toBe(true);
  });

  test('restore -s -f onto a device writes the data blocks and skips the sparse ones', async () => {
    writeDevice(dst, Buffer.alloc(SIZE, 0xff), 0);
    const r = await repo.cli('restore', '-s', '-f', uid, `file://${dst}`);
    expect(r.code, r.output).toBe(0);
    const got = readDevice(dst, SIZE);
    for (let i = 0; i < 12; i++) {
      const block = got.subarray(i * MiB, (i + 1) * MiB);
      const want = image.subarray(i * MiB, (i + 1) * MiB);
      if (want.equals(Buffer.alloc(MiB))) expect(block.equals(Buffer.alloc(MiB, 0xff)), `block ${i}`).toBe(true);
      else expect(block.equals(want), `block ${i}`).toBe(true);
    }
  });

  test('a device too small for the version is refused and untouched', async () => {
    const before = readDevice(small, 4 * MiB);
    const r = await repo.cli('restore', '-f', uid, `file://${small}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/too small/);
    expect(readDevice(small, 4 * MiB).equals(before)).toBe(true);
  });

  test('an incremental backup of the changed device writes only the changed block', async () => {
    const changed = blockData('random', MiB);
    writeDevice(src, changed, 5 * MiB);
    const r = await repo.cliG(['--json'], 'backup', `file://${src}`, 'loopdev', '-f', uid);
    expect(r.code, r.output).toBe(0);
    const out = JSON.parse(r.stdout) as { uid: string; stats: { blocksWritten: number } };
    expect(out.stats.blocksWritten).toBe(1);
    const expected = Buffer.from(image);
    changed.copy(expected, 5 * MiB);
    expect((await repo.cli('restore', '-f', out.uid, `file://${dst}`)).code).toBe(0);
    expect(readDevice(dst, SIZE).equals(expected)).toBe(true);
  });
});
