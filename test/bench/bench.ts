/**
 * npm run bench: times backup, unchanged re-backup and restore of a generated image against the
 * embedded store (SQLite + block directory) in a temporary directory, each as a child process
 * whose wall time, peak RSS and stored bytes are measured; and, when they are installed, the same
 * three steps with restic and borg on the same image, in the same run, with ratios ours/peer.
 * Then, in the same run: the primitives (HMAC-SHA256, AES-256-GCM, zstd, memcpy) and the bound
 * they set with our ratio to it; scrub; an incremental backup (1 % of blocks changed, -f and
 * -r hints); peak RSS at several image sizes; and, with BENCH_CLOUD=1, the cloud path against
 * the emulator beside plain SDK PutObject/GetObject at the same concurrency.
 *
 *   BENCH_SIZE_MIB   image size in MiB (default 1024): a quarter zeros, a quarter random,
 *                    half text-like data that zstd level 1 compresses about 3.5x
 *   BENCH_IMAGE=FILE an existing image instead (a disk image, a tar of /usr): copied into the
 *                    bench's directory (the incremental step changes its copy); its blocks are
 *                    classified as the codec would (zeros, compressible, not) for the bound
 *   BENCH_ROUNDS     rounds of backup/re-backup/restore per tool, interleaved (default 3):
 *                    tables give the median and the range
 *   BENCH_PEERS=0    skip restic and borg
 *   BENCH_SIZES      image sizes in MiB for the memory step (default 100,1024,8192; "" skips it)
 *   BENCH_CLOUD=1    also run the cloud step (starts MiniStack and deploys the stack: minutes)
 *   BENCH_STEPS      run only these steps (comma-separated names, see STEPS)
 *   BENCH_READS / BENCH_WRITES   simultaneous_reads / simultaneous_writes for ours
 *   BENCH_DIR        where the temporary directory goes (default: the OS temp dir)
 *   BENCH_KEEP=1     keep the temporary directory
 *   BENCH_JSON=FILE  also write the results as JSON
 *
 * A step is an entry of STEPS: a name and a function from the run's context to the lines it
 * prints (Markdown); adding one is adding an entry.
 */
import { closeSync, copyFileSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import {
  BLOCK,
  type BlockKind,
  classifyImage,
  dir,
  has,
  loadAverage,
  log,
  markdownTable,
  median,
  type Measured,
  MiB,
  sha256,
  spread,
  syncSeconds,
  timeBin,
  writeImage,
  bytesUnder,
  kindOf,
} from './harness.ts';
import { computeBound, diskFlushRate, fasterOf, measurePrimitives, type Bound, type Primitives } from './primitives.ts';
import { borg, ours, OURS, restic, type Ours, type Tool } from './tools.ts';
import { cloudStep } from './cloud.ts';
import { nbdStep } from './nbd.ts';

const givenImage = process.env['BENCH_IMAGE'] || null;
const sizeMiB = givenImage ? statSync(givenImage).size / MiB : Number(process.env['BENCH_SIZE_MIB'] ?? 1024);
if (!givenImage && (!Number.isInteger(sizeMiB) || sizeMiB < 1))
  throw new Error(`BENCH_SIZE_MIB must be a positive integer, got ${process.env['BENCH_SIZE_MIB']}`);
const rounds = Number(process.env['BENCH_ROUNDS'] ?? 3);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`BENCH_ROUNDS must be a positive integer, got ${process.env['BENCH_ROUNDS']}`);
const withPeers = process.env['BENCH_PEERS'] !== '0';
const keep = process.env['BENCH_KEEP'] === '1';
const memorySizes = (process.env['BENCH_SIZES'] ?? '100,1024,8192')
  .split(',')
  .filter((s) => s.trim())
  .map(Number);

type StepName = 'backup' | 're-backup' | 'restore';

export interface Row {
  tool: string;
  step: StepName;
  round: number;
  seconds: number;
  mibPerSecond: number;
  peakRssMiB: number | null;
  cpuSeconds: number | null;
  storedBytes: number | null;
  /** After a restore: how long a `sync` then took (what the tool left unwritten). */
  flushSeconds: number | null;
}

export interface Context {
  image: string;
  imageBytes: number;
  imageHash: string;
  counts: Record<BlockKind, number>;
  /** Each block's kind, in order. */
  kinds: BlockKind[];
  rounds: number;
  tools: Tool[];
  rows: Row[];
  /** Ours of the last round: its repository holds both versions of the image. */
  ours: Ours | null;
  /** The peers of the last round, their repositories kept for the incremental step. */
  peers: Tool[];
  primitives: Primitives | null;
  bound: Bound | null;
  json: Record<string, unknown>;
}

