/**
 * backy2 nbd against clients that break the rules: garbage, a close mid-handshake, an unknown
 * export, reads and writes past the end, oversized requests, a disconnect in the middle of a
 * write. Each gets the protocol's error or a closed connection; the server keeps serving (a real
 * nbdcopy afterwards is bit-exact) and no version changes or appears.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, MiB, Repo } from '../support/cli.ts';
import { nbdStarted, RawNbd, tool, type RunningNbd } from '../support/nbd.ts';

const BS = MiB;
const EPERM = 1;
const EINVAL = 22;
const ENOSPC = 28;
const EOVERFLOW = 75;
const REP_ERR_UNKNOWN = 2 ** 31 + 6;
const REP_ERR_UNSUP = 2 ** 31 + 1;
const REP_ERR_INVALID = 2 ** 31 + 3;
const CMD = { READ: 0, WRITE: 1, DISC: 2, TRIM: 4 };

describe('backy2 nbd: bad input never crashes the server or changes a version', { timeout: 180_000 }, () => {
  let repo: Repo;
  let image: Buffer;
  let uid: string;
  let ro: RunningNbd;
  let cow: RunningNbd;

  /** The server still serves: a real client copies the version bit-exact. */
  const stillServing = async (server: RunningNbd) => {
    const out = repo.path(`check-${Date.now()}.img`);
    const r = await tool('nbdcopy', [server.url(uid), out]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(image)).toBe(true);
  };
  const connected = async (server: RunningNbd, name = uid) => {
    const c = await RawNbd.open(server.port);
    await c.greet();
    expect(await c.go(name)).toBe(1); // NBD_REP_ACK
    return c;
  };

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    image = makeImage(repo.path('vm.img'), [1, 2, 'zero', 3], BS);
    uid = await repo.backup('vm.img', 'vm1');
    ro = await nbdStarted(repo.startCli('nbd', '-r', '-p', '0'));
    cow = await nbdStarted(repo.startCli('nbd', '-p', '0'));
  }, HOOK_TIMEOUT);
  afterAll(async () => {
    for (const s of [ro, cow]) if (s?.cli.child.exitCode === null) await s.stop();
    repo.remove();
  });

  test('garbage instead of the client flags, and a bad option magic: the connection is closed', async () => {
    const a = await RawNbd.open(ro.port);
    expect(await a.read(18)).not.toBeNull();
    a.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await a.closedByServer()).toBe(true);
    const b = await RawNbd.open(ro.port);
    await b.greet();
    b.write(Buffer.alloc(64, 0x41));
    expect(await b.closedByServer()).toBe(true);
    await stillServing(ro);
  });

  test('a close in the middle of the handshake or of an option', async () => {
    const a = await RawNbd.open(ro.port);
    a.write(Buffer.from([0, 0]));
    a.close();
    const b = await RawNbd.open(ro.port);
    await b.greet();
    b.write(Buffer.concat([Buffer.from('IHAVEOPT', 'latin1'), Buffer.from([0, 0, 0, 7, 0, 0, 1, 0]), Buffer.alloc(10)]));
    b.close();
    await stillServing(ro);
  });

  test('an unknown export: NBD_REP_ERR_UNKNOWN for GO; the same connection can still choose a real one', async () => {
    const c = await RawNbd.open(ro.port);
    await c.greet();
    expect(await c.go('no-such-version')).toBe(REP_ERR_UNKNOWN);
    expect(await c.go('')).toBe(REP_ERR_UNKNOWN);
    c.option(99);
    expect((await c.optionReply())!.type).toBe(REP_ERR_UNSUP);
    c.option(7, Buffer.from([0, 0, 0, 200, 1, 2])); // a name longer than the option
    expect((await c.optionReply())!.type).toBe(REP_ERR_INVALID);
    expect(await c.go(uid)).toBe(1);
    c.request(CMD.READ, 0, 4096);
    expect((await c.simpleReply())!.error).toBe(0);
    expect((await c.read(4096))!.equals(image.subarray(0, 4096))).toBe(true);
    c.request(CMD.DISC, 0, 0);
    expect(await c.closedByServer()).toBe(true);
    const info = await tool('nbdinfo', [ro.url('no-such-version')]);
    expect(info.code).not.toBe(0);
  });

  test('NBD_OPT_EXPORT_NAME (the old way in): an unknown name ends the session, a known one enters transmission', async () => {
    const bad = await RawNbd.open(ro.port);
    await bad.greet();
    bad.option(1, Buffer.from('no-such-version'));
    expect(await bad.closedByServer()).toBe(true);
    const good = await RawNbd.open(ro.port);
    await good.greet();
    good.option(1, Buffer.from(uid));
    const reply = (await good.read(10))!; // size and flags; no 124 zero bytes (the client asked for none)
    expect(Number(reply.readBigUInt64BE(0))).toBe(image.length);
    expect(reply.readUInt16BE(8) & 0b11).toBe(0b11); // HAS_FLAGS | READ_ONLY
    good.request(CMD.READ, 3 * BS, 100, 9n);
    expect(await good.simpleReply()).toEqual({ error: 0, cookie: 9n });
    expect((await good.read(100))!.equals(image.subarray(3 * BS, 3 * BS + 100))).toBe(true);
    good.close();
  });

  test('reads and writes past the end, writes to a read-only export, oversized reads: errors, connection kept', async () => {
    const c = await connected(ro);
    c.request(CMD.READ, image.length - 100, 4096, 11n);
    expect(await c.simpleReply()).toEqual({ error: EINVAL, cookie: 11n });
    c.request(CMD.READ, 2 ** 62, 512, 12n);
    expect(await c.simpleReply()).toEqual({ error: EINVAL, cookie: 12n });
    c.request(CMD.WRITE, 0, 512, 13n, Buffer.alloc(512, 1));
    expect(await c.simpleReply()).toEqual({ error: EPERM, cookie: 13n });
    c.request(CMD.READ, 0, 64 * MiB, 14n);
    expect(await c.simpleReply()).toEqual({ error: EOVERFLOW, cookie: 14n });
    c.request(42, 0, 0, 15n);
    expect(await c.simpleReply()).toEqual({ error: EINVAL, cookie: 15n });
    c.request(CMD.READ, BS, 512, 16n);
    expect(await c.simpleReply()).toEqual({ error: 0, cookie: 16n });
    expect((await c.read(512))!.equals(image.subarray(BS, BS + 512))).toBe(true);
    c.close();

    const w = await connected(cow);
    w.request(CMD.WRITE, image.length - 10, 512, 21n, Buffer.alloc(512, 2));
    expect(await w.simpleReply()).toEqual({ error: ENOSPC, cookie: 21n });
    w.request(CMD.TRIM, image.length, 4096, 22n);
    expect(await w.simpleReply()).toEqual({ error: EINVAL, cookie: 22n });
    w.close();
    await stillServing(ro);
  });

  test('a write payload larger than the protocol allows closes the connection', async () => {
    const c = await connected(cow);
    c.request(CMD.WRITE, 0, 64 * MiB, 31n);
    c.write(Buffer.alloc(MiB));
    expect(await c.closedByServer()).toBe(true);
    await stillServing(cow);
  });

  test('a disconnect in the middle of a write: nothing is written, no version is created', async () => {
    const c = await connected(cow);
    c.request(CMD.WRITE, 0, BS, 41n);
    c.write(Buffer.alloc(BS / 2, 7));
    c.close();
    await stillServing(cow);
    // Wait for the server to log the close, then check that the repository holds only the original.
    await cow.cli.waitForStderr(/closed with \d+ of \d+ bytes of a message/);
    const versions = await repo.ls();
    expect(versions.map((v) => v.uid)).toEqual([uid]);
  });

  test('after all of it both servers stop cleanly', async () => {
    for (const s of [ro, cow]) {
      const r = await s.stop();
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/Unexpected exception|TypeError|RangeError/);
    }
    expect((await repo.ls()).map((v) => v.uid)).toEqual([uid]);
  });
});
