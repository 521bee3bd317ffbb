/**
 * kill -9 at random points of backup, restore and cleanup -f, then continue and verify; and every
 * kind of command at once on one repository. Nothing committed is ever lost, a killed restore never
 * leaves a complete-looking target, a killed backup continues with -c. The counts are printed.
 * Sized to run in well under a minute on two loaded cores; TORTURE_SEED=N replays a run.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { HOOK_TIMEOUT, fileSha, lastLine, Repo, sha256, type RunningCli } from '../support/cli.ts';

const BS = 64 * 1024;
const BLOCKS = 64;

/** A small deterministic PRNG (mulberry32), so a failing run can be replayed with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Versions as the database has them (read in-process: cheaper than a CLI run). */
async function versions(repo: Repo) {
  const store = SqliteMetadataStore.open(repo.sqlitePath);
  try {
    return await store.listVersions();
  } finally {
    store.close();
  }
}

/** Kills the process with SIGKILL once its progress shows (plus a random delay), or finds it already done. */
async function killSomewhere(cli: RunningCli, progress: RegExp, random: () => number): Promise<'killed' | 'finished'> {
  await cli.waitForStderr(progress, 60_000).catch(() => {});
  await sleep(Math.floor(random() * 150));
  if (cli.child.exitCode !== null) return 'finished';
  cli.child.kill('SIGKILL');
  const r = await cli.result;
  return r.code === 0 && cli.child.signalCode === null ? 'finished' : 'killed';
}

