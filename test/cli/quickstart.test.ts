/**
 * The quick start of backy2, end to end through the real CLI binary: first run on the embedded
 * default, initdb, backup → ls → scrub → restore → rm → cleanup.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, configText, listFiles, fileSha, flag, lastLine, makeImage, MiB, parseTable, Repo, Sandbox, type LsRow } from '../support/cli.ts';

const COLUMNS = ['date', 'name', 'snapshot_name', 'size', 'size_bytes', 'uid', 'valid', 'protected', 'tags', 'expire'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('first run without a config (embedded default repository)', { timeout: 60_000 }, () => {
  let box: Sandbox;
  beforeAll(() => {
    box = new Sandbox();
  });
  afterAll(() => box.remove());

  test('creates the repository and a 0600 key file, says loudly where the key is, and the backup restores', async () => {
    // Default block size is 4 MiB: 2 full blocks and a short one.
    const image = makeImage(box.path('TESTFILE'), ['random', 'random'], 4 * MiB, { spec: 'random', bytes: 123_456 });
    expect(existsSync(box.home)).toBe(false);

    const first = await box.run('backup', 'file://TESTFILE', 'myfirsttestbackup');
    expect(first.code, first.output).toBe(0);
    const keyFile = `${box.home}/key`;
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyFile, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(existsSync(`${box.home}/backy.sqlite`)).toBe(true);
    expect(first.stderr).toContain(keyFile);
    expect(first.stderr).toMatch(/lost/i);
    const uid = /New version: (\S+) \(Tags: \[([^\]]*)\]\)/.exec(first.stderr)?.[1];
    expect(uid).toMatch(UUID);

    // The second run uses the same repository and key, without the warning.
    const key = readFileSync(keyFile, 'utf8');
    const ls = await box.run('--json', 'ls');
    expect(ls.code).toBe(0);
    expect(ls.stderr).not.toContain('Created a new repository');
    const rows = JSON.parse(ls.stdout) as LsRow[];
    expect(rows.map((r) => [r.uid, r.name, Number(r.size), Number(r.size_bytes), flag(r.valid)])).toEqual([[uid, 'myfirsttestbackup', 3, image.length, 1]]);
    expect(readFileSync(keyFile, 'utf8')).toBe(key);

    const restore = await box.run('restore', uid!, 'file://RESTOREFILE');
    expect(restore.code, restore.output).toBe(0);
    expect(readFileSync(box.path('RESTOREFILE')).equals(image)).toBe(true);

    // The default repository exists now: initdb refuses.
    const initdb = await box.run('initdb');
    expect(initdb.code).toBe(1);
    expect(initdb.stderr).toMatch(/already initialised/);
    expect((await box.run('restore', '--force', uid!, 'file://RESTOREFILE')).code).toBe(0);
  });

  test('a key file readable by others is used, with a warning to chmod it', async () => {
    const keyFile = `${box.home}/key`;
    chmodSync(keyFile, 0o644);
    try {
      const r = await box.run('ls');
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/WARNING: Key file .*key is readable by others \(mode 644\); chmod 600 it/);
    } finally {
      chmodSync(keyFile, 0o600);
    }
  });

  test('a repository whose key file is gone is an error, not a reason to make a new key', async () => {
    const keyFile = `${box.home}/key`;
    const saved = readFileSync(keyFile);
    unlinkSync(keyFile);
    try {
      const r = await box.run('ls');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/Key file .*key is missing/);
      expect(existsSync(keyFile)).toBe(false);
    } finally {
      writeFileSync(keyFile, saved, { mode: 0o600 });
    }
    expect((await box.run('ls')).code).toBe(0);
  });
});

describe('initdb with a config', { timeout: 60_000 }, () => {
  let repo: Repo;
  beforeAll(() => {
    repo = new Repo();
  });
  afterAll(() => repo.remove());

  test('./backy.cfg in the working directory is used without -c, as backy2 does', async () => {
    const box2 = new Sandbox();
    try {
      writeFileSync(box2.path('backy.cfg'), configText(box2.path('cwd-repo')));
      const init = await box2.run('initdb');
      expect(init.code, init.output).toBe(0);
      expect(existsSync(box2.path('cwd-repo', 'backy.sqlite'))).toBe(true);
      expect(existsSync(box2.home)).toBe(false); // not the embedded default
      makeImage(box2.path('img'), ['random'], MiB);
      expect((await box2.run('backup', 'file://img', 'cwd')).code).toBe(0);
      expect(listFiles(box2.path('cwd-repo', 'data', 'blocks'))).toHaveLength(1);
    } finally {
      box2.remove();
    }
  });

  test('a repository named by a config must be initialised first', async () => {
    const r = await repo.cli('ls');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/initdb/);
    expect(existsSync(repo.sqlitePath)).toBe(false);
  });

  test('initdb creates it; a second initdb fails with exit 1 and leaves the data intact', async () => {
    const init = await repo.cli('initdb');
    expect(init.code, init.output).toBe(0);
    expect(existsSync(repo.sqlitePath)).toBe(true);
    const image = makeImage(repo.path('img'), ['random', 'random', 'random'], MiB);
    const uid = await repo.backup('img', 'before-initdb');
    const lsBefore = await repo.cliG(['--json'], 'ls');
    const blocksBefore = repo.blockFiles().map((f) => [f, fileSha(`${repo.dataDir}/${f}`)]);
    expect(blocksBefore).toHaveLength(3);

    const again = await repo.cli('initdb');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already initialised/);

    expect((await repo.cliG(['--json'], 'ls')).stdout).toBe(lsBefore.stdout);
    expect(repo.blockFiles().map((f) => [f, fileSha(`${repo.dataDir}/${f}`)])).toEqual(blocksBefore);
    expect((await repo.cli('scrub', uid)).code).toBe(0);
    expect((await repo.cli('restore', uid, 'file://out')).code).toBe(0);
    expect(readFileSync(repo.path('out')).equals(image)).toBe(true);
  });
});

describe('the quick-start cycle with a config', { timeout: 120_000 }, () => {
  let repo: Repo;
  let image1: Buffer;
  let image2: Buffer;
  let uid1: string;
  let uid2: string;
  let uid3: string;

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: MiB });
    // 4 random blocks, a zero block, and a short compressible tail.
    image1 = makeImage(repo.path('TESTFILE'), ['random', 'random', 'random', 'random', 'zero'], MiB, { spec: 'text', bytes: 300_000 });
    image2 = makeImage(repo.path('second.img'), ['random', 'text', 'random'], MiB);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('backup of a relative file:// path', async () => {
    const r = await repo.cli('backup', 'file://TESTFILE', 'myfirsttestbackup');
    expect(r.code, r.output).toBe(0);
    const m = /New version: (\S+) \(Tags: \[([^\]]*)\]\)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    uid1 = m![1]!;
    expect(uid1).toMatch(UUID);
    expect(m![2]!.split(',').sort()).toEqual(['b_daily', 'b_monthly', 'b_weekly']);
    expect(r.stderr).toMatch(/Backed up 6\/6 blocks \(100\.0%\)/);
    // 4 random blocks + the text tail stored; the zero block is not.
    expect(repo.blockFiles()).toHaveLength(5);
  });

  test('backup of an absolute file:// path with -s, -t and -e', async () => {
    const r = await repo.cliG(['-m'], 'backup', `file://${repo.path('second.img')}`, 'secondbackup', '-s', 'snap-1', '-t', 'mytag,other', '-e', '2000-01-02');
    expect(r.code, r.output).toBe(0);
    uid2 = lastLine(r.stdout);
    expect(uid2).toMatch(UUID);
    uid3 = await repo.backup('second.img', 'secondbackup', '-s', 'snap-2');
    expect(repo.blockFiles()).toHaveLength(5 + 3);
  });

  test('ls prints the backy2 table', async () => {
    const r = await repo.cli('ls');
    expect(r.code).toBe(0);
    const [header, ...rows] = parseTable(r.stdout);
    expect(header).toEqual(COLUMNS);
    expect(rows).toHaveLength(3);
    const row1 = rows.find((row) => row[5] === uid1)!;
    expect(row1[0]).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(row1.slice(1)).toEqual(['myfirsttestbackup', '', '6', String(image1.length), uid1, '1', '0', 'b_daily,b_monthly,b_weekly', '']);
    const row2 = rows.find((row) => row[5] === uid2)!;
    expect(row2.slice(1)).toEqual(['secondbackup', 'snap-1', '3', String(image2.length), uid2, '1', '0', 'mytag,other', '2000-01-02']);
    // Every line of the table has the same width.
    const widths = new Set(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.length),
    );
    expect(widths.size).toBe(1);
  });

  test('ls -m prints a |-separated header and rows; -s drops the header; -f picks fields', async () => {
    const m = await repo.cliG(['-m'], 'ls');
    expect(m.code).toBe(0);
    const lines = m.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(COLUMNS.join('|'));
    expect(lines).toHaveLength(4);
    expect(
      lines
        .find((l) => l.includes(uid1))!
        .split('|')
        .slice(1),
    ).toEqual(['myfirsttestbackup', '', '6', String(image1.length), uid1, '1', '0', 'b_daily,b_monthly,b_weekly', '']);
    expect(m.stderr).toBe('');

    const ms = await repo.cliG(['-m', '-s'], 'ls');
    expect(ms.stdout.trimEnd().split('\n')).toEqual(lines.slice(1));

    const f = await repo.cliG(['-m'], 'ls', '-f', 'uid,name,valid');
    expect(f.stdout.trimEnd().split('\n').sort()).toEqual(
      ['uid|name|valid', `${uid1}|myfirsttestbackup|1`, `${uid2}|secondbackup|1`, `${uid3}|secondbackup|1`].sort(),
    );
    const bad = await repo.cliG(['-m'], 'ls', '-f', 'uid,nonsense');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/nonsense/);
  });

  test('ls -r prints byte counts in KiB/MiB/GiB', async () => {
    const r = await repo.cliG(['-m', '-s', '-r'], 'ls', '-f', 'uid,size_bytes');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${uid2}|3.0 MiB`);
    expect(r.stdout).toContain(`${uid1}|${(image1.length / MiB).toFixed(1)} MiB`);
  });

  test('ls --json prints an array of versions', async () => {
    const rows = await repo.ls();
    expect(rows.map((r) => r.uid).sort()).toEqual([uid1, uid2, uid3].sort());
    const r2 = rows.find((r) => r.uid === uid2)!;
    expect(Object.keys(r2)).toEqual(COLUMNS);
    // Numbers are numbers: a script's `if (v.valid)` must not be fooled by a "0".
    expect([typeof r2.size, typeof r2.size_bytes, r2.valid, r2.protected]).toEqual(['number', 'number', 1, 0]);
    expect([r2.name, r2.snapshot_name, Number(r2.size), Number(r2.size_bytes), flag(r2.valid), flag(r2.protected), r2.tags, r2.expire]).toEqual([
      'secondbackup',
      'snap-1',
      3,
      image2.length,
      1,
      0,
      'mytag,other',
      '2000-01-02',
    ]);
  });

  test('ls filters: NAME, -s snapshot, -t tag, -e expired', async () => {
    const uids = (rows: LsRow[]) => rows.map((r) => r.uid).sort();
    expect(uids(await repo.ls('myfirsttestbackup'))).toEqual([uid1]);
    expect(uids(await repo.ls('secondbackup'))).toEqual([uid2, uid3].sort());
    expect(uids(await repo.ls('nosuchname'))).toEqual([]);
    expect(uids(await repo.ls('-s', 'snap-2'))).toEqual([uid3]);
    expect(uids(await repo.ls('secondbackup', '-s', 'snap-1'))).toEqual([uid2]);
    expect(uids(await repo.ls('-t', 'mytag'))).toEqual([uid2]);
    expect(uids(await repo.ls('-t', 'b_daily'))).toEqual([uid1, uid3].sort());
    // uid2 expired on 2000-01-02; the others never expire.
    expect(uids(await repo.ls('-e'))).toEqual([uid2]);
    const table = await repo.cliG(['-s'], 'ls', '-e');
    expect(parseTable(table.stdout).map((r) => r[5])).toEqual([uid2]);
  });

  test('scrub finds no errors', async () => {
    const r = await repo.cli('scrub', uid1);
    expect(r.code, r.output).toBe(0);
    const json = await repo.cliG(['--json'], 'scrub', uid1);
    expect(json.code).toBe(0);
    // 5 distinct stored blocks checked, no failures.
    expect(JSON.parse(json.stdout)).toMatchObject({ uid: uid1, checked: 5, failures: [] });
  });

  test('restore is bit-exact; a second restore is refused; --force overwrites', async () => {
    const r = await repo.cli('restore', uid1, 'file://RESTOREFILE');
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toMatch(/Restored 6\/6 blocks \(100\.0%\)/);
    expect(readFileSync(repo.path('RESTOREFILE')).equals(image1)).toBe(true);

    writeFileSync(repo.path('RESTOREFILE'), 'precious data that must not be overwritten');
    const again = await repo.cli('restore', uid1, 'file://RESTOREFILE');
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('Target already exists: file://RESTOREFILE');
    expect(readFileSync(repo.path('RESTOREFILE'), 'utf8')).toBe('precious data that must not be overwritten');

    const forced = await repo.cli('restore', '--force', uid1, 'file://RESTOREFILE');
    expect(forced.code, forced.output).toBe(0);
    expect(readFileSync(repo.path('RESTOREFILE')).equals(image1)).toBe(true);

    // -c resumes an interrupted restore in place from a block: only blocks from there on are written.
    const damaged = Buffer.from(image1);
    damaged.fill(0xee, 3 * MiB);
    writeFileSync(repo.path('RESTOREFILE'), damaged);
    const resumed = await repo.cli('restore', '-c', '3', uid1, 'file://RESTOREFILE');
    expect(resumed.code, resumed.output).toBe(0);
    expect(resumed.stderr).toMatch(/Restored 3\/3 blocks \(100\.0%\)/);
    expect(readFileSync(repo.path('RESTOREFILE')).equals(image1)).toBe(true);

    // Absolute target path, and a unique uid prefix.
    const abs = await repo.cli('restore', uid2.slice(0, 8), `file://${repo.path('restored2')}`);
    expect(abs.code, abs.output).toBe(0);
    expect(readFileSync(repo.path('restored2')).equals(image2)).toBe(true);
  });

  test('rm is refused while the version is young (exit 4); rm -f removes it', async () => {
    const young = await repo.cli('rm', uid1);
    expect(young.code).toBe(4);
    expect(young.stderr).toMatch(/too young/);
    expect((await repo.ls()).map((r) => r.uid)).toContain(uid1);

    const forced = await repo.cli('rm', '-f', uid1);
    expect(forced.code, forced.output).toBe(0);
    expect((await repo.ls()).map((r) => r.uid)).not.toContain(uid1);
    // A removed version is gone for every command.
    expect((await repo.cli('restore', uid1, 'file://gone')).code).toBe(3);
    expect(existsSync(repo.path('gone'))).toBe(false);
    expect((await repo.cli('rm', '-f', uid1)).code).toBe(3);
  });

  test('cleanup deletes nothing within the grace period; cleanup -f deletes the unreferenced blocks', async () => {
    const before = repo.blockFiles();
    expect(before).toHaveLength(8);
    const c = await repo.cli('cleanup');
    expect(c.code, c.output).toBe(0);
    expect(repo.blockFiles()).toEqual(before);
    // The removed version's manifest goes at once (it restores nothing any more); the others' stay.
    expect(existsSync(join(repo.dataDir, 'manifests', uid1))).toBe(false);
    expect(existsSync(join(repo.dataDir, 'manifests', uid3))).toBe(true);

    const f = await repo.cliG(['--json'], 'cleanup', '-f');
    expect(f.code, f.output).toBe(0);
    expect(JSON.parse(f.stdout)).toMatchObject({ deleted: 5, manifestsDeleted: 0 });
    // The blocks of the removed version are gone; those of the other versions remain and restore.
    expect(repo.blockFiles()).toHaveLength(3);
    expect((await repo.cli('restore', uid3, 'file://restored3')).code).toBe(0);
    expect(readFileSync(repo.path('restored3')).equals(image2)).toBe(true);
    expect((await repo.cli('scrub', uid2)).code).toBe(0);
  });

  test('after rm -f of every version, cleanup -f leaves no block files', async () => {
    expect((await repo.cli('rm', '-f', uid2)).code).toBe(0);
    // uid3 still references every block: nothing goes.
    expect((await repo.cli('cleanup', '-f')).code).toBe(0);
    expect(repo.blockFiles()).toHaveLength(3);
    expect((await repo.cli('rm', '-f', uid3)).code).toBe(0);
    const f = await repo.cli('cleanup', '-f');
    expect(f.code, f.output).toBe(0);
    expect(repo.blockFiles()).toEqual([]);
    expect(await repo.ls()).toEqual([]);
    expect(readdirSync(join(repo.dataDir, 'manifests'))).toEqual([]);
  });
});
