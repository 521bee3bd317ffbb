/**
 * Recover benchmark (embedded): 100 versions over an image set, backed up in-process (the CLI's
 * own pipeline, without a process start per version), each changed after its backup (a tag; every
 * 10th also protected); then the SQLite file is deleted and the real CLI's `backy2 recover`
 * rebuilds it. Measures the journal's storage overhead (objects and bytes per version and per
 * change), recover's time and the requests it makes (journal objects read, LISTs), and checks that
 * `ls -m`, `stats -m` and `du -m` print what they did before. Run once: `node test/bench/recover.ts`
 * (BENCH_RECOVER_IMAGES, BENCH_RECOVER_IMAGE_MIB, BENCH_RECOVER_VERSIONS scale it).
 */
import { readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { blockData, makeImage, MiB, runCli } from '../support/cli.ts';
import { MASTER_KEY, makeRepo } from '../unit/helpers/repo.ts';

const IMAGES = Number(process.env['BENCH_RECOVER_IMAGES'] ?? 4);
const IMAGE_MIB = Number(process.env['BENCH_RECOVER_IMAGE_MIB'] ?? 256);
const VERSIONS = Number(process.env['BENCH_RECOVER_VERSIONS'] ?? 100);
const BS = 4 * MiB;

function walk(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const sub = walk(p);
      files += sub.files;
      bytes += sub.bytes;
    } else {
      files++;
      bytes += statSync(p).size;
    }
  }
  return { files, bytes };
}

const repo = makeRepo({ blockSize: BS });
const journal = () => walk(join(repo.dataPath, 'journal'));
const config = join(repo.dir, 'bench.cfg');
writeFileSync(
  config,
  [
    '[DEFAULTS]',
    `block_size: ${BS}`,
    `encryption_key: ${MASTER_KEY.toString('hex')}`,
    '[MetaBackend]',
    `engine: sqlite:///${repo.sqlitePath}`,
    '[DataBackend]',
    'type: file',
    `path: ${repo.dataPath}`,
    '',
  ].join('\n'),
);
const cli = async (...args: string[]) => {
  const r = await runCli(['-c', config, ...args], { cwd: repo.dir, env: { HOME: repo.dir }, timeoutMs: 1_800_000 });
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.output}`);
  return r;
};
try {
  const blocksPerImage = (IMAGE_MIB * MiB) / BS;
  const images = Array.from({ length: IMAGES }, (_, i) =>
    makeImage(
      join(repo.dir, `img${i}.img`),
      Array.from({ length: blocksPerImage }, (_, b) => i * 100_000 + b),
      BS,
    ),
  );
  const last: (string | undefined)[] = [];
  let changeBytes = 0;
  let changes = 0;
  const t0 = Date.now();
  for (let v = 0; v < VERSIONS; v++) {
    const i = v % IMAGES;
    if (v >= IMAGES) blockData(1_000_000 + v, BS).copy(images[i]!, ((v * 7) % blocksPerImage) * BS); // one block changed per version
    const uid = await repo.backup(images[i]!, `vm${i}`, last[i] ? { baseUid: last[i]! } : {});
    last[i] = uid;
    const before = journal();
    await repo.backend.catalog.execute({ type: 'AddTags', uid, tags: [`t${v}`] });
    changes++;
    if (v % 10 === 0) {
      await repo.backend.catalog.execute({ type: 'ProtectVersion', uid });
      changes++;
    }
    changeBytes += journal().bytes - before.bytes;
  }
  const backupSeconds = (Date.now() - t0) / 1000;
  await repo.backend.close();
  const total = journal();
  const blocks = walk(join(repo.dataPath, 'blocks'));
  const manifests = walk(join(repo.dataPath, 'manifests'));
  const observe = async () => ({ ls: (await cli('-m', 'ls')).stdout, stats: (await cli('-m', 'stats')).stdout, du: (await cli('-m', 'du')).stdout });
  const before = await observe();
  for (const s of ['', '-wal', '-shm']) rmSync(repo.sqlitePath + s, { force: true });
  const load = loadavg()[0];
  const t1 = Date.now();
  const r = await cli('recover');
  const recoverSeconds = (Date.now() - t1) / 1000;
  const after = await observe();
  const same = JSON.stringify(before) === JSON.stringify(after);
  console.log(
    JSON.stringify(
      {
        cpu: `${cpus()[0]?.model} x${cpus().length}`,
        loadAverageAtRecover: load,
        images: IMAGES,
        imageMiB: IMAGE_MIB,
        versions: VERSIONS,
        changes,
        backupSeconds,
        blockObjects: blocks.files,
        blockBytes: blocks.bytes,
        manifestObjects: manifests.files,
        manifestBytes: manifests.bytes,
        journalObjects: total.files,
        journalBytes: total.bytes,
        journalBytesPerChange: Math.round(changeBytes / changes),
        journalObjectsPerVersionBackup: (total.files - changes) / VERSIONS,
        journalBytesPerVersionBackup: Math.round((total.bytes - changeBytes) / VERSIONS),
        recoverSeconds,
        recoverRequests: { journalGets: total.files, journalLists: Math.ceil(total.files / 1000), blockLists: Math.ceil(blocks.files / 1000) },
        recoverSummary: r.output.split('\n').find((l) => l.includes('Recovered')),
        lsStatsDuIdentical: same,
        sqliteBytes: statSync(repo.sqlitePath).size,
      },
      null,
      2,
    ),
  );
  if (!same) process.exitCode = 1;
} finally {
  rmSync(repo.dir, { recursive: true, force: true });
}
