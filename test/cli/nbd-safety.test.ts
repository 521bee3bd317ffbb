/**
 * backy2 nbd keeps its promises: a served version is pinned (rm + cleanup -f while a client is
 * connected deletes none of its blocks), a block that fails verification is never served (EIO,
 * recorded as a scrub finding), block status lets nbdcopy skip sparse blocks (it reads only the
 * data), and command-line errors are one line with their exit code.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { flag, HOOK_TIMEOUT, makeImage, MiB, Repo } from '../support/cli.ts';
import { nbdStarted, RawNbd, tool } from '../support/nbd.ts';

const BS = MiB;
const EIO = 5;

/** Reads [offset, offset+length) with simple replies; returns the error and the bytes. */
async function readRange(c: RawNbd, offset: number, length: number, cookie: bigint): Promise<{ error: number; data: Buffer | null }> {
  c.request(0, offset, length, cookie);
  const reply = await c.simpleReply();
  if (!reply) throw new Error('connection closed');
  return { error: reply.error, data: reply.error ? null : await c.read(length) };
}

describe('backy2 nbd: pinning, verification, sparse blocks, command-line errors', { timeout: 240_000 }, () => {
  let repo: Repo;

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('rm --force + cleanup -f of a version a client is connected to deletes none of its blocks', async () => {
    const image = makeImage(repo.path('pinned.img'), [21, 22, 'zero', 23], BS);
    const uid = await repo.backup('pinned.img', 'pinned');
    const ids = (await repo.blockIdsOf(uid)).filter((id): id is string => id !== null);
    const server = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
    const c = await RawNbd.open(server.port);
    await c.greet();
    expect(await c.go(uid)).toBe(1);

    expect((await repo.cli('rm', '--force', uid)).code).toBe(0);
    const cleanup = await repo.cli('cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    for (const id of ids) expect(existsSync(repo.blockPath(id)), `block ${id}`).toBe(true);
    const all = await readRange(c, 0, image.length, 1n);
    expect(all.error).toBe(0);
    expect(all.data!.equals(image)).toBe(true);
    // A removed version is not offered to new connections.
    expect((await tool('nbdinfo', [server.url(uid)])).code).not.toBe(0);

    c.request(2, 0, 0);
    await server.cli.waitForStderr(/client disconnected[\s\S]*closed/);
    // The lease is gone with the last connection: now cleanup takes the blocks.
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    for (const id of ids) expect(existsSync(repo.blockPath(id)), `block ${id}`).toBe(false);
    expect((await server.stop()).code).toBe(0);
  });

  test('a block that fails verification: EIO for its range, a scrub finding, the rest still served', async () => {
    const image = makeImage(repo.path('bad.img'), [31, 32, 33], BS);
    const uid = await repo.backup('bad.img', 'bad');
    const [, badId] = (await repo.blockIdsOf(uid)) as string[];
    const stored = readFileSync(repo.blockPath(badId!));
    stored[stored.length - 5]! ^= 0xff;
    writeFileSync(repo.blockPath(badId!), stored);

    const server = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
    const copy = await tool('nbdcopy', [server.url(uid), repo.path('bad-copy.img')]);
    expect(copy.code).not.toBe(0);
    await server.cli.waitForStderr(new RegExp(`Block\\(id=${badId}, version_uid=${uid}, idx=1, size=${BS}\\)`));
    await server.cli.waitForStderr(new RegExp(`Marked version invalid \\(UID ${uid}\\)`));
    expect(flag((await repo.version(uid))!.valid)).toBe(0);

    const c = await RawNbd.open(server.port);
    await c.greet();
    expect(await c.go(uid)).toBe(1);
    const bad = await readRange(c, BS + 100, 4096, 1n);
    expect(bad.error).toBe(EIO);
    const good = await readRange(c, 2 * BS, BS, 2n);
    expect(good.error).toBe(0);
    expect(good.data!.equals(image.subarray(2 * BS))).toBe(true);
    c.close();
    expect((await server.stop()).code).toBe(0);
  });

  test('block status: nbdcopy reads only the data blocks of a mostly sparse version', async () => {
    const blocks = [41, ...Array<'zero'>(30).fill('zero'), 42] as const;
    const image = makeImage(repo.path('sparse.img'), [...blocks], BS);
    const uid = await repo.backup('sparse.img', 'sparse');
    const server = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
    const r = await tool('nbdcopy', [server.url(uid), repo.path('sparse-copy.img')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(repo.path('sparse-copy.img')).equals(image)).toBe(true);
    const stopped = await server.stop();
    const summaries = [...stopped.stderr.matchAll(/(\d+) reads \((\d+) bytes, (\d+) of them holes\), \d+ writes \(\d+ bytes\), (\d+) block status/g)];
    expect(summaries.length).toBeGreaterThan(0);
    const readBytes = summaries.reduce((sum, m) => sum + Number(m[2]), 0);
    const blockStatus = summaries.reduce((sum, m) => sum + Number(m[4]), 0);
    expect(blockStatus).toBeGreaterThan(0);
    expect(readBytes).toBe(2 * BS);
  });

  test('command-line errors: unknown uid 3, port in use 24, unbindable address 24, bad port 1; non-loopback warns', async () => {
    const unknown = await repo.cli('nbd', '-r', '-p', '0', 'ffffffff-0000-4000-8000-000000000000');
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/ERROR: Version ffffffff-0000-4000-8000-000000000000 not found/);

    const first = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
    const busy = await repo.cli('nbd', '-r', '-p', String(first.port));
    expect(busy.code).toBe(24);
    expect(busy.stderr).toMatch(new RegExp(`ERROR: Cannot listen on 127\\.0\\.0\\.1:${first.port}: the port is in use`));
    expect(busy.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect((await first.stop()).code).toBe(0);

    const nowhere = await repo.cli('nbd', '-r', '-a', '192.0.2.1', '-p', '0');
    expect(nowhere.code).toBe(24);
    expect(nowhere.stderr).toMatch(/ERROR: Cannot listen on 192\.0\.2\.1:0: no such address on this host/);

    const badPort = await repo.cli('nbd', '-p', 'http');
    expect(badPort.code).toBe(1);
    expect(badPort.stderr).toMatch(/Invalid --bind-port "http"/);

    const open = await nbdStarted(repo.startCli('nbd', '-r', '-a', '0.0.0.0', '-p', '0'));
    expect(open.cli.stderrSoFar()).toMatch(/WARNING: NBD traffic is not encrypted or authenticated/);
    expect((await open.stop()).code).toBe(0);
  });
});