export interface Step {
  name: string;
  /** Why the step does not run in this configuration, or null. */
  skip?: (ctx: Context) => string | null;
  run: (ctx: Context) => Promise<string[]>;
}

const mibps = (bytes: number, seconds: number) => bytes / MiB / seconds;

/** `f` run `n` times, one after the other. */
async function sequential<T>(n: number, f: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Steps

const PRIMITIVE_NAMES: [keyof Primitives, string][] = [
  ['hmacSha256', 'HMAC-SHA256 (block id)'],
  ['sha256', 'SHA-256 (stored checksum)'],
  ['aesGcmEncrypt', 'AES-256-GCM encrypt'],
  ['aesGcmDecrypt', 'AES-256-GCM decrypt'],
  ['zstdCompressText', 'zstd -1 compress, compressible block'],
  ['zstdCompressSample', 'zstd -1 compress, 64 KiB sample of a random block'],
  ['zstdDecompressText', 'zstd decompress, compressible block (output)'],
  ['memcpy', 'memcpy'],
  ['pageCacheRead', 'read from the page cache (4 MiB preads)'],
  ['newFileWrite', 'write into a new file (4 MiB, page cache, no fsync)'],
  ['zeroCheck', 'zero check (Buffer.equals)'],
];

const primitivesStep: Step = {
  name: 'primitives',
  async run(ctx) {
    log('measuring primitives');
    ctx.primitives = measurePrimitives(ctx.image, ctx.kinds);
    ctx.bound = computeBound(ctx.primitives, ctx.counts);
    ctx.json['primitives'] = ctx.primitives;
    ctx.json['bound'] = ctx.bound;
    const p = ctx.primitives;
    const rows = PRIMITIVE_NAMES.map(([key, name]) => [name, p[key].toFixed(0)]);
    return [
      `## Primitives (one core, node:crypto / node:zlib, on the image's blocks; its compressible blocks compress ${p.textRatio.toFixed(2)}x)`,
      '',
      markdownTable(['primitive', 'MiB/s'], rows, 1),
    ];
  },
};

/**
 * The primitives measured again once the tools have run, and the bound recomputed from each
 * one's faster rate: one measurement at a slow moment of the host made the bound too easy.
 */
function remeasurePrimitives(ctx: Context): string[] {
  log('measuring primitives again');
  const first = ctx.primitives!;
  const again = measurePrimitives(ctx.image, ctx.kinds);
  ctx.primitives = fasterOf(first, again);
  ctx.bound = computeBound(ctx.primitives, ctx.counts);
  ctx.json['primitivesAgain'] = again;
  ctx.json['bound'] = ctx.bound;
  const rows = PRIMITIVE_NAMES.map(([key, name]) => [name, first[key].toFixed(0), again[key].toFixed(0), ctx.primitives![key].toFixed(0)]);
  return [
    '### Primitives measured again after the tools step (MiB/s); the bound below uses the faster',
    '',
    markdownTable(['primitive', 'before', 'after', 'bound uses'], rows, 1),
    '',
  ];
}

/** Backup, re-backup and restore by every tool, `rounds` times, interleaved; every restore checked by SHA-256. */
const toolsStep: Step = {
  name: 'tools',
  async run(ctx) {
    for (let round = 1; round <= ctx.rounds; round++) {
      const last = round === ctx.rounds;
      const tools: Tool[] = [ours(ctx.image, `ours-r${round}`)];
      if (withPeers && has('restic')) tools.push(restic(ctx.image, `restic-r${round}`));
      if (withPeers && has('borg')) tools.push(borg(`borg-r${round}`));
      ctx.tools = tools;
      for (const tool of tools) {
        ctx.rows.push(...(await runTool(tool, ctx, round)));
        if (!last) rmSync(tool.repo, { recursive: true, force: true });
      }
      if (last) {
        ctx.ours = tools[0] as Ours;
        ctx.peers = tools.slice(1);
      }
    }
    ctx.json['rows'] = ctx.rows;
    const out = [`## Backup, re-backup, restore (${ctx.rounds} round${ctx.rounds > 1 ? 's' : ''}: median (min-max))`, '', toolsTable(ctx.rows)];
    const peers = [...new Set(ctx.rows.map((r) => r.tool))].filter((t) => t !== OURS);
    if (peers.length) {
      out.push('', 'ratios ours/peer, of the medians (throughput > 1: we are faster; RSS and repository < 1: we use less)', '');
      out.push(
        markdownTable(
          ['peer', 'step', 'throughput', 'peak RSS', 'repository'],
          peers.flatMap((p) => ratioRows(ctx.rows, p)),
        ),
      );
    }
    return out;
  },
};

async function runTool(tool: Tool, ctx: Context, round: number): Promise<Row[]> {
  log(`${tool.name} round ${round}: init, backup, re-backup, restore (load ${loadAverage()})`);
  await tool.init();
  const row = (step: StepName, m: Measured, storedBytes: number | null): Row => ({
    tool: tool.name,
    step,
    round,
    seconds: m.seconds,
    mibPerSecond: mibps(ctx.imageBytes, m.seconds),
    peakRssMiB: m.peakRssMiB,
    cpuSeconds: m.cpuSeconds,
    storedBytes,
    flushSeconds: null,
  });
  const rows = [row('backup', await tool.backup(), bytesUnder(tool.repo)), row('re-backup', await tool.rebackup(), bytesUnder(tool.repo))];
  const { measured, path } = await tool.restore();
  rows.push({ ...row('restore', measured, null), flushSeconds: syncSeconds() });
  if ((await sha256(path)) !== ctx.imageHash) throw new Error(`${tool.name}: the restored image differs from the original`);
  rmSync(path, { force: true });
  return rows;
}

function cell(rows: Row[], tool: string, step: StepName) {
  const rs = rows.filter((r) => r.tool === tool && r.step === step);
  const rss = rs.flatMap((r) => (r.peakRssMiB === null ? [] : [r.peakRssMiB]));
  const cpu = rs.flatMap((r) => (r.cpuSeconds === null ? [] : [r.cpuSeconds]));
  return {
    seconds: rs.map((r) => r.seconds),
    cpu,
    mibPerSecond: median(rs.map((r) => r.mibPerSecond)),
    rss,
    stored: rs[0]?.storedBytes ?? null,
  };
}

function toolsTable(rows: Row[]): string {
  const tools = [...new Set(rows.map((r) => r.tool))];
  const body = tools.flatMap((tool) =>
    (['backup', 're-backup', 'restore'] as const).map((step) => {
      const c = cell(rows, tool, step);
      const cpu = c.cpu.length ? median(c.cpu).toFixed(2) : '?';
      return [
        tool,
        step,
        spread(c.seconds),
        c.mibPerSecond.toFixed(1),
        cpu,
        c.rss.length ? spread(c.rss, 0) : '?',
        c.stored === null ? '' : (c.stored / MiB).toFixed(1),
      ];
    }),
  );
  return markdownTable(['tool', 'step', 'seconds', 'MiB/s', 'CPU s', 'peak RSS MiB', 'repository MiB'], body);
}

function ratioRows(rows: Row[], peer: string): string[][] {
  return (['backup', 're-backup', 'restore'] as const).flatMap((step) => {
    const a = cell(rows, OURS, step);
    const b = cell(rows, peer, step);
    if (!a.seconds.length || !b.seconds.length) return [];
    const rss = a.rss.length && b.rss.length ? (median(a.rss) / median(b.rss)).toFixed(2) : '?';
    const stored = a.stored !== null && b.stored ? (a.stored / b.stored).toFixed(2) : '';
    return [[peer, step, (a.mibPerSecond / b.mibPerSecond).toFixed(2), rss, stored]];
  });
}

/** Our medians against the bound, and the issue's goals as ratios to the faster peer. */
const boundStep: Step = {
  name: 'bound',
  skip: (ctx) => (ctx.bound && ctx.rows.length ? null : 'needs the primitives and tools steps'),
  async run(ctx) {
    const remeasured = remeasurePrimitives(ctx);
    const b = ctx.bound!;
    // What any command of ours costs before its first block: Node, our modules, the argument parser.
    const startUp = ctx.ours ? median(await sequential(3, async () => (await ctx.ours!.cli('--version')).seconds)) : null;
    const body = (['backup', 're-backup', 'restore'] as const).map((step) => {
      const key = step === 're-backup' ? 'rebackup' : step;
      const ourSeconds = median(cell(ctx.rows, OURS, step).seconds);
      const withStartUp = startUp === null ? '?' : (ourSeconds / (b.seconds[key] + startUp)).toFixed(2);
      return [step, b.cpuSeconds[key].toFixed(2), b.seconds[key].toFixed(2), ourSeconds.toFixed(2), (ourSeconds / b.seconds[key]).toFixed(2), withStartUp];
    });
    return [
      `## Bound from the primitives (${b.cores} cores; start-up, metadata and disk flush not included)`,
      '',
      ...remeasured,
      markdownTable(['step', 'CPU s of primitives', 'bound s', 'ours s (median)', 'ours / bound', 'ours / (bound + start-up)'], body, 1),
      '',
      `start-up: \`backy2 --version\` takes ${startUp === null ? '?' : startUp.toFixed(2)} s (median of 3, this run)`,
      '',
      ...durableRestore(ctx, b),
    ];
  },
};

/**
 * Restore until the data is on disk. Ours syncs its target before it exits (a restore that says
 * it finished is durable); restic and borg leave it in the page cache, so the `sync` run right
 * after each restore is added to their time. The disk's own rate bounds a durable restore too.
 */
function durableRestore(ctx: Context, b: Bound): string[] {
  const diskMiBps = diskFlushRate(dir);
  const dataMiB = ((ctx.counts.random + ctx.counts.text) * BLOCK) / MiB;
  const diskSeconds = dataMiB / diskMiBps;
  const bound = Math.max(b.seconds.restore, diskSeconds);
  ctx.json['durableRestore'] = { diskMiBps, dataMiB, diskSeconds, bound };
  const tools = [...new Set(ctx.rows.map((r) => r.tool))];
  const total = (tool: string) => median(ctx.rows.filter((r) => r.tool === tool && r.step === 'restore').map((r) => r.seconds + (r.flushSeconds ?? 0)));
  const ourTotal = total(OURS);
  const body = tools.map((tool) => {
    const rs = ctx.rows.filter((r) => r.tool === tool && r.step === 'restore');
    const flush = rs.map((r) => r.flushSeconds ?? 0);
    return [
      tool,
      median(rs.map((r) => r.seconds)).toFixed(2),
      median(flush).toFixed(2),
      total(tool).toFixed(2),
      tool === OURS ? '' : (total(tool) / ourTotal).toFixed(2),
    ];
  });
  return [
    '### Restore until the data is on disk (medians; a `sync` right after each restore, added)',
    '',
    markdownTable(['tool', 'restore s', 'sync after s', 'total s', 'ours faster by'], body, 1),
    '',
    `disk: ${diskMiBps.toFixed(0)} MiB/s written and flushed (256 MiB, fdatasync); the image's ${dataMiB.toFixed(0)} MiB of data take ${diskSeconds.toFixed(2)} s to reach it,`,
    `so a durable restore takes at least ${bound.toFixed(2)} s (the larger of that and the CPU bound ${b.seconds.restore.toFixed(2)} s); ours / that bound: ${(ourTotal / bound).toFixed(2)}`,
  ];
}

const scrubStep: Step = {
  name: 'scrub',
  skip: (ctx) => (ctx.ours ? null : 'needs the tools step'),
  async run(ctx) {
    const o = ctx.ours!;
    const runs: Measured[] = [];
    for (let round = 1; round <= ctx.rounds; round++) {
      log(`scrub round ${round} (load ${loadAverage()})`);
      runs.push(await o.cli('scrub', o.second()));
    }
    const seconds = runs.map((m) => m.seconds);
    ctx.json['scrub'] = runs.map(({ seconds: s, peakRssMiB }) => ({ seconds: s, peakRssMiB }));
    const bound = ctx.bound?.seconds.scrub;
    return [
      '## Scrub (every stored block of the version read, decrypted, decompressed and its id recomputed)',
      '',
      markdownTable(
        ['step', 'seconds', 'MiB/s (of the image)', 'peak RSS MiB', 'bound s', 'ours / bound'],
        [
          [
            'scrub',
            spread(seconds),
            mibps(ctx.imageBytes, median(seconds)).toFixed(1),
            spread(
              runs.map((m) => m.peakRssMiB ?? 0),
              0,
            ),
            bound?.toFixed(2) ?? '?',
            bound ? (median(seconds) / bound).toFixed(2) : '?',
          ],
        ],
        1,
      ),
    ];
  },
};

/**
 * 1 % of the blocks changed (new random data), in place, so every tool sees the same file
 * changed: ours reads it all against the base (-f), or only the hinted regions (-r, as from
 * `rbd diff`); restic and borg re-read the file (its mtime changed) and dedup against their
 * last backup. The hinted version is restored and checked.
 */
const incrementalStep: Step = {
  name: 'incremental',
  skip: (ctx) => (ctx.ours ? null : 'needs the tools step'),
  async run(ctx) {
    const o = ctx.ours!;
    const blocks = Math.ceil(ctx.imageBytes / BLOCK);
    const changed = Math.max(1, Math.round(blocks / 100));
    // The same blocks get new random bytes every round: each round has 1 % new data against every
    // tool's last backup (restic and borg skip nothing by mtime), and against our base version
    // the hinted regions stay exact.
    const positions = Array.from({ length: changed }, (_, k) => Math.min(blocks - 1, Math.floor((k * blocks) / changed) + 1 + (k % 3)));
    const hints = positions.map((idx) => ({ offset: idx * BLOCK, length: Math.min(BLOCK, ctx.imageBytes - idx * BLOCK), exists: 'true' }));
    const hintsFile = join(dir, 'hints.json');
    writeFileSync(hintsFile, JSON.stringify(hints));
    const changeImage = () => {
      const fd = openSync(ctx.image, 'r+');
      const buf = Buffer.alloc(BLOCK);
      for (const h of hints) {
        randomFillSync(buf, 0, h.length);
        writeSync(fd, buf, 0, h.length, h.offset);
      }
      closeSync(fd);
    };
    const results: Record<string, number[]> = { 'ours -f': [], 'ours -r': [] };
    let hinted = '';
    let changedHash = '';
    for (let round = 1; round <= ctx.rounds; round++) {
      changeImage();
      changedHash = await sha256(ctx.image);
      log(`incremental round ${round} (load ${loadAverage()})`);
      results['ours -f']!.push((await o.cli('-m', 'backup', '-f', o.second(), `file://${ctx.image}`, 'bench')).seconds);
      const r = await o.cli('-m', 'backup', '-r', hintsFile, '-f', o.second(), `file://${ctx.image}`, 'bench');
      results['ours -r']!.push(r.seconds);
      hinted = r.stdout.trim().split('\n').pop()!;
      for (const peer of ctx.peers) {
        const m = await peer.backupAgain(`inc${round}`);
        const list = results[peer.name] ?? [];
        results[peer.name] = list;
        list.push(m.seconds);
      }
    }
    const restored = join(dir, 'restored-incremental.img');
    await o.cli('restore', hinted, `file://${restored}`);
    if ((await sha256(restored)) !== changedHash) throw new Error('the hinted incremental backup does not restore to the changed image');
    rmSync(restored, { force: true });
    ctx.json['incremental'] = { changedBlocks: changed, seconds: results };
    const fastestPeer = Object.entries(results)
      .filter(([k]) => !k.startsWith('ours'))
      .map(([, v]) => median(v))
      .sort((a, b) => a - b)[0];
    const body = Object.entries(results).map(([name, s]) => [
      name,
      spread(s),
      mibps(ctx.imageBytes, median(s)).toFixed(1),
      fastestPeer ? (fastestPeer / median(s)).toFixed(2) : '',
    ]);
    return [
      `## Incremental backup: ${changed} of ${blocks} blocks changed (1 %)`,
      '',
      markdownTable(['run', 'seconds', 'MiB/s (of the image)', 'speed vs the faster peer'], body, 1),
    ];
  },
};

/** Peak RSS of backup, restore and scrub at several image sizes: it must not grow with the image. */
const memoryStep: Step = {
  name: 'memory',
  skip: () => (memorySizes.length ? null : 'BENCH_SIZES is empty'),
  async run(ctx) {
    const body: string[][] = [];
    const json: unknown[] = [];
    for (const size of memorySizes) {
      log(`memory: ${size} MiB image (load ${loadAverage()})`);
      const image = join(dir, `memory-${size}.img`);
      writeImage(image, size * MiB);
      const o = ours(image, `memory-${size}`);
      await o.init();
      const backup = await o.backup();
      const rebackup = await o.rebackup();
      const { measured: restore, path } = await o.restore();
      rmSync(path, { force: true });
      const scrub = await o.cli('scrub', o.second());
      rmSync(image, { force: true });
      rmSync(o.repo, { recursive: true, force: true });
      const steps = { backup, 're-backup': rebackup, restore, scrub };
      json.push({ sizeMiB: size, ...Object.fromEntries(Object.entries(steps).map(([k, m]) => [k, { seconds: m.seconds, peakRssMiB: m.peakRssMiB }])) });
      body.push([`${size} MiB`, ...Object.values(steps).flatMap((m) => [mibps(size * MiB, m.seconds).toFixed(1), (m.peakRssMiB ?? 0).toFixed(0)])]);
    }
    ctx.json['memory'] = json;
    return [
      '## Memory: peak RSS by image size (ours, default settings)',
      '',
      markdownTable(['image', 'backup MiB/s', 'RSS MiB', 're-backup MiB/s', 'RSS MiB', 'restore MiB/s', 'RSS MiB', 'scrub MiB/s', 'RSS MiB'], body, 1),
    ];
  },
};

export const STEPS: Step[] = [primitivesStep, toolsStep, boundStep, scrubStep, nbdStep, incrementalStep, memoryStep, cloudStep];

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const image = join(dir, 'image.img');
  const genStart = Date.now();
  let imageBytes: number;
  let layout: { counts: Record<BlockKind, number>; kinds: BlockKind[] };
  if (givenImage) {
    log(`copying ${givenImage} (${sizeMiB.toFixed(1)} MiB) to ${dir} and classifying its blocks`);
    copyFileSync(givenImage, image);
    imageBytes = statSync(image).size;
    layout = classifyImage(image);
  } else {
    imageBytes = sizeMiB * MiB;
    log(`generating a ${sizeMiB} MiB image in ${dir}`);
    const counts = writeImage(image, imageBytes);
    layout = { counts, kinds: Array.from({ length: Math.ceil(imageBytes / BLOCK) }, (_, i) => kindOf(i)) };
  }
  const { counts, kinds } = layout;
  const imageHash = await sha256(image);
  log(`image ready in ${((Date.now() - genStart) / 1000).toFixed(1)} s`);
  const ctx: Context = {
    image,
    imageBytes,
    imageHash,
    counts,
    kinds,
    rounds,
    tools: [],
    rows: [],
    ours: null,
    peers: [],
    primitives: null,
    bound: null,
    json: {},
  };
  const only = process.env['BENCH_STEPS']?.split(',').map((s) => s.trim());
  const loadBefore = loadAverage();
  const sections: string[][] = [];
  const skipped: string[] = [];
  if (!withPeers) skipped.push('restic and borg (BENCH_PEERS=0)');
  else for (const peer of ['restic', 'borg']) if (!has(peer)) skipped.push(`${peer} (not installed)`);
  for (const step of STEPS) {
    if (only && !only.includes(step.name)) continue;
    const why = step.skip?.(ctx) ?? null;
    if (why) {
      skipped.push(`${step.name} (${why})`);
      continue;
    }
    sections.push(await step.run(ctx));
  }
  const cpu = cpus();
  const flags = (() => {
    try {
      const info = readFileSync('/proc/cpuinfo', 'utf8');
      return ['sha_ni', 'aes', 'avx2', 'avx512f'].filter((f) => new RegExp(`\\b${f}\\b`).test(info));
    } catch {
      return [];
    }
  })();
  const header = [
    `backy2 bench, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${
      givenImage
        ? `${givenImage}, ${sizeMiB.toFixed(1)} MiB (blocks: ${counts.zero} zeros, ${counts.text} compressible, ${counts.random} not)`
        : `${sizeMiB} MiB image (1/4 zeros, 1/4 random, 1/2 text-like ~3.5x under zstd -1)`
    }, block size 4 MiB`,
    `machine: ${availableParallelism()} cores (${cpu[0]?.model.trim() ?? '?'}; ${flags.includes('sha_ni') ? 'with' : 'NO'} SHA extensions; flags ${flags.join(' ')}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; ${ctx.tools.map((t) => `${t.name}: ${t.version}`).join('; ')}`,
    `load average before / after: ${loadBefore} / ${loadAverage()}`,
    `peak RSS: ${timeBin ? '/usr/bin/time %M' : '/proc/PID/status VmHWM, polled'}; CPU s: user + system seconds (/usr/bin/time; 2 cores allow twice the wall time); each command starts after sync (untimed); repository MiB: bytes of all files in the repository after the step`,
    ...(skipped.length ? [`skipped: ${skipped.join(', ')}`] : []),
  ];
  const out = [...header, ...sections.flatMap((s) => ['', ...s])];
  process.stdout.write(out.join('\n') + '\n');
  if (process.env['BENCH_JSON']) writeFileSync(process.env['BENCH_JSON'], JSON.stringify({ sizeMiB, counts, header, ...ctx.json }, null, 2));
}

try {
  await main();
} finally {
  if (keep) log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