describe('kill -9 torture', { timeout: 180_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, simultaneousReads: 2, simultaneousWrites: 2 });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('backup, restore and cleanup -f killed at random points; continued; every committed version restores bit-exact and scrubs clean', async () => {
    const seed = Number(process.env['TORTURE_SEED'] ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const counts = {
      backupKilled: 0,
      backupFinishedFirst: 0,
      resumedWithC: 0,
      restartedBeforeStart: 0,
      killedAfterCommit: 0,
      restoreKilled: 0,
      restoreFinishedFirst: 0,
      cleanupKilled: 0,
      cleanupFinishedFirst: 0,
      staleTempsSeen: 0,
    };
    const expected = new Map<string, string>();
    // How long a command takes to get going here: cleanup -f is killed around that moment, when it works.
    const t0 = Date.now();
    expect((await repo.cli('ls')).code).toBe(0);
    const startupMs = Date.now() - t0;
    const image = Buffer.from(randomBytes(BLOCKS * BS));
    const src = repo.path('vm.img');
    for (let round = 0; round < 3; round++) {
      // A new state of the disk: some blocks change, one becomes sparse.
      for (let i = 0; i < 8; i++) randomBytes(BS).copy(image, Math.floor(random() * BLOCKS) * BS);
      image.fill(0, Math.floor(random() * BLOCKS) * BS, 0);
      writeFileSync(src, image);
      const sha = sha256(image);

      // backup, killed somewhere; then continued with -c (or started again if it died before its start).
      const before = new Set((await versions(repo)).map((v) => v.uid));
      const backup = repo.startCli('backup', `file://${src}`, 'vm');
      let uid: string;
      if ((await killSomewhere(backup, /Backed up \d+\//, random)) === 'finished') {
        counts.backupFinishedFirst++;
        uid = (await versions(repo)).find((v) => !before.has(v.uid))!.uid;
      } else {
        counts.backupKilled++;
        counts.staleTempsSeen += existsSync(join(repo.dataDir, '.tmp')) ? readdirSync(join(repo.dataDir, '.tmp')).length : 0;
        const interrupted = (await versions(repo)).find((v) => !before.has(v.uid));
        if (interrupted?.status === 'committed') {
          // Killed between its commit and its exit: the version is complete (verified below like the others).
          counts.killedAfterCommit++;
          uid = interrupted.uid;
        } else if (interrupted) {
          const resumed = await repo.cliG(['-m'], 'backup', '-c', interrupted.uid, `file://${src}`, 'vm');
          expect(resumed.code, resumed.output).toBe(0);
          uid = lastLine(resumed.stdout);
          expect(uid).toBe(interrupted.uid);
          counts.resumedWithC++;
        } else {
          counts.restartedBeforeStart++;
          uid = await repo.backup(src, 'vm');
        }
      }
      expected.set(uid, sha);

      // restore, killed somewhere: the target is either absent or complete, never a look-alike.
      const out = repo.path(`restore-${round}.img`);
      const restore = repo.startCli('restore', uid, `file://${out}`);
      if ((await killSomewhere(restore, /Restored \d+\//, random)) === 'finished') counts.restoreFinishedFirst++;
      else counts.restoreKilled++;
      if (existsSync(out)) expect(fileSha(out), 'a killed restore left a target that is not the version').toBe(sha);
      const again = await repo.cli('restore', '-f', uid, `file://${out}`);
      expect(again.code, again.output).toBe(0);
      expect(fileSha(out)).toBe(sha);

      // Garbage for cleanup -f: the version before the previous one goes; cleanup -f is killed, then run again.
      const older = [...expected.keys()].at(-3);
      if (older) {
        expect((await repo.cli('rm', '-f', older)).code).toBe(0);
        expected.delete(older);
      }
      const cleanup = repo.startCli('cleanup', '-f');
      await sleep(Math.floor(startupMs * (0.4 + random() * 0.8)));
      if (cleanup.child.exitCode !== null) counts.cleanupFinishedFirst++;
      else {
        cleanup.child.kill('SIGKILL');
        counts.cleanupKilled++;
      }
      await cleanup.result;
      const cleanAgain = await repo.cli('cleanup', '-f');
      expect(cleanAgain.code, cleanAgain.output).toBe(0);
    }

    // Everything still there: every version kept restores bit-exact and scrubs clean.
    const checks = await Promise.all(
      [...expected].map(async ([uid, sha], i) => {
        const out = repo.path(`final-${i}.img`);
        const r = await repo.cli('restore', uid, `file://${out}`);
        const s = await repo.cli('scrub', uid);
        return { r: r.code, s: s.code, sha: r.code === 0 ? fileSha(out) : '', want: sha };
      }),
    );
    for (const c of checks) expect(c).toEqual({ r: 0, s: 0, sha: c.want, want: c.want });
    expect(readdirSync(join(repo.dataDir, '.tmp')), 'stale temporary files of killed writers are gone').toEqual([]);
    console.log(`kill -9 torture (seed ${seed}): ${JSON.stringify(counts)}; ${expected.size} versions verified`);
    expect(counts.backupKilled + counts.backupFinishedFirst).toBe(3);
  });
});

describe('every command at once on one repository', { timeout: 180_000 }, () => {
  let repo: Repo;
  let grace0: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    grace0 = repo.writeConfig('grace0.cfg', { blockSize: BS, cleanupGraceSeconds: 0 });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('backups, rm, cleanup, cleanup -f, scrub and restore running together lose nothing', async () => {
    const expected = new Map<string, string>();
    const image = (name: string, base?: Buffer) => {
      const data = base ? Buffer.from(base) : randomBytes(32 * BS);
      for (let i = 0; i < 6; i++) randomBytes(BS).copy(data, ((i * 5) % 32) * BS);
      writeFileSync(repo.path(name), data);
      return data;
    };
    const a = image('a.img');
    const b = image('b.img', a);
    for (const [name, data] of [
      ['a', a],
      ['b', b],
    ] as const)
      expected.set(await repo.backup(`${name}.img`, name), sha256(data));
    const codes: Record<string, number[]> = {};
    const tally = (what: string, code: number) => {
      const list = codes[what] ?? [];
      codes[what] = list;
      list.push(code);
    };
    for (let round = 0; round < 1; round++) {
      const [doomed, kept] = [...expected.keys()].slice(-2);
      const c = image(`c${round}.img`, a);
      const d = image(`d${round}.img`);
      const out = repo.path(`out-${round}.img`);
      const [bc, bd, rm, cl, clf, scrub, restore] = await Promise.all([
        repo.cliG(['-m'], 'backup', `file://${repo.path(`c${round}.img`)}`, 'c', '-f', kept!),
        repo.cliG(['-m'], 'backup', `file://${repo.path(`d${round}.img`)}`, 'd'),
        repo.cli('rm', '-f', doomed!),
        repo.run('-c', grace0, 'cleanup'),
        repo.run('-c', grace0, 'cleanup', '-f'),
        repo.cli('scrub', kept!),
        repo.cli('restore', kept!, `file://${out}`),
      ]);
      for (const [what, r] of Object.entries({ backup: bc, backup2: bd, rm, scrub, restore })) {
        tally(what, r.code);
        expect(r.code, `${what}: ${r.output}`).toBe(0);
        expect(r.stderr).not.toMatch(/\n\s+at |Unexpected exception/);
      }
      // cleanup -f is refused while a backup runs (8), or runs when none does; a plain cleanup is
      // refused (8) while cleanup -f holds the cleanup lock, which it may under load.
      for (const [what, r] of Object.entries({ cleanup: cl, 'cleanup -f': clf })) {
        tally(what, r.code);
        expect([0, 8], `${what}: ${r.output}`).toContain(r.code);
        expect(r.stderr).not.toMatch(/\n\s+at |Unexpected exception/);
      }
      expect(fileSha(out)).toBe(expected.get(kept!));
      expected.delete(doomed!);
      expected.set(lastLine(bc.stdout), sha256(c));
      expected.set(lastLine(bd.stdout), sha256(d));
    }
    expect((await repo.run('-c', grace0, 'cleanup', '-f')).code).toBe(0);
    const checks = await Promise.all(
      [...expected].map(async ([uid, sha], i) => {
        const out = repo.path(`final-${i}.img`);
        const r = await repo.cli('restore', uid, `file://${out}`);
        const s = await repo.cli('scrub', uid);
        return { r: r.code, s: s.code, sha: r.code === 0 ? fileSha(out) : '', want: sha };
      }),
    );
    for (const c of checks) expect(c).toEqual({ r: 0, s: 0, sha: c.want, want: c.want });
    console.log(`concurrent run: exit codes ${JSON.stringify(codes)}; ${expected.size} versions verified after cleanup -f`);
  });
});
