/**
 * Recover benchmark (embedded, real CLI): 100 versions over an image set, each with a change after
 * its backup, then the SQLite file is deleted and `backy2 recover` rebuilds it. Measures the
 * storage overhead of the journal (objects and bytes per version and per change), the time of
 * recover, and the requests it makes (journal objects read, LISTs), and checks that `ls -m`,
 * `stats -m` and `du -m` print what they did before. Run once: `node test/bench/recover.ts`
 * (BENCH_RECOVER_IMAGES, BENCH_RECOVER_IMAGE_MIB, BENCH_RECOVER_VERSIONS scale it).
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { blockData, makeImage, MiB, overwriteBlock, Repo } from '../support/cli.ts';

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
const journal = (repo: Repo) => walk(join(repo.dataDir, 'journal'));

async function must(p: Promise<{ code: number; output: string; stdout: string }>, what: string) {
  const r = await p;
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.output}`);
  return r;
}

const repo = await Repo.create({ blockSize: BS, minAgeDays: 0 });
try {
  const blocksPerImage = (IMAGE_MIB * MiB) / BS;
  const last: string[] = [];
  for (let i = 0; i < IMAGES; i++) makeImage(repo.path(`img${i}.img`), Array.from({ length: blocksPerImage }, (_, b) => i * 100_000 + b), BS);
  const t0 = Date.now();
  let changeBytes = 0;
  let changes = 0;
  for (let v = 0; v < VERSIONS; v++) {
    const i = v % IMAGES;
    if (v >= IMAGES) overwriteBlock(repo.path(`img${i}.img`), (v * 7) % blocksPerImage, BS, blockData(1_000_000 + v, BS)); // ~1 block changed per version
    const base = last[i] ? ['-f', last[i]!] : [];
    last[i] = await repo.backup(`img${i}.img`, `vm${i}`, ...base);
    const before = journal(repo);
    // One change per version after its backup (a tag; every 10th also protected).
    await must(repo.cli('add-tag', last[i]!, `t${v}`), 'add-tag');
    if (v % 10 === 0) await must(repo.cli('protect', last[i]!), 'protect');
    const after = journal(repo);
    changeBytes += after.bytes - before.bytes;
    changes += v % 10 === 0 ? 2 : 1;
  }
  const backupSeconds = (Date.now() - t0) / 1000;
  const total = journal(repo);
  const blocks = walk(join(repo.dataDir, 'blocks'));
  const observe = async () => ({
    ls: (await must(repo.cliG(['-m'], 'ls'), 'ls')).stdout,
    stats: (await must(repo.cliG(['-m'], 'stats'), 'stats')).stdout,
    du: (await must(repo.cliG(['-m'], 'du'), 'du')).stdout,
  });
  const before = await observe();
  for (const s of ['', '-wal', '-shm']) rmSync(repo.sqlitePath + s, { force: true });
  const t1 = Date.now();
  const r = await must(repo.cli('recover'), 'recover');
  const recoverSeconds = (Date.now() - t1) / 1000;
  const after = await observe();
  const same = JSON.stringify(before) === JSON.stringify(after);
  const report = {
    cpu: `${cpus()[0]?.model} x${cpus().length}`,
    images: IMAGES,
    imageMiB: IMAGE_MIB,
    versions: VERSIONS,
    changes,
    backupSeconds,
    blockObjects: blocks.files,
    blockBytes: blocks.bytes,
    journalObjects: total.files,
    journalBytes: total.bytes,
    journalBytesPerChange: Math.round(changeBytes / changes),
    journalObjectsPerVersionBackup: (total.files - changes) / VERSIONS,
    journalBytesPerVersionBackup: Math.round((total.bytes - changeBytes) / VERSIONS),
    recoverSeconds,
    recoverRequests: { journalGets: total.files, journalLists: Math.ceil(total.files / 1000), blockLists: Math.ceil(blocks.files / 1000) },
    recoverSummary: r.output.split('\n').find((l) => l.includes('Recovered')),
    lsStatsDuIdentical: same,
  };
  console.log(JSON.stringify(report, null, 2));
  if (!same) process.exitCode = 1;
} finally {
  repo.remove();
}
