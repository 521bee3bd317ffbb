/**
 * backy2 nbd copy-on-write: writes through NBD (qemu-io, nbdcopy, a raw client) never change the
 * served version; on disconnect (or SIGTERM) they become a new committed version holding the
 * original's blocks plus the changed ones, and only the changed blocks are stored. `-d` keeps
 * nothing; a killed server leaves a pending version, never a committed one.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { blockData, flag, HOOK_TIMEOUT, makeImage, MiB, Repo } from '../support/cli.ts';
import { nbdStarted, RawNbd, tool, type RunningNbd } from '../support/nbd.ts';

const BS = MiB;

describe('backy2 nbd: copy-on-write', { timeout: 240_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  let originalIds: (string | null)[];

  const restored = async (version: string) => {
    const out = repo.path(`restored-${version}.img`);
    const r = await repo.cli('restore', version, `file://${out}`, '-f');
    expect(r.code, r.output).toBe(0);
    return readFileSync(out);
  };
  const committedCow = async (server: RunningNbd) => {
    await server.cli.waitForStderr(/Copy-on-write version [0-9a-f-]{36} committed/);
    return /Copy-on-write version ([0-9a-f-]{36}) committed/.exec(server.cli.stderrSoFar())![1]!;
  };

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    image = makeImage(repo.path('vm.img'), [1, 2, 'zero', 3, 4], BS);
    uid = await repo.backup('vm.img', 'vm1', '-s', 'snap-1');
    originalIds = await repo.blockIdsOf(uid);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('qemu-io writes: a new version with the written bytes, the original unchanged, only the changed block stored', async () => {
    const server = await nbdStarted(repo.startCli('nbd', '-p', '0'));
    const blocksBefore = repo.blockFiles().length;
    const r = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0xab ${BS + 4096} 8192`, '-c', `write -z ${3 * BS} ${BS}`, '-c', 'flush', server.url(uid)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const cowUid = await committedCow(server);
    expect((await server.stop()).code).toBe(0);

    const expected = Buffer.from(image);
    expected.fill(0xab, BS + 4096, BS + 4096 + 8192);
    expected.fill(0, 3 * BS, 4 * BS);
    expect((await restored(cowUid)).equals(expected)).toBe(true);
    expect((await restored(uid)).equals(image)).toBe(true);

    const ids = await repo.blockIdsOf(cowUid);
    expect(ids[0]).toBe(originalIds[0]);
    expect(ids[1]).not.toBe(originalIds[1]);
    expect(ids[2]).toBeNull();
    expect(ids[3]).toBeNull(); // zeroed: sparse, not stored
    expect(ids[4]).toBe(originalIds[4]);
    expect(repo.blockFiles().length).toBe(blocksBefore + 1);

    const row = (await repo.version(cowUid))!;
    expect(row.name).toBe(`nbd-cow-${uid}`);
    expect(row.snapshot_name).toBe('vm1');
    expect(row.tags).toBe('nbd-cow');
    expect(flag(row.valid)).toBe(1);
    const scrub = await repo.cli('scrub', cowUid);
    expect(scrub.code, scrub.output).toBe(0);
  });

  test('nbdcopy of an image that differs in one block: every block is written, one is stored', async () => {
    const modified = Buffer.from(image);
    blockData(77, BS).copy(modified, 4 * BS);
    writeFileSync(repo.path('modified.img'), modified);
    const server = await nbdStarted(repo.startCli('nbd', '-p', '0'));
    const blocksBefore = repo.blockFiles().length;
    const r = await tool('nbdcopy', [repo.path('modified.img'), server.url(uid)]);
    expect(r.code, r.stderr).toBe(0);
    const cowUid = await committedCow(server);
    expect((await server.stop()).code).toBe(0);
    expect((await restored(cowUid)).equals(modified)).toBe(true);
    expect((await restored(uid)).equals(image)).toBe(true);
    expect(repo.blockFiles().length).toBe(blocksBefore + 1);
  });

  test('-d: writes are read back within the connection, then dropped; no version, nothing stored', async () => {
    const server = await nbdStarted(repo.startCli('nbd', '-d', '-p', '0'));
    const before = { versions: (await repo.ls()).length, blocks: repo.blockFiles().length };
    const r = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0xcd 0 65536`, '-c', `read -P 0xcd 0 65536`, server.url(uid)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/read 65536\/65536 bytes/);
    await server.cli.waitForStderr(/1 changed blocks discarded/);
    expect((await server.stop()).code).toBe(0);
    expect((await repo.ls()).length).toBe(before.versions);
    expect(repo.blockFiles().length).toBe(before.blocks);
    expect((await restored(uid)).equals(image)).toBe(true);
  });

  test('SIGTERM with a writer still connected commits its changes, then exits 0', async () => {
    const server = await nbdStarted(repo.startCli('nbd', '-p', '0'));
    const c = await RawNbd.open(server.port);
    await c.greet();
    expect(await c.go(uid)).toBe(1);
    c.request(1, 0, 4096, 5n, Buffer.alloc(4096, 0x5a));
    expect((await c.simpleReply())!.error).toBe(0);
    const stopped = await server.stop('SIGTERM');
    expect(stopped.code, stopped.stderr).toBe(0);
    const cowUid = /Copy-on-write version ([0-9a-f-]{36}) committed/.exec(stopped.stderr)?.[1];
    expect(cowUid, stopped.stderr).toBeDefined();
    const expected = Buffer.from(image);
    expected.fill(0x5a, 0, 4096);
    expect((await restored(cowUid!)).equals(expected)).toBe(true);
  });

  test('a server killed after a write leaves a pending version, never a committed one; the next server removes its overlay', async () => {
    const cowDir = repo.path('cow');
    mkdirSync(cowDir);
    // An overlay of a server that is still running (this process stands in for it) must stay.
    const live = join(cowDir, `backy2-nbd-cow-${process.pid}-keep`);
    mkdirSync(live);
    const server = await nbdStarted(repo.startCli('nbd', '-p', '0', '--cow-dir', cowDir));
    const c = await RawNbd.open(server.port);
    await c.greet();
    expect(await c.go(uid)).toBe(1);
    c.request(1, 2 * BS, 4096, 6n, Buffer.alloc(4096, 0x66));
    expect((await c.simpleReply())!.error).toBe(0);
    await server.cli.waitForStderr(/copy-on-write version ([0-9a-f-]{36}) started/);
    const pendingUid = /copy-on-write version ([0-9a-f-]{36}) started/.exec(server.cli.stderrSoFar())![1]!;
    await server.stop('SIGKILL');
    c.close();
    const row = (await repo.version(pendingUid))!;
    expect(flag(row.valid)).toBe(0);
    const restore = await repo.cli('restore', pendingUid, `file://${repo.path('never.img')}`);
    expect(restore.code).toBe(4);
    expect((await restored(uid)).equals(image)).toBe(true);

    const left = readdirSync(cowDir).filter((n) => n !== basename(live));
    expect(left, 'the killed server left its overlay').toHaveLength(1);
    const next = await nbdStarted(repo.startCli('nbd', '-p', '0', '--cow-dir', cowDir));
    expect(next.cli.stderrSoFar()).toMatch(/Removed 1 copy-on-write overlays of NBD servers that were killed \(\d+ bytes\)/);
    expect(readdirSync(cowDir)).toEqual([basename(live)]);
    expect((await next.stop()).code).toBe(0);
  });
});
