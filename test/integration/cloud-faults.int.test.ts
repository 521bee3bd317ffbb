/**
 * Cloud faults injected into real traffic: the real CLI talks to the real stack through a proxy
 * (fault-proxy.ts) that answers chosen requests with the errors AWS gives (S3 SlowDown and
 * InternalError, DynamoDB InternalServerError, a throttled Lambda invoke, an expired session token). The SDK does its real
 * retries. Each case asserts the README's exit code, one ERROR line and no stack trace, a version
 * that is not committed, and that `backup -c` with the fault gone completes it bit-exact.
 * Stalled requests (the proxy never answers, or stops after the first bytes of a body) with the
 * S3 timeout set to 2 s: a stall once ends in a retry shown as a warning and a complete backup or
 * restore; a stall on every attempt ends the restore with one line, never a hang.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import type { Version } from '../../shared/domain/types.ts';
import { outputsCachePath, type StackTarget } from '../../agent/backend/outputs-cache.ts';
import { CloudCli, type CloudRun } from './cloud-cli.ts';
import { clientConfig, testStack } from './context.ts';
import { afterSuccesses, FaultProxy, isBlockObject, isLambdaInvoke, onceAfter, type Fault, type FaultRule } from './fault-proxy.ts';

const BS = 64 * 1024;
const BLOCKS = 32; // one block-map chunk, 32 uploads
const IN_FLIGHT = 4; // simultaneous_reads + simultaneous_writes: blocks the backup has in flight
const SDK_ATTEMPTS = 8; // the agent's S3 client: the first attempt and 7 retries
const S3_TIMEOUT_SECONDS = '2'; // BACKY2_S3_TIMEOUT_SECONDS of the stall cases (request and idle timeout)
// A retry of the S3 client, or of a block a codec thread failed to GET or PUT (then sent through the client).
const RETRY_WARNING =
  /^ {2}WARNING: (S3 request failed, TimeoutError: .*; retry \d of 7 after \d+\.\d s|Reading block \d+ on a codec thread failed, TimeoutError: .*; reading it again.*|Uploading blocks\/\S+ on a codec thread failed, TimeoutError: .*; uploading it again.*)$/gm;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const SLOW_DOWN: Fault = { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };
const INTERNAL: Fault = { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' };
const DYNAMO_INTERNAL: Fault = { status: 500, code: 'InternalServerError', message: 'Internal server error' };
const LAMBDA_THROTTLED: Fault = { status: 429, code: 'TooManyRequestsException', message: 'Rate Exceeded.' };

/** The exit code, exactly one ERROR line (returned), no stack trace, no "Unexpected exception". */
function failedCleanly(r: CloudRun, code: number): string {
  expect(r.code, r.stderr).toBe(code);
  const errors = r.stderr.split('\n').filter((l) => l.includes('ERROR:'));
  expect(errors, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stderr).not.toMatch(/Unexpected exception/);
  console.log(`exit ${r.code}: ${errors[0]}`);
  return errors[0]!;
}

