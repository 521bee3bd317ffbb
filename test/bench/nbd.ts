/**
 * The nbd step: the re-backup version served by `backy2 nbd -r` and read by real clients on the
 * same host — a sequential nbdcopy beside restore of the same version in the same run, and random
 * 4 KiB reads (16 in flight on one connection) with a cold and a warm cache.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { RawNbd } from '../support/nbd.ts';
import type { Step } from './bench.ts';
import { dir, has, log, markdownTable, median, MiB, run, sha256 } from './harness.ts';
import { OURS, type Ours } from './tools.ts';

const COLD_READS = 400;
const WARM_READS = 20_000;
const WARM_REGION = 128 * MiB;

export const nbdStep: Step = {
  name: 'nbd',
  skip: (ctx) => (!ctx.ours ? 'needs the tools step' : !has('nbdcopy') ? 'nbdcopy not installed' : null),
  async run(ctx) {
    const o = ctx.ours!;
    const uid = o.second();
    log('nbd: nbdcopy of the re-backup version');
    const seq = await serve(o);
    const copy = join(dir, 'nbdcopy.img');
    const measured = await run('nbdcopy', [`nbd://127.0.0.1:${seq.port}/${uid}`, copy]);
    const serverRssMiB = seq.peakRssMiB();
    await seq.stop();
    if ((await sha256(copy)) !== ctx.imageHash) throw new Error('nbd: the copied image differs from the original');
    rmSync(copy, { force: true });
    const nbdcopy = ctx.imageBytes / MiB / measured.seconds;
    const restores = ctx.rows.filter((r) => r.tool === OURS && r.step === 'restore').map((r) => r.mibPerSecond);
    const restore = restores.length ? median(restores) : null;

    // Cold: a cache smaller than one block, no read-ahead: every read fetches and verifies a block.
    log('nbd: random 4 KiB reads, cold cache');
    const cold = await serve(o, '--cache-mib', '1', '--read-ahead', '0');
    const coldRate = await randomReads(cold.port, uid, COLD_READS, ctx.imageBytes);
    await cold.stop();
    log('nbd: random 4 KiB reads, warm cache (a 128 MiB region read once first)');
    // A cache that holds the region (the default, 32 MiB, does not).
    const warm = await serve(o, '--read-ahead', '0', '--cache-mib', String((2 * WARM_REGION) / MiB));
    const region = Math.min(ctx.imageBytes, WARM_REGION);
    await readSequentially(warm.port, uid, region);
    const warmRate = await randomReads(warm.port, uid, WARM_READS, region);
    await warm.stop();

    ctx.json['nbd'] = {
      nbdcopyMiBps: nbdcopy,
      restoreMiBps: restore,
      coldReadsPerSecond: coldRate,
      warmReadsPerSecond: warmRate,
      nbdcopyPeakRssMiB: measured.peakRssMiB,
      serverPeakRssMiB: serverRssMiB,
    };
    return [
      '## nbd (the re-backup version served by `backy2 nbd -r`, read by libnbd clients on the same host)',
      '',
      markdownTable(
        ['measure', 'value'],
        [
          ['nbdcopy, sequential MiB/s', nbdcopy.toFixed(1)],
          ['restore of the same version, MiB/s (median of the tools step)', restore?.toFixed(1) ?? '?'],
          ['nbdcopy / restore', restore ? (nbdcopy / restore).toFixed(2) : '?'],
          ['peak RSS of the server during the nbdcopy (default settings), MiB', serverRssMiB?.toFixed(0) ?? '?'],
          [`random 4 KiB reads/s, cold cache (${COLD_READS} reads over the whole image)`, coldRate.toFixed(0)],
          [`random 4 KiB reads/s, warm cache (${WARM_READS} reads in ${region / MiB} MiB)`, warmRate.toFixed(0)],
        ],
        1,
      ),
    ];
  },
};

async function serve(o: Ours, ...extra: string[]): Promise<{ port: number; peakRssMiB: () => number | null; stop: () => Promise<void> }> {
  const cmd = o.command('nbd', '-r', '-p', '0', ...extra);
  const child = spawn(cmd.file, cmd.args, { env: { ...process.env, ...cmd.env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  while (!/listening on [^ ]+:\d+/.test(stderr)) {
    if (child.exitCode !== null) throw new Error(`backy2 nbd exited: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = Number(/listening on [^ ]+:(\d+)/.exec(stderr)![1]);
  const stop = () =>
    new Promise<void>((r) => {
      child.on('close', () => r());
      child.kill('SIGTERM');
    });
  return { port, peakRssMiB: () => peakRssOf(child.pid), stop };
}

/** The process's peak RSS so far (the kernel's VmHWM), in MiB; null where /proc does not tell. */
function peakRssOf(pid: number | undefined): number | null {
  try {
    const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib ? Number(kib) / 1024 : null;
  } catch {
    return null;
  }
}

async function connect(port: number, uid: string): Promise<RawNbd> {
  const c = await RawNbd.open(port);
  await c.greet();
  if ((await c.go(uid)) !== 1) throw new Error('nbd: the export was refused');
  return c;
}

async function readSequentially(port: number, uid: string, bytes: number): Promise<void> {
  const c = await connect(port, uid);
  for (let at = 0; at < bytes; at += MiB) {
    c.request(0, at, MiB, 1n);
    if ((await c.simpleReply())?.error !== 0 || !(await c.read(MiB))) throw new Error('nbd: warm-up read failed');
  }
  c.close();
}

/** `count` reads of 4 KiB at random aligned offsets below `regionBytes`, 16 in flight; reads per second. */
async function randomReads(port: number, uid: string, count: number, regionBytes: number): Promise<number> {
  const c = await connect(port, uid);
  let seed = 42;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const send = (i: number) => c.request(0, (next() % Math.floor(regionBytes / 4096)) * 4096, 4096, BigInt(i));
  const started = process.hrtime.bigint();
  let sent = 0;
  for (; sent < Math.min(16, count); sent++) send(sent);
  for (let done = 0; done < count; done++) {
    const reply = await c.simpleReply();
    if (!reply || reply.error || !(await c.read(4096))) throw new Error(`nbd: random read failed (${reply?.error})`);
    if (sent < count) send(sent++);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  c.close();
  return count / seconds;
}
