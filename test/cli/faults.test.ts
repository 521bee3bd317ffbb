/**
 * The fault catalogue: real faults under the real CLI — a source that returns EIO (a sysfs file, and
 * an NBD disk with a bad region through nbdkit's ddrescue filter and nbdfuse), a restore target on a
 * nearly full or read-only tmpfs, a data directory on a small tmpfs that fills up and is remounted
 * read-only, a database on a small tmpfs that fills up, a damaged SQLite file (garbage pages,
 * truncated, not a database, a damaged row), stale temporary files, an export file and key files on
 * a full filesystem, hostile names. For every
 * case: the exit code of the README table, one ERROR line that names the path, no stack trace; and
 * an earlier version still restores bit-exact and scrubs clean.
 * Needs root (mounts); this machine and CI run as root.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BIN, HOOK_TIMEOUT, NODE, configText, fileSha, flag, makeImage, MiB, Repo, Sandbox, sha256, type CliResult } from '../support/cli.ts';

const BS = 64 * 1024;
const mounts: string[] = [];

function mountTmpfs(dir: string, size: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounts.push(dir);
}
const remount = (dir: string, opts: string) => execFileSync('mount', ['-o', `remount,${opts}`, dir]);

/** Unmounts what this file mounted (before the sandbox that holds the mount points is removed). */
function unmountAll(): void {
  for (const dir of mounts.splice(0).reverse()) spawnSync('umount', ['-l', dir]);
}

/** The exit code, exactly one ERROR line matching `re`, and no stack trace. */
function expectOneLine(r: CliResult, code: number, re: RegExp): string {
  expect(r.code, r.output).toBe(code);
  const errors = r.stderr.split('\n').filter((l) => l.includes('ERROR:'));
  expect(errors, r.stderr).toHaveLength(1);
  expect(errors[0]).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at |Unexpected exception/);
  return errors[0]!;
}

/** The earlier version restores bit-exact and scrubs clean. */
async function expectIntact(repo: Repo, uid: string, sha: string): Promise<void> {
  const out = repo.path(`check-${randomBytes(4).toString('hex')}.img`);
  const restored = await repo.cli('restore', uid, `file://${out}`);
  expect(restored.code, restored.output).toBe(0);
  expect(fileSha(out)).toBe(sha);
  const scrub = await repo.cli('scrub', uid);
  expect(scrub.code, scrub.output).toBe(0);
}

const writeAndClose = (path: string) => {
  writeFileSync(path, '');
  return path;
};

const resumeUid = (line: string) => /backup -c (\S+) /.exec(line)?.[1];

