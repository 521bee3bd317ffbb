/**
 * backy2 nbd in cloud mode: blocks from S3, metadata from DynamoDB with the agent's rights, the
 * served-version lease and the copy-on-write version's commands through the api function, its
 * block records through SQS → ingest. Real NBD clients: nbdcopy, nbdinfo, qemu-io. Blocks are
 * read on the codec threads (presigned GETs, through a fault-injecting proxy in the last case).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawNbd, tool } from '../support/nbd.ts';
import { CloudCli, type CloudRun } from './cloud-cli.ts';
import { testStack } from './context.ts';
import { FaultProxy, isBlockObject, onceAfter, type ProxiedRequest } from './fault-proxy.ts';

const BS = 65536;

interface CloudNbd {
  port: number;
  url: (name: string) => string;
  stderr: () => string;
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<void>;
  stop: () => Promise<CloudRun>;
}

async function startNbd(cli: CloudCli, ...args: string[]): Promise<CloudNbd> {
  const { child, result } = cli.start('nbd', '-p', '0', ...args);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const waitFor = async (re: RegExp, timeoutMs = 120_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(stderr)) {
      if (child.exitCode !== null) throw new Error(`backy2 nbd ended before ${re}: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  await waitFor(/NBD server listening on [^ ]+:\d+/);
  const port = Number(/NBD server listening on [^ ]+:(\d+)/.exec(stderr)![1]);
  return {
    port,
    url: (name) => `nbd://127.0.0.1:${port}/${name}`,
    stderr: () => stderr,
    waitFor,
    stop: async () => {
      child.kill('SIGTERM');
      return result;
    },
  };
}

describe('cloud mode: backy2 nbd', () => {
  let cli: CloudCli;
  let image: Buffer;
  let uid: string;
  let ro: CloudNbd;

  beforeAll(async () => {
    cli = new CloudCli([`block_size: ${BS}`, 'disallow_rm_when_younger_than_days: 0']);
    const blocks: Buffer[] = [];
    for (let i = 0; i < 12; i++) blocks.push(i % 5 === 2 ? Buffer.alloc(BS) : randomBytes(BS));
    image = Buffer.concat([...blocks, randomBytes(4321)]);
    writeFileSync(cli.path('v.img'), image);
    uid = await cli.backup('file://v.img', `nbd-${randomBytes(3).toString('hex')}`);
    ro = await startNbd(cli, '-r');
  }, 600_000);
  afterAll(async () => {
    await ro?.stop();
  });

  it('nbdcopy copies the version bit-exact; nbdinfo --list shows it', async () => {
    const r = await tool('nbdcopy', [ro.url(uid), cli.path('copy.img')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(cli.path('copy.img')).equals(image)).toBe(true);
    const list = await tool('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${ro.port}`]);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name'])).toContain(uid);
  }, 180_000);

  it('copy-on-write: a qemu-io write becomes a new committed version; the original restores unchanged', async () => {
    const cow = await startNbd(cli);
    const w = await tool('qemu-io', ['-f', 'raw', '-c', `write -P 0x3c ${BS + 100} 5000`, cow.url(uid)]);
    expect(w.code, w.stderr + w.stdout).toBe(0);
    await cow.waitFor(/Copy-on-write version [0-9a-f-]{36} committed/, 300_000);
    const cowUid = /Copy-on-write version ([0-9a-f-]{36}) committed/.exec(cow.stderr())![1]!;
    expect((await cow.stop()).code).toBe(0);
    const expected = Buffer.from(image);
    expected.fill(0x3c, BS + 100, BS + 5100);
    expect((await cli.run('restore', cowUid, 'file://cow.img')).code).toBe(0);
    expect(readFileSync(cli.path('cow.img')).equals(expected)).toBe(true);
    expect((await cli.run('restore', uid, 'file://orig.img')).code).toBe(0);
    expect(readFileSync(cli.path('orig.img')).equals(image)).toBe(true);
  }, 600_000);

  it('a connected client keeps reading after rm --force + cleanup -f of its version (the lease, via the api function)', async () => {
    // A fresh server: nothing of the version is in its cache, every block is read from S3 after the cleanup.
    const fresh = await startNbd(cli, '-r');
    const c = await RawNbd.open(fresh.port);
    await c.greet();
    expect(await c.go(uid)).toBe(1);
    const rm = await cli.run('rm', '--force', uid);
    expect(rm.code, rm.stderr).toBe(0);
    const cleanup = await cli.run('cleanup', '-f');
    expect(cleanup.code, cleanup.stderr).toBe(0);
    c.request(0, 0, image.length, 1n);
    expect((await c.simpleReply())!.error).toBe(0);
    expect((await c.read(image.length, 120_000))!.equals(image)).toBe(true);
    c.close();
    expect((await fresh.stop()).code).toBe(0);
  }, 600_000);
});

describe('cloud mode: backy2 nbd reads blocks on the codec threads', () => {
  const bucket = testStack().outputs.BucketName;
  let proxy: FaultProxy;
  afterAll(async () => {
    await proxy?.close();
  });

  it('every block is read once by a codec thread; a body damaged on its way is read again through the S3 client, served bit-exact, and marks nothing invalid', async () => {
    proxy = await FaultProxy.start(testStack().endpoint);
    const cli = new CloudCli([`block_size: ${BS}`], undefined, proxy.url);
    const image = randomBytes(10 * BS);
    writeFileSync(cli.path('t.img'), image);
    const uid = await cli.backup('file://t.img', `nbd-threads-${randomBytes(3).toString('hex')}`);
    proxy.heal();
    // A presigned GET is signed in its query, the S3 client's in its headers.
    const threadGet = (req: ProxiedRequest) => isBlockObject(req, bucket, 'GET') && req.path.includes('X-Amz-Signature=');
    const clientGet = (req: ProxiedRequest) => isBlockObject(req, bucket, 'GET') && !req.path.includes('X-Amz-Signature=');
    proxy.inject(onceAfter(3, threadGet, { corrupt: 'body' }));
    const server = await startNbd(cli, '-r');
    const r = await tool('nbdcopy', [server.url(uid), cli.path('t.copy')]);
    const stopped = await server.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(cli.path('t.copy')).equals(image)).toBe(true);
    expect(proxy.count('corrupt-body')).toBe(1);
    expect(proxy.requests.filter((q) => threadGet(q.req)).length).toBe(10);
    expect(proxy.requests.filter((q) => clientGet(q.req)).length).toBe(1);
    expect(stopped.stderr).not.toMatch(/ERROR:|Marked (block|version) invalid/);
    const versions = await cli.json<{ uid: string; valid: number }[]>('ls');
    expect(versions.find((v) => v.uid === uid)?.valid).toBe(1);
  }, 600_000);
});
