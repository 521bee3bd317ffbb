/**
 * Schedulers and retention in cloud mode, against the deployed test stack: `enforce` through the
 * CLI (removals go through the api function, so its minimum age applies), `due`/`sla`, and the
 * scheduled retention function applying the per-name policy deployed with the stack
 * (TEST_CONTEXT `retention: 'sched-retention-int: latest1'`).
 *
 * Versions "made days ago" are written straight into the stack's DynamoDB tables with the
 * shared command core and a clock set back (empty images: no blocks, so scrub and cleanup leave
 * them alone). Names are unique per run except the one the deployed policy names.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { clientConfig, cliEnv, eventually, testStack } from './context.ts';
import { runCloudCli as runCli } from './cloud-cli.ts';

const DAY = 86_400_000;
const policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86_400 };

describe('cloud mode: schedules and retention', () => {
  const stack = testStack();
  const store = new DynamoMetadataStore(DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig()), { marshallOptions: { removeUndefinedValues: true } }), {
    eventsTable: stack.outputs.EventsTableName,
    projectionsTable: stack.outputs.ProjectionsTableName,
  });
  const run = randomBytes(3).toString('hex');
  let dir: string;
  let config: string;
  const cli = (...args: string[]) => runCli(['-c', config, ...args], dir, cliEnv({ BACKY2_RECORD_TIMEOUT_SECONDS: '240' }));

  /** A committed version of an empty image, dated `daysAgo` days back. */
  async function agedVersion(name: string, daysAgo: number): Promise<string> {
    const uid = randomUUID();
    const then = () => new Date(Date.now() - daysAgo * DAY);
    await executeVersionCommand(
      store,
      {
        type: 'StartVersion',
        uid,
        name,
        snapshotName: '',
        sizeBytes: 0,
        blockSize: 1024 * 1024,
        chunkEntries: 1024,
        baseUid: null,
        tags: [],
        expire: null,
        host: 'aged',
      },
      policy,
      then,
    );
    const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
    await executeVersionCommand(store, { type: 'CommitVersion', uid, stats }, policy, then);
    return uid;
  }

  const uidsOf = async (name: string) => {
    const r = await cli('--json', 'ls', name);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { uid: string }[]).map((v) => v.uid);
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-retention-'));
    config = join(dir, 'backy.cfg');
    writeFileSync(
      config,
      [
        '[DEFAULTS]',
        `encryption_key: ${randomBytes(32).toString('hex')}`,
        'block_size: 1048576',
        '',
        '[aws]',
        `stack_name: ${stack.stackName}`,
        `region: ${stack.region}`,
        `endpoint_url: ${stack.endpoint}`,
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'small.img'), randomBytes(64 * 1024));
  });

  it('enforce through the CLI: --dry-run changes nothing; then old versions go, a too-young one is refused and stays', async () => {
    const name = `enforce-int-${run}`;
    const old = [await agedVersion(name, 20), await agedVersion(name, 10)];
    const young: string[] = [];
    for (let i = 0; i < 2; i++) {
      const b = await cli('-m', 'backup', '-t', 'x', 'file://small.img', name);
      expect(b.code, b.stderr).toBe(0);
      young.push(b.stdout.trim().split('\n').pop()!);
    }
    expect(await uidsOf(name)).toEqual([...old, ...young]);

    const dry = await cli('--json', 'enforce', name, 'latest1', '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect((JSON.parse(dry.stdout) as { uid: string; action: string }[]).map((r) => [r.uid, r.action])).toEqual([
      [old[0], 'would remove'],
      [old[1], 'would remove'],
      [young[0], 'would remove'],
    ]);
    expect(await uidsOf(name)).toEqual([...old, ...young]);

    const real = await cli('--json', 'enforce', name, 'latest1');
    expect(real.code, real.stderr).toBe(0);
    const rows = JSON.parse(real.stdout) as { uid: string; action: string; reason: string }[];
    expect(rows.map((r) => [r.uid, r.action])).toEqual([
      [old[0], 'removed'],
      [old[1], 'removed'],
      [young[0], 'refused'],
    ]);
    expect(rows[2]!.reason).toMatch(/too young/);
    expect(await uidsOf(name)).toEqual(young);
  });

  it('due and sla read the same versions in cloud mode (sla exits 21 on a breach)', async () => {
    const name = `due-int-${run}`;
    const b = await cli('-m', 'backup', 'file://small.img', name);
    expect(b.code, b.stderr).toBe(0);
    const due = await cli('-m', '-s', 'due', name);
    expect(due.code, due.stderr).toBe(0);
    expect(due.stdout).toBe(''); // the first backup got b_daily, b_weekly, b_monthly: nothing due
    const never = await cli('-m', '-s', 'due', `never-${run}`, '-s', 'daily');
    expect(never.stdout).toBe(`never-${run}|daily|${never.stdout.split('|')[2]}|1970-01-01 00:00:00\n`);
    const sla = await cli('-m', '-s', 'sla', name, '-s', 'daily');
    expect(sla.code).toBe(21);
    expect(sla.stdout).toBe(`${name}|daily: Too few backups. Found 1, should be 8.\n`);
  });

  it('the retention schedule applies the deployed per-name policy: old versions go, the newest and too-young ones stay, other names are untouched', async () => {
    const name = 'sched-retention-int';
    const old = [await agedVersion(name, 30), await agedVersion(name, 20), await agedVersion(name, 10)];
    // 2 days old: not the newest, but younger than the stack's 6-day minimum, so refused; 1 day: the newest.
    const young = [await agedVersion(name, 2), await agedVersion(name, 1)];
    const otherName = `sched-other-${run}`;
    const other = [await agedVersion(otherName, 30), await agedVersion(otherName, 20)];
    await eventually(
      async () => {
        const left = await uidsOf(name);
        return old.every((uid) => !left.includes(uid)) ? true : undefined;
      },
      180_000,
      3000,
      'the scheduled retention to apply latest1 to sched-retention-int',
    );
    const left = await uidsOf(name);
    for (const uid of young) expect(left).toContain(uid);
    expect(await uidsOf(otherName)).toEqual(other);
  });
});
