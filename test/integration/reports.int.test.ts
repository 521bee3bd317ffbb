/**
 * stats, du and diff-meta in cloud mode: the real CLI against the real stack. Backups go through
 * S3, SQS and the api function; the reports read DynamoDB directly (the agent's read-only side)
 * and must show the same numbers as in embedded mode, with the stored sizes of the S3 objects.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { blockKey } from '../../shared/blocks/codec.ts';
import { clientConfig, testStack } from './context.ts';
import { runCloudCli as runCli } from './cloud-cli.ts';

const BS = 64 * 1024;
const TAIL = 1000;

describe('cloud mode: stats, du, diff-meta', () => {
  const stack = testStack();
  const s3 = new S3Client(clientConfig());
  let dir: string;
  let config: string;
  let v1: string;
  let v2: string;
  /** Block ids by position: one.img (left) and two.img (right), from diff-meta itself. */
  let left: string[];
  let right: string[];
  const cli = (...args: string[]) => runCli(['-c', config, ...args], dir);
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await cli('--json', ...args);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const storedSize = async (id: string) => (await s3.send(new HeadObjectCommand({ Bucket: stack.outputs.BucketName, Key: blockKey(id) }))).ContentLength!;
  const exists = async (id: string) =>
    storedSize(id).then(
      () => true,
      () => false,
    );

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-reports-'));
    config = join(dir, 'backy.cfg');
    writeFileSync(
      config,
      [
        '[DEFAULTS]',
        `encryption_key: ${randomBytes(32).toString('hex')}`,
        `block_size: ${BS}`,
        'disallow_rm_when_younger_than_days: 6',
        '',
        '[aws]',
        `stack_name: ${stack.stackName}`,
        `region: ${stack.region}`,
        `endpoint_url: ${stack.endpoint}`,
        '',
      ].join('\n'),
    );
    // one.img: R1 R1 0 R2 TEXT R3(1000 bytes)   two.img: R1 R4 0 R2 0 R5 R6   (random: shared with no other test's blocks)
    const r = Array.from({ length: 7 }, () => randomBytes(BS));
    const zero = Buffer.alloc(BS);
    const text = Buffer.from(`cloud reports ${randomBytes(8).toString('hex')} `.repeat(BS / 16)).subarray(0, BS);
    writeFileSync(join(dir, 'one.img'), Buffer.concat([r[1]!, r[1]!, zero, r[2]!, text, r[3]!.subarray(0, TAIL)]));
    writeFileSync(join(dir, 'two.img'), Buffer.concat([r[1]!, r[4]!, zero, r[2]!, zero, r[5]!, r[6]!]));
    for (const [image, name] of [
      ['one.img', 'rep-one'],
      ['two.img', 'rep-two'],
    ] as const) {
      const b = await cli('-m', 'backup', `file://${image}`, name);
      expect(b.code, b.stderr).toBe(0);
      if (name === 'rep-one') v1 = b.stdout.trim().split('\n').pop()!;
      else v2 = b.stdout.trim().split('\n').pop()!;
    }
  });

  it('diff-meta: per block SAME / DIFF / NEW RIGHT, versions of different lengths', async () => {
    const m = await cli('-m', 'diff-meta', v1, v2);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toBe('status|idx\nSAME|0\nDIFF|1\nSAME|2\nSAME|3\nDIFF|4\nDIFF|5\nNEW RIGHT|6\n');
    const rows = await json<{ left: string; right: string }[]>('diff-meta', v1, v2, '-f', 'left,right');
    left = rows.map((x) => x.left);
    right = rows.map((x) => x.right);
    expect(left[0]).toBe(left[1]);
    expect(left[2]).toBe('sparse');
    expect(left[6]).toBe('');
  });

  it('stats UID: the run counts, bytes written = the S3 objects it uploaded', async () => {
    const written = (await storedSize(left[0]!)) + (await storedSize(left[3]!)) + (await storedSize(left[4]!)) + (await storedSize(left[5]!));
    const [row] = await json<Record<string, number | string>[]>('stats', v1);
    expect(row).toMatchObject({
      uid: v1,
      name: 'rep-one',
      'size bytes': 5 * BS + TAIL,
      'size blocks': 6,
      'bytes read': 5 * BS + TAIL,
      'blocks read': 6,
      'bytes written': written,
      'blocks written': 4,
      'bytes dedup': BS,
      'blocks dedup': 1,
      'bytes sparse': BS,
      'blocks sparse': 1,
    });
    const two = await cli('-m', '-s', 'stats', v2, '-f', 'blocks written,blocks dedup,blocks sparse,bytes sparse');
    expect(two.stdout).toBe(`3|2|2|${2 * BS}\n`);
  });

  it('du UID: backy2 figures and the stored bytes from the block index', async () => {
    const [one] = await json<Record<string, number>[]>('du', v1);
    expect(one).toMatchObject({
      Real: 4 * BS + TAIL,
      Null: BS,
      'Dedup Own': 0,
      'Dedup Others': 3 * BS,
      Individual: BS + TAIL,
      'Est. Space': Math.round(BS / 3 + BS / 2 + BS + TAIL),
      'Est. Space freed': BS + TAIL,
      'Stored Est. Space freed': (await storedSize(left[4]!)) + (await storedSize(left[5]!)),
    });
    const [two] = await json<Record<string, number>[]>('du', v2);
    const onlyTwo = (await storedSize(right[1]!)) + (await storedSize(right[5]!)) + (await storedSize(right[6]!));
    expect(two).toMatchObject({
      Real: 5 * BS,
      Null: 2 * BS,
      'Dedup Others': 2 * BS,
      Individual: 3 * BS,
      'Est. Space freed': 3 * BS,
      'Stored Est. Space freed': onlyTwo,
    });
    // Without a UID: a row for each committed version of the repository, ours among them with the same figures.
    const all = await json<Record<string, number | string>[]>('du');
    expect(all.find((x) => x['uid'] === v2)).toEqual(two);
  });

  it('bad input: unknown field exit 1, unknown uid exit 3', async () => {
    const field = await cli('du', v1, '-f', 'Real,Bogus');
    expect(field.code).toBe(1);
    expect(field.stderr).toContain('Unknown field(s) Bogus');
    const unknown = await cli('diff-meta', v1, '00000000-0000-0000-0000-000000000000');
    expect(unknown.code).toBe(3);
  });

  it('rm + cleanup free exactly what du called Est. Space freed; the removed version keeps its stats row', async () => {
    expect((await cli('rm', '-f', v2)).code).toBe(0);
    const cleanup = await cli('cleanup', '-f');
    expect(cleanup.code, cleanup.stderr).toBe(0);
    expect(await Promise.all([1, 5, 6].map((i) => exists(right[i]!)))).toEqual([false, false, false]);
    expect(await Promise.all([0, 3, 4, 5].map((i) => exists(left[i]!)))).toEqual([true, true, true, true]);
    expect((await json<{ uid: string }[]>('stats', v2)).map((x) => x.uid)).toEqual([v2]);
    expect((await cli('du', v2)).code).toBe(3);
    const [one] = await json<Record<string, number>[]>('du', v1);
    expect(one).toMatchObject({ 'Dedup Own': BS, 'Dedup Others': 0, 'Est. Space freed': 3 * BS + TAIL });
  });
});