describe('a source that returns I/O errors', { timeout: 120_000 }, () => {
  let repo: Repo;
  let good: string;
  let goodSha: string;
  let nbdkit: ChildProcess | undefined;
  let nbdfuse: ChildProcess | undefined;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: 4096 });
    const img = makeImage(repo.path('good.img'), [1, 'random', 'zero', 2], 4096);
    goodSha = sha256(img);
    good = await repo.backup('good.img', 'good');
  }, HOOK_TIMEOUT);
  afterAll(() => {
    if (nbdfuse) spawnSync('fusermount3', ['-u', repo.path('fuse')]);
    nbdfuse?.kill('SIGKILL');
    nbdkit?.kill('SIGKILL');
    repo.remove();
  });

  test('a sysfs file that fails every read: exit 10 naming the source, the version is not committed', async () => {
    const source = '/sys/devices/software/power/autosuspend_delay_ms';
    expect(existsSync(source), `${source} is the EIO source of this test`).toBe(true);
    const r = await repo.cli('backup', `file://${source}`, 'sysfs');
    const line = expectOneLine(r, 10, /I\/O error on the source file:\/\/\/sys\/devices\/software\/power\/autosuspend_delay_ms \(block 0\) \(EIO\)/);
    const uid = resumeUid(line);
    expect(uid).toBeDefined();
    expect(flag((await repo.version(uid!))!.valid)).toBe(0);
    await expectIntact(repo, good, goodSha);
  });

  test('a disk with a bad region (nbdkit ddrescue filter, nbdfuse): exit 10, failed; after the repair backup -c continues and restores bit-exact', async () => {
    // 8 MiB at 4 KiB blocks = two block-map chunks; the second half of the disk is unreadable.
    const disk = randomBytes(8 * MiB);
    writeFileSync(repo.path('disk.img'), disk);
    writeFileSync(repo.path('disk.map'), '# Mapfile\n0x00000000 ?\n#pos size status\n0x00000000 0x00400000 +\n0x00400000 0x00400000 -\n');
    const fuse = repo.path('fuse');
    mkdirSync(fuse);
    const socket = repo.path('nbd.sock');
    let log = '';
    const serve = async (filter: boolean) => {
      // A killed nbdkit leaves its socket file behind: the next one must not be taken as listening before it is.
      rmSync(socket, { force: true });
      const args = [
        '-f',
        '-U',
        socket,
        ...(filter ? ['--filter=ddrescue'] : []),
        'file',
        repo.path('disk.img'),
        ...(filter ? [`ddrescue-mapfile=${repo.path('disk.map')}`] : []),
      ];
      nbdkit = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      nbdkit.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
      nbdfuse = spawn('nbdfuse', ['-r', fuse, '--unix', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
      nbdfuse.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      for (let i = 0; i < 100 && !existsSync(join(fuse, 'nbd')); i++) await sleep(50);
      expect(existsSync(join(fuse, 'nbd')), log).toBe(true);
      expect(statSync(join(fuse, 'nbd')).size).toBe(8 * MiB);
    };
    const stop = async () => {
      spawnSync('fusermount3', ['-u', fuse]);
      nbdfuse!.kill('SIGKILL');
      nbdkit!.kill('SIGKILL');
      await Promise.all([nbdfuse, nbdkit].map((p) => new Promise((ok) => (p!.exitCode !== null || p!.signalCode !== null ? ok(null) : p!.once('exit', ok)))));
      nbdfuse = nbdkit = undefined;
    };
    const source = `file://${join(fuse, 'nbd')}`;
    await serve(true);
    const failed = await repo.cli('backup', source, 'disk');
    await stop();
    const line = expectOneLine(
      failed,
      10,
      /I\/O error on the source file:\/\/\S+\/fuse\/nbd \(block 10\d\d\) \(EIO\).*backup -c \S+ file:\/\/\S+\/fuse\/nbd disk/,
    );
    const uid = resumeUid(line)!;
    expect(flag((await repo.version(uid))!.valid)).toBe(0);
    await expectIntact(repo, good, goodSha);

    // The disk is repaired (served without the bad region): -c reads only the chunk that was missing.
    await serve(false);
    const resumed = await repo.cli('backup', '-c', uid, source, 'disk');
    await stop();
    expect(resumed.code, resumed.output).toBe(0);
    expect(resumed.stderr).toMatch(/1 of 2 block map chunks were recorded/);
    const out = repo.path('disk.out');
    expect((await repo.cli('restore', uid, `file://${out}`)).code).toBe(0);
    expect(fileSha(out)).toBe(sha256(disk));
    expect((await repo.cli('scrub', uid)).code).toBe(0);
  });
});

