/**
 * backup -c (continue an interrupted backup) and backup -r (rbd diff hints) in cloud mode:
 * the real CLI against the real stack, chunks recorded through SQS by the ingest function.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import type { Version } from '../../shared/domain/types.ts';
import { clientConfig, cliEnv, testStack } from './context.ts';

const CLI = join(import.meta.dirname, '..', '..', 'agent', 'cli', 'main.ts');
const BS = 4096; // 1024 blocks per chunk: 4 MiB chunks
const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('cloud mode: backup -c and backup -r', () => {
  const stack = testStack();
  const store = new DynamoMetadataStore(DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig())), {
    eventsTable: stack.outputs.EventsTableName,
    projectionsTable: stack.outputs.ProjectionsTableName,
  });
  let dir: string;
  let config: string;
  const start = (...args: string[]) => {
    const child = spawn(process.execPath, [CLI, '-c', config, ...args], { cwd: dir, env: cliEnv({ BACKY2_RECORD_TIMEOUT_SECONDS: '240' }) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const result = new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr }));
    });
    return { child, result };
  };
  const cli = (...args: string[]) => start(...args).result;
  const byName = async (name: string): Promise<Version | undefined> => (await store.listVersions()).find((v) => v.name === name);

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-resume-'));
    config = join(dir, 'backy.cfg');
    writeFileSync(
      config,
      ['[DEFAULTS]', `encryption_key: ${randomBytes(32).toString('hex')}`, `block_size: ${BS}`, 'disallow_rm_when_younger_than_days: 0', '', '[aws]', `stack_name: ${stack.stackName}`, `region: ${stack.region}`, `endpoint_url: ${stack.endpoint}`, ''].join('\n'),
    );
  });

  it('a killed backup continues with -c: recorded chunks are not read again; restore is bit-exact', async () => {
    const name = `resume-${randomBytes(3).toString('hex')}`;
    const image = randomBytes(12 * MiB);
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
  });
});