describe('cloud mode: S3 and Lambda faults in real traffic (through a fault-injecting proxy)', () => {
  const stack = testStack();
  const bucket = stack.outputs.BucketName;
  const store = new DynamoMetadataStore(DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig())), {
    eventsTable: stack.outputs.EventsTableName,
    projectionsTable: stack.outputs.ProjectionsTableName,
  });
  let proxy: FaultProxy;
  let cloud: CloudCli;
  /** The same repository through the same proxy, with short S3 timeouts (the stall cases). */
  let stalling: CloudCli;
  const cli = (...args: string[]) => cloud.run(...args);
  const byName = async (name: string): Promise<Version | undefined> => (await store.listVersions()).find((v) => v.name === name);

  beforeAll(async () => {
    proxy = await FaultProxy.start(stack.endpoint);
    cloud = new CloudCli(
      [`block_size: ${BS}`, 'simultaneous_writes: 2', 'simultaneous_reads: 2', 'disallow_rm_when_younger_than_days: 0'],
      undefined,
      proxy.url,
    );
    stalling = new CloudCli([`block_size: ${BS}`, 'simultaneous_writes: 2', 'simultaneous_reads: 2'], undefined, proxy.url);
    stalling.env['BACKY2_S3_TIMEOUT_SECONDS'] = S3_TIMEOUT_SECONDS;
  });
  beforeEach(() => proxy.heal());
  afterAll(async () => {
    console.log(`faults injected in the last case: ${JSON.stringify(Object.fromEntries(proxy.injected))}`);
    await proxy?.close();
  });

  /** A fresh random image (no block dedups against another case's). */
  const image = (file: string, into = cloud): Buffer => {
    const data = randomBytes(BLOCKS * BS);
    writeFileSync(into.path(file), data);
    return data;
  };

  /**
   * The failed backup left its version uncommitted (ls: valid 0, restore refused); `backup -c`
   * with the proxy healed completes it, and it restores bit-exact.
   */
  async function uncommittedThenContinued(name: string, file: string, data: Buffer, line: string, statuses: Version['status'][]): Promise<void> {
    proxy.heal();
    const v = (await byName(name))!;
    expect(v, `no version of ${name}`).toBeDefined();
    expect(statuses).toContain(v.status);
    expect(line).toContain(`backy2 backup -c ${v.uid} file://${file} ${name}`);
    const listed = (await cloud.json<{ uid: string; valid: number }[]>('ls', name)).find((l) => l.uid === v.uid)!;
    expect(listed.valid).toBe(0);
    expect((await cli('restore', v.uid, `file://${file}.early`)).code).toBe(4);

    const resumed = await cli('--json', 'backup', '-c', v.uid, `file://${file}`, name);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect((JSON.parse(resumed.stdout) as { uid: string }).uid).toBe(v.uid);
    expect((await byName(name))!.status).toBe('committed');
    const restored = await cli('restore', v.uid, `file://${file}.out`);
    expect(restored.code, restored.stderr).toBe(0);
    expect(sha(readFileSync(cloud.path(`${file}.out`)))).toBe(sha(data));
  }

  it('S3 PutObject answers 503 SlowDown persistently after 8 block uploads: exit 9 (throttled), then backup -c completes it', async () => {
    const name = `fault-slowdown-${randomBytes(3).toString('hex')}`;
    const data = image('slow.img');
    proxy.inject(afterSuccesses(8, (req) => isBlockObject(req, bucket, 'PUT'), SLOW_DOWN));
    const r = await cli('backup', 'file://slow.img', name);
    const line = failedCleanly(r, 9);
    console.log(`SlowDown answers: ${proxy.count('SlowDown')}`);
    expect(line).toMatch(/throttled .*SlowDown/);
    // The SDK retried; and once a block failed no further block started, and the version was failed
    // only after the blocks in flight settled (before: 40 answers, a block started after the failure).
    expect(proxy.count('SlowDown')).toBeGreaterThan(1);
    // A block's first PUT is its codec thread's, then the S3 client's attempts (README: cloud timeouts).
    expect(proxy.count('SlowDown')).toBeLessThanOrEqual(IN_FLIGHT * (SDK_ATTEMPTS + 1));
    await uncommittedThenContinued(name, 'slow.img', data, line, ['failed']);
  });

  it('S3 PutObject answers 500 InternalError persistently after 8 block uploads: exit 6 (storage), then backup -c completes it', async () => {
    const name = `fault-internal-${randomBytes(3).toString('hex')}`;
    const data = image('internal.img');
    proxy.inject(afterSuccesses(8, (req) => isBlockObject(req, bucket, 'PUT'), INTERNAL));
    const r = await cli('backup', 'file://internal.img', name);
    const line = failedCleanly(r, 6);
    console.log(`InternalError answers: ${proxy.count('InternalError')}`);
    expect(line).toMatch(/HTTP 500 .*InternalError/);
    expect(proxy.count('InternalError')).toBeGreaterThan(1);
    expect(proxy.count('InternalError')).toBeLessThanOrEqual(IN_FLIGHT * (SDK_ATTEMPTS + 1));
    await uncommittedThenContinued(name, 'internal.img', data, line, ['failed']);
  });

  it('DynamoDB answers 500 InternalServerError to every block lookup (BatchGetItem) of a started backup: exit 6, then backup -c completes it', async () => {
    const name = `fault-dynamo-${randomBytes(3).toString('hex')}`;
    const data = image('dynamo.img');
    proxy.inject((req) => (req.target === 'DynamoDB_20120810.BatchGetItem' ? DYNAMO_INTERNAL : undefined));
    const r = await cli('backup', 'file://dynamo.img', name);
    const line = failedCleanly(r, 6);
    expect(line).toMatch(/HTTP 500 .*InternalServerError/);
    expect(proxy.count('InternalServerError')).toBeGreaterThan(1);
    await uncommittedThenContinued(name, 'dynamo.img', data, line, ['failed']);
  });

  it('the api function invoke is throttled (429 TooManyRequestsException) at the commit: exit 9, the version failed, then backup -c completes it', async () => {
    const name = `fault-invoke-${randomBytes(3).toString('hex')}`;
    const data = image('invoke.img');
    const fn = `/2015-03-31/functions/${encodeURIComponent(stack.outputs.ApiFunctionName)}/invocations`;
    proxy.inject((req) => (isLambdaInvoke(req) && req.path.startsWith(fn) && req.body.includes('"CommitVersion"') ? LAMBDA_THROTTLED : undefined));
    const r = await cli('backup', 'file://invoke.img', name);
    const line = failedCleanly(r, 9);
    expect(line).toMatch(/throttled function .*TooManyRequestsException/);
    expect(proxy.count('TooManyRequestsException')).toBeGreaterThan(1);
    await uncommittedThenContinued(name, 'invoke.img', data, line, ['failed']);
  });

  it('the session token expires mid-backup (every service answers ExpiredToken): exit 9, the version not committed, then backup -c completes it', async () => {
    const name = `fault-expired-${randomBytes(3).toString('hex')}`;
    const data = image('expired.img');
    let uploads = 0;
    // After 8 block uploads every request of the agent is refused, as AWS does once a session token expires.
    proxy.inject((req) => {
      if (uploads >= 8)
        return isLambdaInvoke(req)
          ? { status: 403, code: 'ExpiredTokenException', message: 'The security token included in the request is expired' }
          : req.target
            ? { status: 400, code: 'ExpiredTokenException', message: 'The security token included in the request is expired' }
            : { status: 400, code: 'ExpiredToken', message: 'The provided token has expired.' };
      if (isBlockObject(req, bucket, 'PUT')) uploads++;
      return undefined;
    });
    const r = await cli('backup', 'file://expired.img', name);
    const line = failedCleanly(r, 9);
    expect(line).toMatch(/credentials .*expired.*\(ExpiredToken/);
    // FailVersion is refused too: the version stays pending (not committed), and -c accepts it.
    await uncommittedThenContinued(name, 'expired.img', data, line, ['failed', 'pending']);
  });

  it('restore under a persistent S3 GetObject 500 after 8 block reads: exit 6, no complete-looking target, restore -c completes it bit-exact', async () => {
    const name = `fault-restore-${randomBytes(3).toString('hex')}`;
    const data = image('source.img');
    const uid = await cloud.backup('file://source.img', name);
    proxy.inject(afterSuccesses(8, (req) => isBlockObject(req, bucket, 'GET'), INTERNAL));
    const r = await cli('restore', uid, 'file://target.img');
    const line = failedCleanly(r, 6);
    expect(line).toMatch(/HTTP 500 .*InternalError/);
    expect(existsSync(cloud.path('target.img'))).toBe(false);
    const from = /resume with -c (\d+)/.exec(line);
    expect(from, line).not.toBeNull();

    proxy.heal();
    const resumed = await cli('restore', '-c', from![1]!, uid, 'file://target.img');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(sha(readFileSync(cloud.path('target.img')))).toBe(sha(data));
  });
  it('an S3 PutObject that never answers is abandoned after the timeout and retried: the backup completes, the retry a warning', async () => {
    const name = `fault-stall-put-${randomBytes(3).toString('hex')}`;
    const data = image('stall-put.img', stalling);
    proxy.inject(onceAfter(4, (req) => isBlockObject(req, bucket, 'PUT'), { stall: 'answer' }));
    const r = await stalling.run('backup', 'file://stall-put.img', name); // not -m/--json: they show errors only
    expect(r.code, r.stderr).toBe(0);
    expect(proxy.count('stall-answer')).toBe(1);
    expect(r.stderr.match(RETRY_WARNING), r.stderr).toHaveLength(1);
    expect(r.stderr).not.toMatch(/ERROR:/);
    const { uid, status } = (await byName(name))!;
    expect(status).toBe('committed');
    proxy.heal();
    const restored = await stalling.run('restore', uid, 'file://stall-put.out');
    expect(restored.code, restored.stderr).toBe(0);
    expect(sha(readFileSync(stalling.path('stall-put.out')))).toBe(sha(data));
  });

  it('restore: a GetObject body that stops after its first bytes, and a GetObject never answered, are read again: bit-exact, each retry a warning', async () => {
    const name = `fault-stall-get-${randomBytes(3).toString('hex')}`;
    const data = image('stall-get.img', stalling);
    const uid = await stalling.backup('file://stall-get.img', name);
    const blockGet = (req: Parameters<FaultRule>[0]) => isBlockObject(req, bucket, 'GET');
    const body = onceAfter(4, blockGet, { stall: 'body' });
    const answer = onceAfter(8, blockGet, { stall: 'answer' });
    proxy.inject((req) => body(req) ?? answer(req));
    const r = await stalling.run('-d', 'restore', uid, 'file://stall-get.out');
    expect(r.code, r.stderr).toBe(0);
    // The same multi-core codec as embedded mode: a worker thread per core.
    expect(r.stderr).toContain(`cloud repository open (codec: ${availableParallelism()} worker threads)`);
    expect(proxy.count('stall-body')).toBe(1);
    expect(proxy.count('stall-answer')).toBe(1);
    expect(r.stderr.match(RETRY_WARNING), r.stderr).toHaveLength(2);
    expect(r.stderr).not.toMatch(/ERROR:/);
    expect(sha(readFileSync(stalling.path('stall-get.out')))).toBe(sha(data));
  });

  it('restore: a block body damaged on its way (one byte flipped, once) fails verification, is read again with a warning, and the restore is bit-exact', async () => {
    const name = `fault-corrupt-once-${randomBytes(3).toString('hex')}`;
    const data = image('corrupt-once.img');
    const uid = await cloud.backup('file://corrupt-once.img', name);
    proxy.inject(onceAfter(4, (req) => isBlockObject(req, bucket, 'GET'), { corrupt: 'body' }));
    const r = await cli('restore', uid, 'file://corrupt-once.out');
    expect(r.code, r.stderr).toBe(0);
    expect(proxy.count('corrupt-body')).toBe(1);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('WARNING:'));
    expect(warnings, r.stderr).toHaveLength(1);
    expect(warnings[0]).toMatch(/^ {2}WARNING: Block \d+ failed verification: .*; reading it again$/);
    expect(r.stderr).not.toMatch(/ERROR:/);
    expect(sha(readFileSync(cloud.path('corrupt-once.out')))).toBe(sha(data));
  });

  it('restore: a block damaged on every read ends with exit 7 and one line, and no target is left', async () => {
    const name = `fault-corrupt-all-${randomBytes(3).toString('hex')}`;
    image('corrupt-all.img');
    const uid = await cloud.backup('file://corrupt-all.img', name);
    proxy.inject(afterSuccesses(4, (req) => isBlockObject(req, bucket, 'GET'), { corrupt: 'body' }));
    const r = await cli('restore', uid, 'file://corrupt-all.out');
    const line = failedCleanly(r, 7);
    expect(line).toMatch(/failed verification/);
    expect(existsSync(cloud.path('corrupt-all.out'))).toBe(false);
  });

  it('restore while every S3 GetObject of a block stalls (after 8): it ends, exit 9, one line naming the stalled endpoint, no complete-looking target', async () => {
    const name = `fault-stall-all-${randomBytes(3).toString('hex')}`;
    image('stall-all.img', stalling);
    const uid = await stalling.backup('file://stall-all.img', name);
    proxy.inject(afterSuccesses(8, (req) => isBlockObject(req, bucket, 'GET'), { stall: 'answer' }));
    const r = await stalling.run('restore', uid, 'file://stall-all.out');
    const line = failedCleanly(r, 9);
    expect(line).toMatch(new RegExp(`stopped answering after ${SDK_ATTEMPTS} attempts \\(no answer within 2000 ms\\)`));
    expect(line).toMatch(/resume with -c \d+/);
    // Each retry was a warning; no block read past its attempts, none started after the failure.
    expect(r.stderr.match(RETRY_WARNING)!.length).toBeGreaterThanOrEqual(SDK_ATTEMPTS - 1);
    // A block's first GET is its codec thread's, then the S3 client's attempts (README: cloud timeouts).
    expect(proxy.count('stall-answer')).toBeLessThanOrEqual(IN_FLIGHT * (SDK_ATTEMPTS + 1));
    expect(existsSync(stalling.path('stall-all.out'))).toBe(false);
  });
  it('S3 connections are kept alive and reused: the 32 uploads of a backup and the 32 reads of a restore each travel on at most simultaneous_reads + simultaneous_writes connections', async () => {
    const name = `pool-${randomBytes(3).toString('hex')}`;
    const data = image('pool.img');
    proxy.heal();
    const uid = await cloud.backup('file://pool.img', name);
    const puts = proxy.requests.filter((r) => isBlockObject(r.req, bucket, 'PUT')).length;
    expect(puts).toBe(BLOCKS);
    const putConnections = proxy.connectionsFor((req) => isBlockObject(req, bucket, 'PUT'));
    expect(putConnections).toBeGreaterThanOrEqual(1);
    expect(putConnections).toBeLessThanOrEqual(IN_FLIGHT);
    proxy.heal();
    const restored = await cli('restore', uid, 'file://pool.out');
    expect(restored.code, restored.stderr).toBe(0);
    expect(sha(readFileSync(cloud.path('pool.out')))).toBe(sha(data));
    expect(proxy.requests.filter((r) => isBlockObject(r.req, bucket, 'GET')).length).toBe(BLOCKS);
    const getConnections = proxy.connectionsFor((req) => isBlockObject(req, bucket, 'GET'));
    expect(getConnections).toBeLessThanOrEqual(IN_FLIGHT);
    console.log(`S3 connections: ${putConnections} for ${BLOCKS} uploads, ${getConnections} for ${BLOCKS} reads`);
  });
  describe('the stack outputs cached in BACKY2_HOME', () => {
    let cached: CloudCli;
    const describes = () => proxy.requests.filter((r) => r.req.body.includes('DescribeStacks') || r.req.target.includes('DescribeStacks')).length;
    const cacheFile = (): string => {
      const dir = cached.path('home', 'stack-outputs');
      const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
      expect(files, `files in ${dir}`).toHaveLength(1);
      return join(dir, files[0]!);
    };
    const cachedOutputs = () => (JSON.parse(readFileSync(cacheFile(), 'utf8')) as { outputs: Record<string, string> }).outputs;
    beforeAll(() => {
      cached = new CloudCli([`block_size: ${BS}`, 'simultaneous_writes: 2', 'simultaneous_reads: 2'], undefined, proxy.url);
      cached.env['BACKY2_HOME'] = cached.path('home');
    });

    it('the first command reads the outputs (DescribeStacks) and caches them; the next ones ask CloudFormation nothing', async () => {
      const first = await cached.run('ls');
      expect(first.code, first.stderr).toBe(0);
      expect(describes()).toBe(1);
      expect(cachedOutputs()['BucketName']).toBe(bucket);
      proxy.heal();
      const name = `cached-${randomBytes(3).toString('hex')}`;
      const data = image('cached.img', cached);
      const uid = await cached.backup('file://cached.img', name);
      const restored = await cached.run('-d', 'restore', uid, 'file://cached.out');
      expect(restored.code, restored.stderr).toBe(0);
      expect(sha(readFileSync(cached.path('cached.out')))).toBe(sha(data));
      expect(restored.stderr).toMatch(/outputs from the cache .*stack-outputs/);
      expect(describes()).toBe(0);
      // Off by the switch: asked again, and still right.
      cached.env['BACKY2_STACK_OUTPUTS_CACHE'] = '0';
      proxy.heal();
      const off = await cached.run('ls', name);
      delete cached.env['BACKY2_STACK_OUTPUTS_CACHE'];
      expect(off.code, off.stderr).toBe(0);
      expect(describes()).toBe(1);
    });

    it('a garbled cache file is ignored and rewritten', async () => {
      writeFileSync(cacheFile(), '{"format": 1, "outputs": {"BucketName": ');
      proxy.heal();
      const r = await cached.run('ls');
      expect(r.code, r.stderr).toBe(0);
      expect(describes()).toBe(1);
      expect(cachedOutputs()).toEqual(expect.objectContaining({ BucketName: bucket, EventsTableName: stack.outputs.EventsTableName }));
    });

    it('stale outputs (a bucket, tables, a queue and functions that do not exist): the command reads them again, succeeds, and the cache is rewritten', async () => {
      const real = cachedOutputs();
      const staleAll = Object.fromEntries(
        Object.entries(real).map(([k, v]) => [k, k === 'BlockQueueUrl' ? `${v}-gone` : `gone-${randomBytes(3).toString('hex')}-${k.toLowerCase()}`]),
      );
      const file = cacheFile();
      const rewrite = (outputs: Record<string, string>) => writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), outputs }));
      rewrite(staleAll);
      proxy.heal();
      const name = `stale-${randomBytes(3).toString('hex')}`;
      const data = image('stale.img', cached);
      const backup = await cached.run('-d', '-m', 'backup', 'file://stale.img', name);
      expect(backup.code, backup.stderr).toBe(0);
      expect(backup.stderr).toMatch(/cached outputs of stack .* were stale/);
      expect(describes()).toBe(1);
      expect(cachedOutputs()).toEqual(real);
      const uid = backup.stdout.trim().split('\n').pop()!;
      // The blocks are in the stack's bucket (not a stale one): the right store has the version.
      expect((await store.getVersion(uid))?.status).toBe('committed');
      expect(proxy.requests.some((r) => isBlockObject(r.req, bucket, 'PUT'))).toBe(true);

      // Only the tables stale (the bucket right): the first DynamoDB read finds none, the restore still succeeds.
      rewrite({ ...real, EventsTableName: 'gone-events', ProjectionsTableName: 'gone-projections' });
      proxy.heal();
      const restored = await cached.run('restore', uid, 'file://stale.out');
      expect(restored.code, restored.stderr).toBe(0);
      expect(sha(readFileSync(cached.path('stale.out')))).toBe(sha(data));
      expect(describes()).toBe(1);
      expect(cachedOutputs()).toEqual(real);
    });

    it('cached outputs of a stack that is gone: the usual "Stack ... does not exist" line and exit code', async () => {
      const gone = new CloudCli([`block_size: ${BS}`], undefined, proxy.url);
      gone.env['BACKY2_HOME'] = cached.path('home');
      const goneConfig = readFileSync(gone.config, 'utf8').replace(/stack_name: .*/, 'stack_name: NoSuchCachedStack');
      writeFileSync(gone.config, goneConfig);
      const target = cacheFile();
      // The real stack's outputs, but their names stale, filed under the gone stack's name (as a deleted stack's would be).
      const body = JSON.parse(readFileSync(target, 'utf8')) as { target: StackTarget; outputs: Record<string, string> };
      const first = await gone.run('ls');
      expect(first.code).toBe(9);
      expect(first.stderr).toMatch(/Stack NoSuchCachedStack does not exist/);
      const goneFile = outputsCachePath(cached.path('home'), { ...body.target, stackName: 'NoSuchCachedStack' });
      writeFileSync(
        goneFile,
        JSON.stringify({
          ...body,
          target: { ...body.target, stackName: 'NoSuchCachedStack' },
          outputs: { ...body.outputs, BucketName: 'gone-bucket-of-a-deleted-stack' },
        }),
      );
      const r = await gone.run('ls');
      failedCleanly(r, 9);
      expect(r.stderr).toMatch(/Stack NoSuchCachedStack does not exist/);
      expect(existsSync(goneFile)).toBe(false);
    });
  });
});
