/**
 * The cloud step (BENCH_CLOUD=1): MiniStack started and the CDK stack deployed exactly as the
 * integration suite's global setup does; then ours in cloud mode (backup, restore and a full
 * scrub of an image of BENCH_CLOUD_MIB, default 256: seconds, peak RSS, CPU seconds) beside a
 * baseline in the same run: plain parallel PutObject and GetObject through the SDK of as many
 * 4 MiB objects as the backup stored, at the same concurrency (simultaneous_writes /
 * simultaneous_reads, 4 each by default). The emulator's S3 is slow, so only the ratio to the
 * baseline means something. The baseline runs twice per round: in the bench's own process (SDK
 * loaded, connections open), and as a fresh `node` process (cloud-baseline.js), which pays Node's
 * start-up and the SDK's load as each run of ours does.
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
import { BIN, BLOCK, dir, kindOf, loadAverage, log, markdownTable, median, type Measured, MiB, run, sha256, spread, writeImage } from './harness.ts';
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
    return run(process.execPath, args, { env });
  };

  const base: Record<'put' | 'get', number[]> = { put: [], get: [] };
  const fresh: Record<'put' | 'get', Measured[]> = { put: [], get: [] };
  const ours: Record<'backup' | 'restore' | 'scrub', Measured[]> = { backup: [], restore: [], scrub: [] };
  for (let round = 1; round <= ctx.rounds; round++) {
    log(`cloud round ${round}: baseline and ours (load ${loadAverage()})`);
    base.put.push(await putAll(round));
    fresh.put.push(await baselineProcess('put', `p${sizeMiB}-${round}`));
    base.get.push(await getAll(round));
    fresh.get.push(await baselineProcess('get', `p${sizeMiB}-${round}`));
    // A fresh image per round (other random and text blocks): every backup uploads all its blocks, as the baseline does.
    if (round > 1) writeImage(image, bytes, variantOf(round));
    const roundHash = round > 1 ? await sha256(image) : hash;
    const b = await cli('-m', 'backup', `file://${image}`, `bench-${round}`);
    ours.backup.push(b);
    const uid = b.stdout.trim().split('\n').pop()!;
    const target = join(dir, `cloud-restored-${round}.img`);
    ours.restore.push(await cli('restore', uid, `file://${target}`));
    if ((await sha256(target)) !== roundHash) throw new Error('cloud restore differs from the image');
    rmSync(target, { force: true });
    // A full scrub reads every stored block back, as the restore does.
    ours.scrub.push(await cli('scrub', uid));
  }
  rmSync(image, { force: true });
  s3.destroy();
  const seconds = (ms: Measured[]) => ms.map((m) => m.seconds);
  // Every child process measured (the in-process baseline's costs are the bench's own: not measured).
  const children = { ...ours, putProcess: fresh.put, getProcess: fresh.get };
  ctx.json[`cloud-${sizeMiB}`] = {
    sizeMiB,
    objects,
    concurrency: CONCURRENCY,
    seconds: { ...base, ...mapValues(children, seconds) },
    peakRssMiB: mapValues(children, (ms) => ms.map((m) => m.peakRssMiB)),
    cpuSeconds: mapValues(children, (ms) => ms.map((m) => m.cpuSeconds)),
  };
  const ratio = (baseline: number[], s: number[]) => (median(baseline) / median(s)).toFixed(2);
  /** A row: seconds, throughput, peak RSS and CPU seconds (of a child process: `costs`), both ratios. */
  const line = (name: string, s: number[], costs: Measured[] | null, op: 'put' | 'get') => [
    name,
    spread(s),
    (bytes / MiB / median(s)).toFixed(1),
    costs ? measuredSpread(costs, (m) => m.peakRssMiB, 0) : '-',
    costs ? measuredSpread(costs, (m) => m.cpuSeconds) : '-',
    ratio(base[op], s),
    ratio(seconds(fresh[op]), s),
  ];
  const measuredLine = (name: string, ms: Measured[], op: 'put' | 'get') => line(name, seconds(ms), ms, op);
  if (kindOf(0) !== 'zero') throw new Error('bench image layout changed');
  return [
    `## Cloud mode against MiniStack (${sizeMiB} MiB image: ${objects} stored blocks; concurrency ${CONCURRENCY}; ${ctx.rounds} rounds)`,
    '',
    markdownTable(
      ['step', 'seconds', 'MiB/s (of the image)', 'peak RSS MiB', 'CPU s', 'in-process baseline s / s', 'fresh-process baseline s / s'],
      [
        line(`baseline in the bench's process: PutObject ×${objects} (4 MiB)`, base.put, null, 'put'),
        measuredLine(`baseline, a fresh node process: PutObject ×${objects}`, fresh.put, 'put'),
        measuredLine('ours: backup', ours.backup, 'put'),
        line(`baseline in the bench's process: GetObject ×${objects} (4 MiB)`, base.get, null, 'get'),
        measuredLine(`baseline, a fresh node process: GetObject ×${objects}`, fresh.get, 'get'),
        measuredLine('ours: restore', ours.restore, 'get'),
        measuredLine('ours: scrub (full)', ours.scrub, 'get'),
      ],
      1,
    ),
  ];
}

/** The median and range of what `of` measured, or "?" where it was not measured (no /usr/bin/time: no CPU seconds). */
function measuredSpread(ms: Measured[], of: (m: Measured) => number | null, digits = 2): string {
  const xs = ms.flatMap((m) => of(m) ?? []);
  return xs.length ? spread(xs, digits) : '?';
}

const mapValues = <K extends string, V, W>(o: Record<K, V>, f: (v: V) => W): Record<K, W> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v as V)])) as Record<K, W>;