describe('restore onto a full or read-only target', { timeout: 120_000 }, () => {
  let repo: Repo;
  let uid: string;
  let sha: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    sha = sha256(
      makeImage(
        repo.path('img'),
        Array.from({ length: 48 }, () => 'random'),
        BS,
      ),
    );
    uid = await repo.backup('img', 'img');
  }, HOOK_TIMEOUT);
  afterAll(() => {
    unmountAll();
    repo.remove();
  });

  test('a target with too little space: exit 10, one line, no target and no partial file left', async () => {
    const dir = repo.path('small');
    mountTmpfs(dir, `${48 * BS - 128 * 1024}`);
    const r = await repo.cli('restore', uid, `file://${dir}/out.img`);
    expectOneLine(r, 10, /No space left on the restore target file:\/\/\S+\/small\/out\.img \(ENOSPC\).*nothing was written to file:\/\/\S+\/small\/out\.img/);
    expect(readdirSync(dir)).toEqual([]);
    await expectIntact(repo, uid, sha);
  });

  test('a block device that fails writes (a loop device over a full tmpfs): exit 10, INCOMPLETE and restore again from the start; after the fix it restores bit-exact', async () => {
    const dir = repo.path('loopback');
    mountTmpfs(dir, '1m');
    const backing = join(dir, 'disk');
    truncateSync(writeAndClose(backing), 48 * BS);
    const device = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    try {
      const r = await repo.cli('restore', '-f', uid, `file://${device}`);
      // Written with O_DIRECT, the loop device passes its backing file's ENOSPC on; through the page cache, writeback turns it into EIO.
      expectOneLine(
        r,
        10,
        new RegExp(
          `(I/O error|No space left) on the restore target file://${device} \\((EIO|ENOSPC)\\).*${device} is INCOMPLETE .*restore again from the start`,
        ),
      );
      remount(dir, 'size=8m');
      const again = await repo.cli('restore', '-f', uid, `file://${device}`);
      expect(again.code, again.output).toBe(0);
      expect(sha256(readFileSync(device))).toBe(sha);
    } finally {
      spawnSync('losetup', ['-d', device]);
    }
  });

  test('a read-only target filesystem: exit 10 naming it, nothing written', async () => {
    const dir = repo.path('ro');
    mountTmpfs(dir, '16m');
    remount(dir, 'ro');
    const r = await repo.cli('restore', uid, `file://${dir}/out.img`);
    expectOneLine(r, 10, /restore target file:\/\/\S+\/ro\/out\.img is on a read-only filesystem \(EROFS\)/);
    expect(readdirSync(dir)).toEqual([]);
    await expectIntact(repo, uid, sha);
  });
});

