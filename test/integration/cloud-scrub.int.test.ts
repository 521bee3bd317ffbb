/**
 * `backy2 scrub` in cloud mode reads blocks on the codec threads (a presigned GET straight into
 * block memory, as a restore does), through a fault-injecting proxy in front of the real stack:
 * a clean version passes with one GET per block, all of them the codec threads'; a damaged stored
 * object is still found, named and its version marked invalid as before (the store's read has the
 * last word on anything the codec thread found wrong); a GET that fails or is damaged on its way
 * is read again through the S3 client and marks nothing invalid.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { readBlockMap } from '../../shared/app/block-map.ts';
import { blockKey } from '../../shared/blocks/codec.ts';
import type { BlockRef } from '../../shared/domain/types.ts';
import { CloudCli, type CloudRun } from './cloud-cli.ts';
import { clientConfig, testStack } from './context.ts';
import { FaultProxy, isBlockObject, onceAfter, type ProxiedRequest } from './fault-proxy.ts';

const BS = 64 * 1024;
const BLOCKS = 16;
const INTERNAL = { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' };

describe('cloud mode: scrub reads blocks on the codec threads', () => {
  const stack = testStack();
  const bucket = stack.outputs.BucketName;
  const s3 = new S3Client(clientConfig());
  const store = new DynamoMetadataStore(DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig())), {
    eventsTable: stack.outputs.EventsTableName,
    projectionsTable: stack.outputs.ProjectionsTableName,
  });
  let proxy: FaultProxy;
  let cloud: CloudCli;

  /** A block GET of the codec threads (presigned: signed in its query) or of the S3 client (signed in its headers). */
  const codecThreadGet = (req: ProxiedRequest) => isBlockObject(req, bucket, 'GET') && req.path.includes('X-Amz-Signature=');
  const clientGet = (req: ProxiedRequest) => isBlockObject(req, bucket, 'GET') && !req.path.includes('X-Amz-Signature=');
  const seen = (matches: (req: ProxiedRequest) => boolean) => proxy.requests.filter((r) => matches(r.req)).length;
  const lines = (r: CloudRun, label: string) => r.stderr.split('\n').filter((l) => l.includes(`${label}:`));
  /** The ERROR lines of a scrub that found the one block `ref` of version `uid` failing `why`. */
  const failedLines = (why: string, uid: string, ref: BlockRef) => [
    `    ERROR: ${why}: Block(id=${ref.id}, version_uid=${uid}, idx=${ref.idx}, size=${BS})`,
    `    ERROR: Marked version invalid because it has errors: ${uid}`,
  ];
  const validity = async (uid: string) => (await cloud.json<{ uid: string; valid: number }[]>('ls')).find((v) => v.uid === uid)?.valid;

  /** A fresh version of BLOCKS random blocks (none dedups against another case's), and its data blocks. */
  const backedUp = async (name: string): Promise<{ uid: string; refs: BlockRef[] }> => {
    writeFileSync(cloud.path(`${name}.img`), randomBytes(BLOCKS * BS));
    const uid = await cloud.backup(`file://${name}.img`, name);
    const refs: BlockRef[] = [];
    for await (const entries of readBlockMap(store, (await store.getVersion(uid))!)) refs.push(...entries);
    proxy.heal();
    return { uid, refs };
  };
  const storedObject = async (ref: BlockRef) =>
    Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: blockKey(ref.id!) }))).Body!.transformToByteArray());
  const putObject = (ref: BlockRef, body: Buffer) => s3.send(new PutObjectCommand({ Bucket: bucket, Key: blockKey(ref.id!), Body: body }));

  beforeAll(async () => {
    proxy = await FaultProxy.start(stack.endpoint);
    cloud = new CloudCli([`block_size: ${BS}`, 'simultaneous_reads: 2', 'simultaneous_writes: 2'], undefined, proxy.url);
  });
  beforeEach(() => proxy.heal());
  afterAll(async () => {
    await proxy?.close();
  });

  it('a clean version passes: every block is read once, by a codec thread, and the version stays valid', async () => {
    const { uid } = await backedUp('scrub-clean');
    const r = await cloud.run('scrub', uid);
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r, 'WARNING'), r.stderr).toHaveLength(0);
    expect(seen(codecThreadGet)).toBe(BLOCKS);
    expect(seen(clientGet)).toBe(0);
    expect(await validity(uid)).toBe(1);
  });

  it('a stored object with one byte flipped is reported as before and its version marked invalid; repaired, the version passes again', async () => {
    const { uid, refs } = await backedUp('scrub-damaged');
    const victim = refs[5]!;
    const original = await storedObject(victim);
    const damaged = Buffer.from(original);
    damaged[damaged.length >> 1]! ^= 0x01;
    await putObject(victim, damaged);

    const r = await cloud.run('scrub', uid);
    expect(r.code, r.stderr).toBe(20);
    expect(lines(r, 'ERROR'), r.stderr).toEqual(failedLines('stored object checksum differs from the one recorded at upload', uid, victim));
    expect(lines(r, 'WARNING'), r.stderr).toHaveLength(0);
    expect(r.stderr).toContain(`Marked version invalid (UID ${uid})`);
    // Found on its codec thread, then verified again through the S3 client, whose verdict counts.
    expect(seen(codecThreadGet)).toBe(BLOCKS);
    expect(seen(clientGet)).toBe(1);
    expect(await validity(uid)).toBe(0);

    await putObject(victim, original);
    const clean = await cloud.run('scrub', uid);
    expect(clean.code, clean.stderr).toBe(0);
    expect(await validity(uid)).toBe(1);
  });

  it('a stored object that vanished: "Blob not found", as before, with no warning', async () => {
    const { uid, refs } = await backedUp('scrub-vanished');
    const victim = refs[9]!;
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: blockKey(victim.id!) }));
    const r = await cloud.run('scrub', uid);
    expect(r.code, r.stderr).toBe(20);
    expect(lines(r, 'ERROR'), r.stderr).toEqual(failedLines('Blob not found', uid, victim));
    expect(lines(r, 'WARNING'), r.stderr).toHaveLength(0);
    expect(await validity(uid)).toBe(0);
  });

  it('a codec-thread GET answered 500, and one whose body is damaged on its way, are read again through the S3 client: the version passes', async () => {
    const { uid } = await backedUp('scrub-transport');
    const failing = onceAfter(3, codecThreadGet, INTERNAL);
    const corrupting = onceAfter(8, codecThreadGet, { corrupt: 'body' });
    proxy.inject((req) => failing(req) ?? corrupting(req));
    const r = await cloud.run('scrub', uid);
    expect(r.code, r.stderr).toBe(0);
    expect(proxy.count('InternalError')).toBe(1);
    expect(proxy.count('corrupt-body')).toBe(1);
    // The failed GET is a warning; bytes damaged on their way are not a finding about the object.
    expect(lines(r, 'WARNING'), r.stderr).toEqual([
      expect.stringMatching(/^ {2}WARNING: Reading block \d+ on a codec thread failed, .*InternalError.*; reading it again$/),
    ]);
    expect(lines(r, 'ERROR'), r.stderr).toHaveLength(0);
    expect(seen(clientGet)).toBe(2);
    expect(await validity(uid)).toBe(1);
  });
});
