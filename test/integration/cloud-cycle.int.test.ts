/**
 * The quick-start cycle through the real CLI in cloud mode, against the real stack deployed into
 * the emulator (or BACKY2_TEST_ENDPOINT): blocks go to S3, block records through SQS to the real
 * ingest function (a version's last chunk with its commit), commands through the real api
 * function, metadata in DynamoDB.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, cliEnv, eventually, testStack } from './context.ts';
import { runCloudCli as runCli } from './cloud-cli.ts';

const MiB = 1024 * 1024;

/** An image of `blocks` 1 MiB blocks: random ones, zero ones, and some repeating an earlier block. */
function makeImage(path: string, pattern: ('r' | 'z' | number)[]): Buffer {
  const blocks: Buffer[] = [];
  for (const p of pattern) blocks.push(p === 'r' ? randomBytes(MiB) : p === 'z' ? Buffer.alloc(MiB) : blocks[p]!);
  const image = Buffer.concat(blocks);
  writeFileSync(path, image);
  return image;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('cloud mode: the quick-start cycle through the real CLI', () => {
  const stack = testStack();
  const s3 = new S3Client(clientConfig());
  const sqs = new SQSClient(clientConfig());
  const ddb = DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig()));
  let dir: string;
  let config: string;
  const env = () => cliEnv({ BACKY2_RECORD_TIMEOUT_SECONDS: '240' });
  const cli = (...args: string[]) => runCli(['-c', config, ...args], dir, env());

  const blockObjects = async () => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: stack.outputs.BucketName, Prefix: 'blocks/', ContinuationToken: token }));
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.NextContinuationToken;
    } while (token);
    return keys;
  };
  const lsJson = async () => {
    const r = await cli('--json', 'ls');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { uid: string; valid: number; name: string; size_bytes: number; tags: string }[];
  };

  /**
   * An image of 2100 blocks of 4 KiB (3 block-map chunks of 1024), mostly sparse, and a CLI whose
   * config uses that block size.
   */
  const severalChunks = (name: string) => {
    const BS = 4096;
    const image = Buffer.alloc(2100 * BS);
    for (const idx of [0, 1023, 1024, 2099]) randomBytes(BS).copy(image, idx * BS);
    writeFileSync(join(dir, name), image);
    const small = join(dir, 'small-blocks.cfg');
    writeFileSync(small, readFileSync(config, 'utf8').replace('block_size: 1048576', `block_size: ${BS}`));
    return { image, cli: (...args: string[]) => runCli(['-c', small, ...args], dir, env()) };
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-'));
    config = join(dir, 'backy.cfg');
    writeFileSync(
      config,
      [
        '[DEFAULTS]',
        `encryption_key: ${randomBytes(32).toString('hex')}`,
        'block_size: 1048576',
        'disallow_rm_when_younger_than_days: 6',
        '',
        '[aws]',
        `stack_name: ${stack.stackName}`,
        `region: ${stack.region}`,
        `endpoint_url: ${stack.endpoint}`,
        '',
      ].join('\n'),
    );
  });

  it('backup → ls → scrub → restore (bit-exact) → rm → cleanup', async () => {
    const image = makeImage(join(dir, 'vm1.img'), ['r', 'r', 'z', 0, 'r', 'z', 'r', 1]);
    const before = (await blockObjects()).length;
    const backup = await cli('-m', 'backup', '-t', 'cloud,first', 'file://vm1.img', 'vm1');
    expect(backup.code, backup.stderr).toBe(0);
    const uid = backup.stdout.trim().split('\n').pop()!;
    expect(uid).toMatch(/^[0-9a-f-]{36}$/);
    // 4 distinct non-zero blocks: 0, 1, 4, 6 (3 and 7 repeat 0 and 1, 2 and 5 are sparse).
    expect((await blockObjects()).length - before).toBe(4);

    const listed = (await lsJson()).find((v) => v.uid === uid)!;
    expect(listed).toMatchObject({ name: 'vm1', valid: 1, size_bytes: image.length, tags: 'cloud,first' });

    const scrub = await cli('scrub', uid);
    expect(scrub.code, scrub.stderr).toBe(0);

    const restore = await cli('restore', uid, 'file://restored.img');
    expect(restore.code, restore.stderr).toBe(0);
    expect(sha(readFileSync(join(dir, 'restored.img')))).toBe(sha(image));
    const again = await cli('restore', uid, 'file://restored.img');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/Target already exists/);

    const young = await cli('rm', uid);
    expect(young.code).toBe(4);
    expect(young.stderr).toMatch(/too young/);
    const rm = await cli('rm', '-f', uid);
    expect(rm.code, rm.stderr).toBe(0);
    expect((await lsJson()).some((v) => v.uid === uid)).toBe(false);

    // The test stack's scheduled cleanup (every minute, 10 s grace) may delete some of them first.
    const cleanup = await cli('--json', 'cleanup', '-f');
    expect(cleanup.code, cleanup.stderr).toBe(0);
    expect(JSON.parse(cleanup.stdout)).toHaveProperty('deleted');
    expect((await blockObjects()).length).toBe(before);
  });

  it('deduplicates across hosts: a second image sharing blocks uploads only its new blocks', async () => {
    const imageA = makeImage(join(dir, 'hostA.img'), ['r', 'r', 'r', 'r']);
    const shared = imageA.subarray(0, 3 * MiB);
    const imageB = Buffer.concat([shared, randomBytes(MiB)]);
    writeFileSync(join(dir, 'hostB.img'), imageB);
    const a = await cli('-m', 'backup', 'file://hostA.img', 'hostA');
    expect(a.code, a.stderr).toBe(0);
    const afterA = (await blockObjects()).length;
    const b = await cli('-m', 'backup', 'file://hostB.img', 'hostB');
    expect(b.code, b.stderr).toBe(0);
    expect((await blockObjects()).length - afterA).toBe(1);
    const uidB = b.stdout.trim().split('\n').pop()!;
    const r = await cli('restore', uidB, 'file://hostB.restored');
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(join(dir, 'hostB.restored')))).toBe(sha(imageB));
  });

  it('two hosts backing up the same new data at once both commit, and each block is stored once', async () => {
    const image = makeImage(join(dir, 'twin.img'), ['r', 'r', 'r', 'r', 'r', 'r']);
    const before = (await blockObjects()).length;
    const [x, y] = await Promise.all([cli('-m', 'backup', 'file://twin.img', 'twinX'), cli('-m', 'backup', 'file://twin.img', 'twinY')]);
    expect(x.code, x.stderr).toBe(0);
    expect(y.code, y.stderr).toBe(0);
    expect((await blockObjects()).length - before).toBe(6);
    for (const run of [x, y]) {
      const uid = run.stdout.trim().split('\n').pop()!;
      const target = `file://twin-${uid}.img`;
      const r = await cli('restore', uid, target);
      expect(r.code, r.stderr).toBe(0);
      expect(sha(readFileSync(join(dir, `twin-${uid}.img`)))).toBe(sha(image));
    }
  });

  it('incremental backup (-f) uploads only changed blocks and restores both versions', async () => {
    const base = makeImage(join(dir, 'inc.img'), ['r', 'r', 'r', 'r']);
    const first = await cli('-m', 'backup', 'file://inc.img', 'inc');
    expect(first.code, first.stderr).toBe(0);
    const baseUid = first.stdout.trim().split('\n').pop()!;
    const changed = Buffer.from(base);
    randomBytes(MiB).copy(changed, 2 * MiB);
    writeFileSync(join(dir, 'inc.img'), changed);
    const before = (await blockObjects()).length;
    const second = await cli('-m', 'backup', '-f', baseUid, 'file://inc.img', 'inc');
    expect(second.code, second.stderr).toBe(0);
    expect((await blockObjects()).length - before).toBe(1);
    const uid = second.stdout.trim().split('\n').pop()!;
    for (const [v, expected] of [
      [baseUid, base],
      [uid, changed],
    ] as const) {
      const r = await cli('restore', v, `file://inc-${v}.img`);
      expect(r.code, r.stderr).toBe(0);
      expect(sha(readFileSync(join(dir, `inc-${v}.img`)))).toBe(sha(expected));
    }
    const bad = await cli('backup', '-f', '00000000-0000-4000-8000-000000000000', 'file://inc.img', 'inc');
    expect(bad.code).toBe(3);
  });

  it('a corrupted S3 object is found by a cloud scrub (no key) and by a local scrub; a repaired one validates again', async () => {
    makeImage(join(dir, 'scrub.img'), ['r', 'r', 'r']);
    const b = await cli('-m', 'backup', 'file://scrub.img', 'scrubme');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    const chunk = await ddb.send(
      new QueryCommand({
        TableName: stack.outputs.ProjectionsTableName,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': `MAP#${uid}` },
      }),
    );
    const entries = Buffer.from(chunk.Items![0]!['entries'] as Uint8Array);
    const victimId = entries.subarray(36, 68).toString('hex');
    const key = `blocks/${victimId.slice(0, 2)}/${victimId.slice(2, 4)}/${victimId}`;
    const original = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: stack.outputs.BucketName, Key: key }))).Body!.transformToByteArray());
    const corrupted = Buffer.from(original);
    corrupted[corrupted.length - 1]! ^= 0xff;
    await s3.send(new PutObjectCommand({ Bucket: stack.outputs.BucketName, Key: key, Body: corrupted }));

    const cloudScrub = await cli('scrub', '--in-cloud', uid);
    expect(cloudScrub.code, cloudScrub.stderr).toBe(20);
    expect(cloudScrub.stderr).toMatch(/checksum/);
    expect((await lsJson()).find((v) => v.uid === uid)?.valid).toBe(0);

    const localScrub = await cli('scrub', uid);
    expect(localScrub.code).toBe(20);
    const restore = await cli('restore', uid, 'file://scrub-restored.img');
    expect(restore.code).toBe(7);
    expect(existsSync(join(dir, 'scrub-restored.img'))).toBe(false);

    await s3.send(new PutObjectCommand({ Bucket: stack.outputs.BucketName, Key: key, Body: original }));
    const clean = await cli('scrub', '--in-cloud', uid);
    expect(clean.code, clean.stderr).toBe(0);
    expect((await lsJson()).find((v) => v.uid === uid)?.valid).toBe(1);
    // The repaired block is valid again in the index: a new backup dedups against it.
    const again = await cli('--json', 'backup', 'file://scrub.img', 'scrubme');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).stats.blocksWritten).toBe(0);
  });

  it('duplicated and reordered delivery of block records changes nothing', async () => {
    const image = makeImage(join(dir, 'dup.img'), ['r', 'z', 'r', 0]);
    const b = await cli('-m', 'backup', 'file://dup.img', 'dup');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    const records = await ddb.send(
      new QueryCommand({
        TableName: stack.outputs.EventsTableName,
        KeyConditionExpression: '#stream = :s',
        ExpressionAttributeNames: { '#stream': 'stream' },
        ExpressionAttributeValues: { ':s': `blocks-${uid}` },
      }),
    );
    const bodies = (records.Items ?? []).map((i) => i['data'] as string);
    expect(bodies.length).toBe(1);
    const lsBefore = (await lsJson()).find((v) => v.uid === uid);
    // Redeliver every record three times, in reverse order.
    for (const body of [...bodies, ...bodies, ...bodies].reverse())
      await sqs.send(new SendMessageCommand({ QueueUrl: stack.outputs.BlockQueueUrl, MessageBody: body }));
    await eventually(
      async () => {
        const attrs = await sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: stack.outputs.BlockQueueUrl,
            AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
          }),
        );
        const n = Number(attrs.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(attrs.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
        return n === 0 ? true : undefined;
      },
      120_000,
      1000,
      'the block queue to drain',
    );
    expect((await lsJson()).find((v) => v.uid === uid)).toEqual(lsBefore);
    const after = await ddb.send(
      new QueryCommand({
        TableName: stack.outputs.EventsTableName,
        KeyConditionExpression: '#stream = :s',
        ExpressionAttributeNames: { '#stream': 'stream' },
        ExpressionAttributeValues: { ':s': `blocks-${uid}` },
      }),
    );
    expect(after.Items?.length).toBe(1);
    const r = await cli('restore', uid, 'file://dup-restored.img');
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(join(dir, 'dup-restored.img')))).toBe(sha(image));
  });

  it('a backup of several block-map chunks: the earlier ones through the queue and the ingest function, the last with the commit', async () => {
    const { image, cli: small } = severalChunks('chunks.img');
    const b = await small('-m', 'backup', 'file://chunks.img', 'chunks');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    const records = await ddb.send(
      new QueryCommand({
        TableName: stack.outputs.EventsTableName,
        KeyConditionExpression: '#stream = :s',
        ExpressionAttributeNames: { '#stream': 'stream' },
        ExpressionAttributeValues: { ':s': `blocks-${uid}` },
      }),
    );
    expect((records.Items ?? []).map((i) => i['seq'] as number).sort()).toEqual([0, 1, 2]);
    const r = await small('restore', uid, 'file://chunks-restored.img');
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(join(dir, 'chunks-restored.img')))).toBe(sha(image));
  });

  it('a poisoned block record goes to the dead-letter queue and does not block the others', async () => {
    await sqs.send(new SendMessageCommand({ QueueUrl: stack.outputs.BlockQueueUrl, MessageBody: '{"type":"BlocksRecorded","poison":true}' }));
    // Several chunks, so the backup's first chunks need the queue.
    const { cli: small } = severalChunks('after-poison.img');
    const b = await small('-m', 'backup', 'file://after-poison.img', 'afterpoison');
    expect(b.code, b.stderr).toBe(0);
    await eventually(
      async () => {
        const attrs = await sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: stack.outputs.BlockDeadLetterQueueUrl, AttributeNames: ['ApproximateNumberOfMessages'] }),
        );
        return Number(attrs.Attributes?.ApproximateNumberOfMessages ?? 0) > 0 ? true : undefined;
      },
      240_000,
      2000,
      'the poisoned record in the dead-letter queue',
    );
  });

  it('errors: a stack that does not exist, an unreachable endpoint, a missing key', async () => {
    const variant = (mutate: (text: string) => string) => {
      const path = join(dir, `variant-${randomBytes(4).toString('hex')}.cfg`);
      writeFileSync(path, mutate(readFileSync(config, 'utf8')));
      return path;
    };
    const noStack = await runCli(['-c', variant((t) => t.replace(/stack_name: .*/, 'stack_name: NoSuchStack')), 'ls'], dir, env());
    expect(noStack.code).toBe(9);
    expect(noStack.stderr).toMatch(/NoSuchStack does not exist/);
    const unreachable = await runCli(['-c', variant((t) => t.replace(/endpoint_url: .*/, 'endpoint_url: http://127.0.0.1:9')), 'ls'], dir, env());
    expect(unreachable.code).toBe(9);
    expect(unreachable.stderr).toMatch(/Cannot reach/);
    const noKey = await runCli(['-c', variant((t) => t.replace(/encryption_key: .*\n/, '')), 'ls'], dir, env());
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/encryption_key .*is missing/);
    const noCredentials: NodeJS.ProcessEnv = {
      ...env(),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
      AWS_CONFIG_FILE: join(dir, 'none'),
      AWS_EC2_METADATA_DISABLED: 'true',
    };
    delete noCredentials.AWS_ACCESS_KEY_ID;
    delete noCredentials.AWS_SECRET_ACCESS_KEY;
    const noCreds = await runCli(['-c', config, 'ls'], dir, noCredentials);
    expect(noCreds.code).toBe(9);
    expect(noCreds.stderr).toMatch(/credentials/i);
  });

  it('an S3 object that vanished: restore fails with exit 6 and leaves no target, scrub exits 20', async () => {
    makeImage(join(dir, 'vanish.img'), ['r', 'r']);
    const b = await cli('-m', 'backup', 'file://vanish.img', 'vanish');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    const chunk = await ddb.send(
      new QueryCommand({
        TableName: stack.outputs.ProjectionsTableName,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': `MAP#${uid}` },
      }),
    );
    const lastId = Buffer.from(chunk.Items![0]!['entries'] as Uint8Array)
      .subarray(36, 68)
      .toString('hex');
    await s3.send(new DeleteObjectCommand({ Bucket: stack.outputs.BucketName, Key: `blocks/${lastId.slice(0, 2)}/${lastId.slice(2, 4)}/${lastId}` }));
    const restore = await cli('restore', uid, 'file://vanished.img');
    expect(restore.code).toBe(6);
    expect(restore.stderr).toMatch(/missing from storage/);
    expect(existsSync(join(dir, 'vanished.img'))).toBe(false);
    const scrub = await cli('scrub', uid);
    expect(scrub.code).toBe(20);
    expect(scrub.stderr).toMatch(/Blob not found/);
  });

  it('cleanup can also run on the host (cleanup -f --local, admin credentials)', async () => {
    const before = (await blockObjects()).length;
    makeImage(join(dir, 'local-cleanup.img'), ['r', 'r', 'r']);
    const b = await cli('-m', 'backup', 'file://local-cleanup.img', 'localcleanup');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    expect((await blockObjects()).length - before).toBe(3);
    expect((await cli('rm', '-f', uid)).code).toBe(0);
    const cleanup = await cli('cleanup', '-f', '--local');
    expect(cleanup.code, cleanup.stderr).toBe(0);
    expect((await blockObjects()).length).toBe(before);
  });

  it('the retention schedule removes an expired version by itself', async () => {
    makeImage(join(dir, 'expired.img'), ['r']);
    const b = await cli('-m', 'backup', '-e', '2020-01-01', 'file://expired.img', 'expired');
    expect(b.code, b.stderr).toBe(0);
    const uid = b.stdout.trim().split('\n').pop()!;
    const expiredList = await cli('--json', 'ls', '-e');
    expect(JSON.parse(expiredList.stdout).map((v: { uid: string }) => v.uid)).toContain(uid);
    await eventually(
      async () => ((await lsJson()).some((v) => v.uid === uid) ? undefined : true),
      180_000,
      3000,
      'the scheduled retention to remove the expired version',
    );
  });
});
