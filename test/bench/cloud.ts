/**
 * The cloud step (BENCH_CLOUD=1): MiniStack started and the CDK stack deployed exactly as the
 * integration suite's global setup does; then ours in cloud mode (backup, restore of an image of
 * BENCH_CLOUD_MIB, default 256) beside a baseline in the same run: plain parallel PutObject and
 * GetObject through the SDK of as many 4 MiB objects as the backup stored, at the same
 * concurrency (simultaneous_writes / simultaneous_reads, 4 each by default). The emulator's S3 is
 * slow, so only the ratio to the baseline means something. The baseline runs twice per round: in
 * the bench's own process (SDK loaded, connections open), and as a fresh `node` process
 * (cloud-baseline.js), which pays Node's start-up and the SDK's load as each run of ours does.
 * BENCH_CLOUD_MIB may list several sizes (256,1024): one deploy, a table each.
 */
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pLimit from 'p-limit';
import type { TestProject } from 'vitest/node';
import { s3ClientOptions } from '../../shared/adapters/aws/clients.ts';
import type { Backy2TestStack } from '../integration/context.ts';
import { BIN, BLOCK, dir, kindOf, loadAverage, log, markdownTable, median, MiB, run, sha256, spread, writeImage } from './harness.ts';
import type { Context, Step } from './bench.ts';

const CONCURRENCY = 4;
/** The baseline as a fresh process (plain JavaScript, only the SDK's S3 client loaded). */
const BASELINE = join(import.meta.dirname, 'cloud-baseline.js');

export const cloudStep: Step = {
  name: 'cloud',
  skip: () => (process.env['BENCH_CLOUD'] === '1' ? null : 'BENCH_CLOUD=1 not set'),
  async run(ctx: Context) {
    const sizes = (process.env['BENCH_CLOUD_MIB'] ?? '256').split(',').map(Number);
    log(`cloud: starting MiniStack and deploying the stack (load ${loadAverage()})`);
    const { default: setup } = await import('../integration/global-setup.ts');
    let stack: Backy2TestStack | undefined;
    const stop = await setup({ provide: (_key: string, value: Backy2TestStack) => (stack = value) } as unknown as TestProject);
    try {
      const sections: string[] = [];
      for (const sizeMiB of sizes) sections.push(...(sections.length ? [''] : []), ...(await measure(ctx, stack!, sizeMiB)));
      return sections;
    } finally {
      await stop();
    }
  },
};

