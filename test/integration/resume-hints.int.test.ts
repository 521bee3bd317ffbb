/**
 * backup -c (continue an interrupted backup) and backup -r (rbd diff hints) in cloud mode:
 * the real CLI against the real stack, chunks recorded through SQS by the ingest function.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import type { Version } from '../../shared/domain/types.ts';
import { CloudCli } from './cloud-cli.ts';
import { clientConfig, testStack } from './context.ts';

const BS = 4096; // 1024 blocks per chunk: 4 MiB chunks
const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('cloud mode: backup -c and backup -r', () => {
  const stack = testStack();
  const store = new DynamoMetadataStore(DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig())), {
    eventsTable: stack.outputs.EventsTableName,
    projectionsTable: stack.outputs.ProjectionsTableName,
  });
  let cloud: CloudCli;
  let dir: string;
  const start = (...args: string[]) => cloud.start(...args);
  const cli = (...args: string[]) => cloud.run(...args);
  const byName = async (name: string): Promise<Version | undefined> => (await store.listVersions()).find((v) => v.name === name);

  beforeAll(() => {
    cloud = new CloudCli([`block_size: ${BS}`, 'disallow_rm_when_younger_than_days: 0']);
    dir = cloud.dir;
  });

  it('a killed backup continues with -c: recorded chunks are not read again; restore is bit-exact', async () => {
    const name = `resume-${randomBytes(3).toString('hex')}`;
    // Chunk 0 (1024 blocks) is almost all sparse: it is recorded at once. Chunk 1 holds 512 blocks
    // to upload, so the backup is still busy there when chunk 0 shows up as recorded.
    const image = Buffer.alloc(12 * MiB);
    randomBytes(BS).copy(image, 5 * BS);
    randomBytes(512 * BS).copy(image, 1024 * BS);
    writeFileSync(join(dir, 'r.img'), image);
    const running = start('backup', 'file://r.img', name);
    let version: Version | undefined;
    for (let i = 0; i < 2400 && !(version && version.recordedChunks >= 1); i++) {
      await sleep(50);
      version = await byName(name);
    }
    running.child.kill('SIGKILL');
    await running.result;
    expect(version, 'no chunk was recorded before the kill').toBeDefined();
    // Let ingest finish what was sent; then the recorded count is what -c will find.
    let recorded = -1;
    for (let stable = 0; stable < 6; ) {
      await sleep(500);
      const now = (await byName(name))!.recordedChunks;
      stable = now === recorded ? stable + 1 : 0;
      recorded = now;
    }
    const v = (await byName(name))!;
    expect(v.status).toBe('pending');
    expect(recorded).toBeLessThan(v.chunkCount);

    const r = await cli('--json', 'backup', '-c', v.uid, 'file://r.img', name);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { uid: string; stats: { bytesRead: number } };
    expect(out.uid).toBe(v.uid);
    expect(out.stats.bytesRead).toBe(image.length - recorded * 1024 * BS);
    expect((await cli('restore', v.uid, 'file://r.out')).code).toBe(0);
    expect(sha(readFileSync(join(dir, 'r.out')))).toBe(sha(image));
    // A complete version cannot be continued.
    expect((await cli('backup', '-c', v.uid, 'file://r.img', name)).code).toBe(4);
  });

  it('-r reads only the hinted regions of an incremental; restore is bit-exact', async () => {
    const name = `hints-${randomBytes(3).toString('hex')}`;
    const image = randomBytes(4 * MiB);
    writeFileSync(join(dir, 'h.img'), image);
    const base = await cli('-m', 'backup', 'file://h.img', name);
    expect(base.code, base.stderr).toBe(0);
    const baseUid = base.stdout.trim().split('\n').pop()!;
    randomBytes(BS).copy(image, 7 * BS);
    Buffer.alloc(2 * BS).copy(image, 100 * BS);
    writeFileSync(join(dir, 'h.img'), image);
    writeFileSync(
      join(dir, 'h.json'),
      JSON.stringify([
        { offset: 7 * BS, length: BS, exists: 'true' },
        { offset: 100 * BS, length: 2 * BS, exists: 'false' },
      ]),
    );
    const r = await cli('--json', 'backup', '-f', baseUid, '-r', 'h.json', 'file://h.img', name);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { uid: string; stats: { bytesRead: number; blocksWritten: number; blocksSparse: number } };
    expect(out.stats.bytesRead).toBe((1 + 10) * BS); // the hinted block and the sanity sample
    expect(out.stats.blocksWritten).toBe(1);
    expect(out.stats.blocksSparse).toBe(2);
    expect((await cli('restore', out.uid, 'file://h.out')).code).toBe(0);
    expect(sha(readFileSync(join(dir, 'h.out')))).toBe(sha(image));

    // restore -c N continues in place: only blocks from N on are written again.
    const damaged = Buffer.from(image);
    damaged.fill(0xee, 500 * BS);
    writeFileSync(join(dir, 'h.out'), damaged);
    const resumed = await cli('restore', '-c', '500', out.uid, 'file://h.out');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/Restored 524\/524 blocks/);
    expect(sha(readFileSync(join(dir, 'h.out')))).toBe(sha(image));
  });
});