describe('a data directory that fills up, then goes read-only', { timeout: 180_000 }, () => {
  let repo: Repo;
  let small: string;
  let smallSha: string;
  beforeAll(async () => {
    repo = new Repo({ blockSize: BS });
    mountTmpfs(repo.dataDir, '8m');
    expect((await repo.cli('initdb')).code).toBe(0);
    smallSha = sha256(
      makeImage(
        repo.path('small.img'),
        Array.from({ length: 32 }, () => 'random'),
        BS,
      ),
    );
    small = await repo.backup('small.img', 'small');
  }, HOOK_TIMEOUT);
  afterAll(() => {
    unmountAll();
    repo.remove();
  });

  test('ENOSPC during a backup: exit 6 naming the data directory, not committed, no temporary file left; after more space backup -c completes it', async () => {
    const big = randomBytes(12 * MiB);
    writeFileSync(repo.path('big.img'), big);
    const r = await repo.cli('backup', `file://${repo.path('big.img')}`, 'big');
    const line = expectOneLine(
      r,
      6,
      new RegExp(`No space left on the data directory ${repo.dataDir} \\(ENOSPC\\): .*cleanup -f.*backup -c \\S+ file://\\S+big\\.img big`),
    );
    const uid = resumeUid(line)!;
    expect(flag((await repo.version(uid))!.valid)).toBe(0);
    expect(readdirSync(join(repo.dataDir, '.tmp'))).toEqual([]);
    await expectIntact(repo, small, smallSha);

    remount(repo.dataDir, 'size=40m');
    const resumed = await repo.cli('backup', '-c', uid, `file://${repo.path('big.img')}`, 'big');
    expect(resumed.code, resumed.output).toBe(0);
    const out = repo.path('big.out');
    expect((await repo.cli('restore', uid, `file://${out}`)).code).toBe(0);
    expect(fileSha(out)).toBe(sha256(big));
  });

  test('read-only: backup is exit 6 (EROFS, naming the directory); ls and restore still work; cleanup -f is exit 6 and deletes nothing; read-write again, cleanup -f works', async () => {
    makeImage(repo.path('new.img'), ['random', 'random'], BS);
    const big = (await repo.ls()).find((v) => v.name === 'big')!.uid;
    expect((await repo.cli('rm', '-f', big)).code).toBe(0);
    const files = repo.blockFiles();
    remount(repo.dataDir, 'ro');
    try {
      const backup = await repo.cli('backup', `file://${repo.path('new.img')}`, 'new');
      expectOneLine(backup, 6, new RegExp(`data directory ${repo.dataDir} is on a read-only filesystem \\(EROFS\\)`));
      // Reading works: ls, restore (a scrub records its verdict in the data directory too, so it is refused like a write).
      expect((await repo.ls()).map((v) => v.uid)).toContain(small);
      const out = repo.path('ro-restore.img');
      expect((await repo.cli('restore', small, `file://${out}`)).code).toBe(0);
      expect(fileSha(out)).toBe(smallSha);
      const cleanup = await repo.cli('cleanup', '-f');
      expectOneLine(cleanup, 6, new RegExp(`data directory ${repo.dataDir} is on a read-only filesystem \\(EROFS\\)`));
      expect(repo.blockFiles()).toEqual(files);
    } finally {
      remount(repo.dataDir, 'rw');
    }
    const cleanup = await repo.cli('cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    expect(repo.blockFiles().length).toBeLessThan(files.length);
    await expectIntact(repo, small, smallSha);
  });
});

describe('a metadata database whose filesystem fills up during a backup', { timeout: 180_000 }, () => {
  let repo: Repo;
  let dbDir: string;
  beforeAll(async () => {
    repo = new Repo({ blockSize: 4096 });
    dbDir = repo.path('db');
    mountTmpfs(dbDir, '512k');
    const config = configText(repo.repoDir, { blockSize: 4096, key: repo.key, simultaneousReads: 2, simultaneousWrites: 2 });
    writeFileSync(repo.configPath, config.replace(`sqlite:///${repo.sqlitePath}`, `sqlite:///${join(dbDir, 'backy.sqlite')}`));
    expect((await repo.cli('initdb')).code).toBe(0);
    expect(existsSync(join(dbDir, 'backy.sqlite'))).toBe(true);
  }, HOOK_TIMEOUT);
  afterAll(() => {
    unmountAll();
    repo.remove();
  });

  test('SQLITE_FULL mid-backup: exit 6 naming the database (not 100 from a ROLLBACK SQLite had done itself), not committed; with space again backup -c completes it bit-exact', async () => {
    const smallSha = sha256(makeImage(repo.path('small.img'), ['random'], 4096));
    const small = await repo.backup('small.img', 'small');
    // 2048 blocks of 4 KiB: the block index and the WAL outgrow 512 KiB while the blocks are recorded.
    const big = randomBytes(8 * MiB);
    writeFileSync(repo.path('big.img'), big);
    const r = await repo.cli('backup', `file://${repo.path('big.img')}`, 'big');
    const line = expectOneLine(
      r,
      6,
      new RegExp(`No space left for the metadata database ${join(dbDir, 'backy.sqlite')} .*backup -c \\S+ file://\\S+big\\.img big`),
    );
    const uid = resumeUid(line)!;
    remount(dbDir, 'size=16m');
    expect(flag((await repo.version(uid))!.valid)).toBe(0);
    await expectIntact(repo, small, smallSha);
    const resumed = await repo.cli('backup', '-c', uid, `file://${repo.path('big.img')}`, 'big');
    expect(resumed.code, resumed.output).toBe(0);
    const out = repo.path('big.out');
    expect((await repo.cli('restore', uid, `file://${out}`)).code).toBe(0);
    expect(fileSha(out)).toBe(sha256(big));
    expect((await repo.cli('scrub', uid)).code).toBe(0);
  });
});

describe('a damaged SQLite database', { timeout: 180_000 }, () => {
  let repo: Repo;
  let uid: string;
  let sha: string;
  let intact: Buffer;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    sha = sha256(makeImage(repo.path('img'), ['random', 'random', 'zero', 'random'], BS));
    uid = await repo.backup('img', 'precious');
    for (let i = 0; i < 4; i++) {
      makeImage(
        repo.path(`more${i}`),
        Array.from({ length: 8 }, () => 'random'),
        BS,
      );
      await repo.backup(`more${i}`, `more${i}`);
    }
    expect(existsSync(`${repo.sqlitePath}-wal`)).toBe(false);
    intact = readFileSync(repo.sqlitePath);
    expect(intact.length).toBeGreaterThan(6 * 4096);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  const damages: [string, (db: Buffer) => Buffer | number][] = [
    ['garbage pages', (db) => Buffer.concat([db.subarray(0, 4096), Buffer.alloc(3 * 4096, 0xde), db.subarray(4 * 4096)])],
    ['a truncated file', (db) => Math.floor(db.length / 2)],
    ['not a database', (db) => randomBytes(db.length)],
    // A row whose JSON does not parse (the b-tree itself is intact, so quick_check passes).
    ['a damaged row', (db) => Buffer.from(db.toString('latin1').replaceAll('"name":"precious"', '"name"#"precious"'), 'latin1')],
  ];
  test.each(damages)('%s: every command is exit 11 naming the file and what to do, and writes nothing to it', async (_what, damage) => {
    const result = damage(intact);
    if (typeof result === 'number') {
      writeFileSync(repo.sqlitePath, intact);
      truncateSync(repo.sqlitePath, result);
    } else writeFileSync(repo.sqlitePath, result);
    const before = fileSha(repo.sqlitePath);
    makeImage(repo.path('new.img'), ['random'], BS);
    const results = [
      await repo.cli('ls'),
      await repo.cli('backup', `file://${repo.path('new.img')}`, 'new'),
      await repo.cli('restore', uid, `file://${repo.path('never.img')}`),
      await repo.cli('rm', '-f', uid),
      await repo.cli('cleanup', '-f'),
    ];
    for (const r of results)
      expectOneLine(r, 11, new RegExp(`metadata database ${repo.sqlitePath} is damaged .*sqlite3 ${repo.sqlitePath} "PRAGMA integrity_check"`));
    expect(fileSha(repo.sqlitePath)).toBe(before);
    expect(existsSync(repo.path('never.img'))).toBe(false);
    // The copy put back: nothing was lost.
    writeFileSync(repo.sqlitePath, intact);
    await expectIntact(repo, uid, sha);
  });
});

describe('temporary block files', { timeout: 120_000 }, () => {
  let repo: Repo;
  let sha: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    sha = sha256(makeImage(repo.path('img'), ['random', 'random'], BS));
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test("a dead writer's are removed by the next backup, an hour-old one too; a running writer's never; cleanup -f also takes old-style ones over an hour old", async () => {
    const host =
      hostname()
        .replace(/[^A-Za-z0-9.]/g, '_')
        .slice(0, 64) || 'host';
    const child = spawnSync('true');
    const deadPid = child.pid!;
    const tmp = join(repo.dataDir, '.tmp');
    mkdirSync(tmp, { recursive: true });
    const hour = 3600;
    const make = (path: string, ageSeconds = 0) => {
      mkdirSync(join(path, '..'), { recursive: true });
      writeFileSync(path, randomBytes(1000));
      const t = Date.now() / 1000 - ageSeconds;
      utimesSync(path, t, t);
      return path;
    };
    const dead = make(join(tmp, `${host}-${deadPid}-${'a'.repeat(12)}`));
    const running = make(join(tmp, `${host}-${process.pid}-${'b'.repeat(12)}`));
    const runningButSilentForHours = make(join(tmp, `${host}-${process.pid}-${'c'.repeat(12)}`), 2 * hour);
    const otherHost = make(join(tmp, `elsewhere-1-${'d'.repeat(12)}`), 10);
    const legacyOld = make(join(repo.dataDir, 'blocks', 'ab', 'cd', `${'ab'.repeat(32)}.tmp-0123456789ab`), 2 * hour);
    const legacyFresh = make(join(repo.dataDir, 'blocks', 'ab', 'cd', `${'cd'.repeat(32)}.tmp-0123456789ab`));

    const backup = await repo.cli('backup', `file://${repo.path('img')}`, 'img');
    expect(backup.code, backup.output).toBe(0);
    expect(backup.stderr).toMatch(/Removed 2 stale temporary files \(2000 bytes\)/);
    expect([dead, running, runningButSilentForHours, otherHost].map(existsSync)).toEqual([false, true, false, true]);
    expect([legacyOld, legacyFresh].map(existsSync)).toEqual([true, true]);

    const cleanup = await repo.cliG(['--json'], 'cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    expect(JSON.parse(cleanup.stdout).temporariesRemoved).toBe(1);
    expect([running, otherHost, legacyOld, legacyFresh].map(existsSync)).toEqual([true, true, false, true]);
    // The block listing never took them for blocks: the version restores bit-exact and scrubs clean.
    const uid = (await repo.ls())[0]!.uid;
    await expectIntact(repo, uid, sha);
  });
});

/** Fills a (small) filesystem to the last page; returns the file that holds the space. */
function fill(dir: string): string {
  const filler = join(dir, 'filler');
  try {
    writeFileSync(filler, Buffer.alloc(4 * MiB));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  }
  expect(existsSync(filler)).toBe(true);
  return filler;
}

describe('export and key files on a full filesystem', { timeout: 120_000 }, () => {
  let repo: Repo;
  let uid: string;
  let sha: string;
  const sandboxes: Sandbox[] = [];
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    sha = sha256(makeImage(repo.path('img'), ['random', 'zero', 'random'], BS));
    uid = await repo.backup('img', 'img');
  }, HOOK_TIMEOUT);
  afterAll(() => {
    unmountAll();
    for (const s of sandboxes) s.remove();
    repo.remove();
  });

  test('export: exit 6 naming the file, neither the file nor a partial one left; with space again it exports', async () => {
    const dir = repo.path('full-export');
    mountTmpfs(dir, '256k');
    const filler = fill(dir);
    const file = join(dir, 'v.export');
    const r = await repo.cli('export', uid, file);
    expectOneLine(r, 6, new RegExp(`No space left on the file ${file} \\(ENOSPC\\)`));
    expect(readdirSync(dir)).toEqual(['filler']);
    rmSync(filler);
    const again = await repo.cli('export', uid, file);
    expect(again.code, again.output).toBe(0);
    expect(readFileSync(file, 'utf8')).toContain(uid);
    await expectIntact(repo, uid, sha);
  });

  test('add-key --generate: exit 6 naming the key file, no empty key file left (it would be taken for the key); with space again it works', async () => {
    const dir = repo.path('full-keys');
    mountTmpfs(dir, '256k');
    const filler = fill(dir);
    const keyFile = join(dir, 'new.key');
    const r = await repo.cli('add-key', '--generate', keyFile);
    expectOneLine(r, 6, new RegExp(`No space left on the file ${keyFile} \\(ENOSPC\\)`));
    expect(existsSync(keyFile)).toBe(false);
    rmSync(filler);
    const again = await repo.cli('add-key', '--generate', keyFile);
    expect(again.code, again.output).toBe(0);
    expect(readFileSync(keyFile, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    await expectIntact(repo, uid, sha);
  });

  test("the default repository's first run on a full $BACKY2_HOME: exit 6 naming its key file, no key file left; with space the next run creates the repository", async () => {
    const sandbox = new Sandbox();
    sandboxes.push(sandbox);
    mountTmpfs(sandbox.home, '2m');
    const filler = fill(sandbox.home);
    const keyFile = join(sandbox.home, 'key');
    const r = await sandbox.run('ls');
    expectOneLine(r, 6, new RegExp(`No space left on the file ${keyFile} \\(ENOSPC\\)`));
    expect(readdirSync(sandbox.home)).toEqual(['filler']);
    rmSync(filler);
    const again = await sandbox.run('ls');
    expect(again.code, again.output).toBe(0);
    expect(again.stderr).toMatch(/Created a new repository/);
    expect(readFileSync(keyFile, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    // The key works: a backup restores bit-exact.
    const data = randomBytes(2 * BS);
    writeFileSync(sandbox.path('d.img'), data);
    const backup = await sandbox.run('-m', 'backup', 'file://d.img', 'd');
    expect(backup.code, backup.output).toBe(0);
    const newUid = backup.stdout.trim();
    expect((await sandbox.run('restore', newUid, 'file://d.out')).code).toBe(0);
    expect(fileSha(sandbox.path('d.out'))).toBe(sha256(data));
  });
});

/** The environment the CLI helpers give a child (support/cli.ts), for a child started through sh. */
function cliEnv(repo: Repo): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(BACKY2_|AWS_)/.test(k)));
  return { NODE_COMPILE_CACHE: join(tmpdir(), 'backy2-test-compile-cache'), ...env, NO_COLOR: '1', ...repo.env() };
}

describe('too many open files', { timeout: 120_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    makeImage(repo.path('img'), ['random', 'random', 'random'], BS);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('backups under a tiny ulimit -n end with one line and exit 12 (or 6: SQLite cannot open its file), never a stack trace; one that fits succeeds', async () => {
    // Which open fails first (the database, a worker thread, a block file) depends on timing near
    // the limit, so several limits run, one after the other (no run waits on another's database
    // lock): some must fail on EMFILE (12), none with a stack trace.
    const runs: { limit: number; r: CliResult }[] = [];
    for (const limit of [28, 30, 32, 34, 36, 38, 40, 42]) {
      runs.push(
        await (async () => {
          const r = await new Promise<CliResult>((ok) => {
            const child = spawn(
              'sh',
              ['-c', `ulimit -n ${limit}; exec "$0" "$@"`, NODE, BIN, '-c', repo.configPath, 'backup', `file://${repo.path('img')}`, `limit${limit}`],
              { cwd: repo.dir, env: cliEnv(repo) },
            );
            let stdout = '';
            let stderr = '';
            child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
            child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
            child.on('close', (code) => ok({ code: code ?? -1, stdout, stderr, output: stdout + stderr }));
          });
          return { limit, r };
        })(),
      );
    }
    // Near the limit a run may also just fit (how many files are open at once depends on timing).
    const failed = runs.filter(({ r }) => r.code !== 0);
    for (const { r } of failed) expectOneLine(r, r.code === 6 ? 6 : 12, /(Too many open files \(EMFILE\)|could not start \(EMFILE\)|ulimit -n)/);
    expect(runs.some(({ r }) => r.code === 12)).toBe(true);
    // Only the runs that exited 0 left a valid version.
    const valid = (await repo.ls()).filter((v) => flag(v.valid) === 1).map((v) => v.name);
    expect(valid.sort()).toEqual(
      runs
        .filter(({ r }) => r.code === 0)
        .map(({ limit }) => `limit${limit}`)
        .sort(),
    );
  });
});

describe('hostile names, snapshot names and tags', { timeout: 120_000 }, () => {
  let repo: Repo;
  let uid: string;
  let sha: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    sha = sha256(makeImage(repo.path('img'), ['random'], BS));
    uid = await repo.backup('img', 'plain', '-s', 'snap 1', '-t', 'keep,b_x');
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('newline, tab, | and , where they would break -m: exit 1 naming the value, nothing stored; -m stays one row of 10 fields per version', async () => {
    const img = `file://${repo.path('img')}`;
    const results = await Promise.all([
      repo.cli('backup', img, 'two\nlines'),
      repo.cli('backup', img, 'a|b'),
      repo.cli('backup', img, 'ok', '-s', 'snap\tshot'),
      repo.cli('backup', img, 'ok', '-t', 'x|y'),
      repo.cli('add-tag', uid, 'new\nline'),
      repo.cli('add-tag', uid, 'x|y'),
    ]);
    for (const r of results) expectOneLine(r, 1, /The (backup name|snapshot name|tag) ".*" (contains|has leading or trailing blanks)/);
    const versions = await repo.ls();
    expect(versions.map((v) => v.uid)).toEqual([uid]);
    expect(versions[0]!.tags).toBe('b_x,keep');
    const m = await repo.cliG(['-m'], 'ls');
    const lines = m.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l.split('|')).toHaveLength(10);
    await expectIntact(repo, uid, sha);
  });
});