async function measure(ctx: Context, stack: Backy2TestStack, sizeMiB: number): Promise<string[]> {
  const env: NodeJS.ProcessEnv = {
    AWS_ENDPOINT_URL: stack.endpoint,
    AWS_REGION: stack.region,
    AWS_DEFAULT_REGION: stack.region,
    AWS_ACCESS_KEY_ID: stack.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: stack.credentials.secretAccessKey,
    BACKY2_RECORD_TIMEOUT_SECONDS: '600',
  };
  Object.assign(process.env, env);
  log(`cloud: ${sizeMiB} MiB image`);
  const image = join(dir, 'cloud.img');
  const bytes = sizeMiB * MiB;
  // Each round of each size its own text blocks (another variant): no backup dedups against an earlier one, as the baseline's puts do not.
  const variantOf = (round: number) => sizeMiB * 100 + round;
  const counts = writeImage(image, bytes, variantOf(1));
  const hash = await sha256(image);
  const home = join(dir, 'cloud-home');
  mkdirSync(home, { recursive: true });
  const config = join(dir, 'cloud.cfg');
  writeFileSync(
    config,
    [
      '[DEFAULTS]',
      `encryption_key: ${'c'.repeat(64)}`,
      `simultaneous_reads: ${CONCURRENCY}`,
      `simultaneous_writes: ${CONCURRENCY}`,
      '',
      '[aws]',
      `stack_name: ${stack.stackName}`,
      `region: ${stack.region}`,
      `endpoint_url: ${stack.endpoint}`,
      '',
    ].join('\n'),
  );
  // BENCH_CLOUD_TRACE=1: each run of ours with -d, its debug lines (seconds since its start) in the log.
  const trace = process.env['BENCH_CLOUD_TRACE'] === '1';
  const cli = async (...args: string[]) => {
    const started = Date.now();
    const measured = await run(process.execPath, [BIN, '-c', config, ...(trace ? ['-d'] : []), ...args], { env: { ...env, BACKY2_HOME: home } });
    if (trace)
      log(
        `${args.filter((a) => !a.startsWith('-')).join(' ')}: ${measured.seconds.toFixed(3)} s wall, started ${new Date(started).toISOString()}\n${measured.stderr
          .split('\n')
          .filter((l) => l.includes('DEBUG'))
          .join('\n')}`,
      );
    return measured;
  };

  const s3 = new S3Client({ region: stack.region, endpoint: stack.endpoint, forcePathStyle: true, ...s3ClientOptions({ sockets: 2 * CONCURRENCY }) });
  const bucket = `backy2-bench-baseline-${randomBytes(4).toString('hex')}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const objects = counts.random + counts.text;
  const body = randomBytes(BLOCK);
  const putAll = async (round: number) => {
    const limit = pLimit(CONCURRENCY);
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: objects }, (_, i) =>
        limit(() => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `r${round}/${i}`, Body: body, IfNoneMatch: '*' }))),
      ),
    );
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const getAll = async (round: number) => {
    const limit = pLimit(CONCURRENCY);
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: objects }, (_, i) =>
        limit(async () => {
          const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `r${round}/${i}` }));
          await out.Body!.transformToByteArray();
        }),
      ),
    );
    return Number(process.hrtime.bigint() - started) / 1e9;
  };

  const baselineProcess = async (op: 'put' | 'get', prefix: string) => {
    const args = [BASELINE, op, stack.endpoint, stack.region, bucket, prefix, String(objects), String(CONCURRENCY)];
    return (await run(process.execPath, args, { env })).seconds;
  };

  const r: Record<'put' | 'get' | 'putProcess' | 'getProcess' | 'backup' | 'restore', number[]> = {
    put: [],
    get: [],
    putProcess: [],
    getProcess: [],
    backup: [],
    restore: [],
  };
  for (let round = 1; round <= ctx.rounds; round++) {
    log(`cloud round ${round}: baseline and ours (load ${loadAverage()})`);
    r.put.push(await putAll(round));
    r.putProcess.push(await baselineProcess('put', `p${sizeMiB}-${round}`));
    r.get.push(await getAll(round));
    r.getProcess.push(await baselineProcess('get', `p${sizeMiB}-${round}`));
    // A fresh image per round (other random and text blocks): every backup uploads all its blocks, as the baseline does.
    if (round > 1) writeImage(image, bytes, variantOf(round));
    const roundHash = round > 1 ? await sha256(image) : hash;
    const b = await cli('-m', 'backup', `file://${image}`, `bench-${round}`);
    r.backup.push(b.seconds);
    const uid = b.stdout.trim().split('\n').pop()!;
    const target = join(dir, `cloud-restored-${round}.img`);
    r.restore.push((await cli('restore', uid, `file://${target}`)).seconds);
    if ((await sha256(target)) !== roundHash) throw new Error('cloud restore differs from the image');
    rmSync(target, { force: true });
  }
  rmSync(image, { force: true });
  s3.destroy();
  ctx.json[`cloud-${sizeMiB}`] = { sizeMiB, objects, concurrency: CONCURRENCY, seconds: r };
  const ratio = (base: number[], s: number[]) => (median(base) / median(s)).toFixed(2);
  const line = (name: string, s: number[], inProcess: number[], fresh: number[]) => [
    name,
    spread(s),
    (bytes / MiB / median(s)).toFixed(1),
    ratio(inProcess, s),
    ratio(fresh, s),
  ];
  if (kindOf(0) !== 'zero') throw new Error('bench image layout changed');
  return [
    `## Cloud mode against MiniStack (${sizeMiB} MiB image: ${objects} stored blocks; concurrency ${CONCURRENCY}; ${ctx.rounds} rounds)`,
    '',
    markdownTable(
      ['step', 'seconds', 'MiB/s (of the image)', 'in-process baseline s / s', 'fresh-process baseline s / s'],
      [
        line(`baseline in the bench's process: PutObject ×${objects} (4 MiB)`, r.put, r.put, r.putProcess),
        line(`baseline, a fresh node process: PutObject ×${objects}`, r.putProcess, r.put, r.putProcess),
        line('ours: backup', r.backup, r.put, r.putProcess),
        line(`baseline in the bench's process: GetObject ×${objects} (4 MiB)`, r.get, r.get, r.getProcess),
        line(`baseline, a fresh node process: GetObject ×${objects}`, r.getProcess, r.get, r.getProcess),
        line('ours: restore', r.restore, r.get, r.getProcess),
      ],
      1,
    ),
  ];
}
