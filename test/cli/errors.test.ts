/**
 * Bad input gets a clear one-line error and a distinct exit code, and loses nothing: missing
 * source, unknown or ambiguous uid, malformed config, wrong key, a source that changes size
 * during the backup, usage errors.
 */
import { appendFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { HOOK_TIMEOUT, configText, fileSha, flag, makeImage, MiB, pauseOutsideTransaction, randomKey, Repo, resume } from '../support/cli.ts';

describe('usage errors, missing sources, unknown and ambiguous uids', { timeout: 60_000 }, () => {
  let repo: Repo;
  let uid: string;
  beforeAll(async () => {
    repo = await Repo.create();
    makeImage(repo.path('img'), ['random', 'random'], MiB);
    uid = await repo.backup('img', 'existing');
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('a missing source is exit 1 and creates no version', async () => {
    const [missing, noScheme, dir] = await Promise.all([
      repo.cli('backup', 'file://does-not-exist.img', 'x'),
      repo.cli('backup', repo.path('img'), 'x'),
      repo.cli('backup', `file://${repo.dir}`, 'x'),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('Source not found: file://does-not-exist.img');
    expect(noScheme.code).toBe(1);
    expect(noScheme.stderr).toMatch(/expected file:\/\/PATH/);
    expect(dir.code).toBe(1);
    expect(dir.stderr).toMatch(/neither a regular file nor a block device/);
    expect((await repo.ls()).map((v) => v.uid)).toEqual([uid]);
  });

  test('an unknown uid is exit 3 for every command that takes one', async () => {
    const unknown = randomUUID();
    const results = await Promise.all([
      repo.cli('restore', unknown, 'file://out'),
      repo.cli('scrub', unknown),
      repo.cli('rm', '-f', unknown),
      repo.cli('protect', unknown),
      repo.cli('add-tag', unknown, 'x'),
      repo.cli('expire', unknown, '2030-01-01'),
      repo.cli('restore', 'ffff', 'file://out'),
    ]);
    for (const r of results) {
      expect(r.code, r.output).toBe(3);
      expect(r.stderr).toMatch(/not found/);
      // One line of error, no stack trace.
      expect(r.stderr.split('\n').filter((l) => l.includes('ERROR'))).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(existsSync(repo.path('out'))).toBe(false);
  });

  test('an ambiguous uid prefix is exit 3 and names the candidates; a longer prefix works', async () => {
    // Two versions whose uids share a prefix, appended through the event-sourced core.
    const a = 'abcd1234-0000-4000-8000-000000000001';
    const b = 'abcd1234-0000-4000-8000-000000000002';
    const store = SqliteMetadataStore.open(repo.sqlitePath);
    try {
      for (const u of [a, b])
        await executeVersionCommand(
          store,
          {
            type: 'StartVersion',
            uid: u,
            name: 'ambiguous',
            snapshotName: '',
            sizeBytes: 0,
            blockSize: MiB,
            chunkEntries: 1024,
            baseUid: null,
            tags: [],
            expire: null,
            host: 'test',
          },
          { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86400 },
        );
    } finally {
      store.close();
    }
    const r = await repo.cli('add-tag', 'abcd1234', 'x');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/ambiguous/);
    expect(r.stderr).toContain(a);
    expect(r.stderr).toContain(b);
    const one = await repo.cli('add-tag', 'abcd1234-0000-4000-8000-0000000000', 'x');
    expect(one.code).toBe(3);
    const exact = await repo.cli('add-tag', a.slice(0, -1) + '1', 'picked');
    expect(exact.code, exact.output).toBe(0);
    expect((await repo.ls('-t', 'picked')).map((v) => v.uid)).toEqual([a]);
  });

  test('a restore target in a directory that does not exist is exit 1 with one line, not a stack trace', async () => {
    const r = await repo.cli('restore', uid, `file://${repo.path('no-such-dir', 'out.img')}`);
    expect(r.code, r.output).toBe(1);
    expect(r.stderr).toMatch(/ERROR: Cannot open restore target file:\/\/\S+no-such-dir\/out\.img: ENOENT/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  test('values the event schema refuses are exit 1 before anything is stored, and the log stays replayable', async () => {
    const files = repo.blockFiles();
    const [emptyName, longTag, longAddTag] = await Promise.all([
      repo.cli('backup', 'file://img', ''),
      repo.cli('backup', 'file://img', 'fine', '-t', 'x'.repeat(300)),
      repo.cli('add-tag', uid, 'y'.repeat(300)),
    ]);
    expect(emptyName.code, emptyName.output).toBe(1);
    expect(emptyName.stderr).toMatch(/ERROR: Invalid VersionStarted name/);
    expect(longTag.code, longTag.output).toBe(1);
    expect(longTag.stderr).toMatch(/ERROR: Invalid VersionStarted tags/);
    expect(longAddTag.code, longAddTag.output).toBe(1);
    expect(longAddTag.stderr).toMatch(/ERROR: Invalid TagsAdded tags/);
    expect(repo.blockFiles()).toEqual(files);
    const rebuild = await repo.cli('rebuild-projections');
    expect(rebuild.code, rebuild.output).toBe(0);
    expect((await repo.version(uid))!.tags).not.toContain('yyy');
  });

  test('usage errors are exit 1', async () => {
    const results = await Promise.all([
      repo.cli('no-such-command'),
      repo.cli('backup', 'file://img'),
      repo.cli('restore', uid, 'file://out', '-c', 'abc'),
      repo.cli('restore', uid, 'file://out', '-c', '0'), // -c resumes into an existing target only
      repo.run('-c', repo.path('no-such.cfg'), 'ls'),
    ]);
    for (const r of results) expect(r.code, r.output).toBe(1);
    expect(results[4]!.stderr).toMatch(/no-such\.cfg not found/);
    expect(existsSync(repo.path('out'))).toBe(false);
    const version = await repo.run('-V');
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('malformed configs are exit 1 with a message naming the key', { timeout: 60_000 }, () => {
  let repo: Repo;
  beforeAll(() => {
    repo = new Repo();
  });
  afterAll(() => repo.remove());

  const good = () => configText(repo.repoDir, { key: randomKey() });
  const cases: [string, (text: string) => string, RegExp][] = [
    ['short key', (t) => t.replace(/encryption_key: \w+/, 'encryption_key: deadbeef'), /encryption_key in \S+ has 8 hex characters; it must have exactly 64/],
    [
      "the quick start's intentionally invalid key",
      (t) => t.replace(/encryption_key: \w+/, 'encryption_key: decafbaddecafbaddecafbzddecafbaddecafbaddecafbaddecafbaddecafba'),
      /encryption_key in \S+ is not hexadecimal/,
    ],
    ['missing key', (t) => t.replace(/encryption_key: \w+\n/, ''), /encryption_key in \S+ is missing/],
    ['block_size: abc', (t) => t.replace(/block_size: \d+/, 'block_size: abc'), /\[DEFAULTS\] block_size: block_size must be an integer/],
    ['block_size not a multiple of 4096', (t) => t.replace(/block_size: \d+/, 'block_size: 1000000'), /block_size must be a multiple of 4096/],
    ['simultaneous_reads: 0', (t) => t.replace(/simultaneous_reads: \d+/, 'simultaneous_reads: 0'), /simultaneous_reads must be an integer >= 1/],
    [
      'disallow_rm_when_younger_than_days: soon',
      (t) => t.replace(/disallow_rm_when_younger_than_days: \d+/, 'disallow_rm_when_younger_than_days: soon'),
      /disallow_rm_when_younger_than_days/,
    ],
    ['DataBackend type: s3', (t) => t.replace('type: file', 'type: s3'), /\[DataBackend\] type/],
    ['engine: postgres', (t) => t.replace(/engine: .*/, 'engine: postgresql://backy:secret@localhost/backy'), /\[MetaBackend\] engine/],
    ['a line that is no ini', (t) => t + 'this line is not ini\n', /line \d+/],
  ];

  test.each(cases)('%s', async (_name, mutate, message) => {
    const file = repo.path(`bad-${randomBytes(4).toString('hex')}.cfg`);
    writeFileSync(file, mutate(good()));
    const [ls, initdb] = await Promise.all([repo.run('-c', file, 'ls'), repo.run('-c', file, 'initdb')]);
    for (const r of [ls, initdb]) {
      expect(r.code, r.output).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain(file);
      expect(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => l.includes('ERROR')),
      ).toHaveLength(1);
    }
    expect(existsSync(repo.sqlitePath)).toBe(false);
  });
});

describe('a wrong encryption key', { timeout: 60_000 }, () => {
  let repo: Repo;
  let uid: string;
  let wrong: string;
  beforeAll(async () => {
    repo = await Repo.create();
    makeImage(repo.path('img'), ['random', 'zero', 'random'], MiB);
    uid = await repo.backup('img', 'keyed');
    wrong = repo.writeConfig('wrong-key.cfg', { key: randomKey() });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('restore refuses with exit 7 and the existing target is untouched', async () => {
    writeFileSync(repo.path('target.img'), 'existing target data');
    const before = fileSha(repo.path('target.img'));
    const [forced, fresh] = await Promise.all([
      repo.run('-c', wrong, 'restore', '-f', uid, 'file://target.img'),
      repo.run('-c', wrong, 'restore', uid, 'file://fresh.img'),
    ]);
    for (const r of [forced, fresh]) {
      expect(r.code, r.output).toBe(7);
      expect(r.stderr).toMatch(/Wrong encryption key/);
    }
    expect(fileSha(repo.path('target.img'))).toBe(before);
    expect(existsSync(repo.path('fresh.img'))).toBe(false);
  });

  test('backup and scrub with the wrong key are refused too and change nothing', async () => {
    const files = repo.blockFiles();
    const [backup, scrub] = await Promise.all([repo.run('-c', wrong, 'backup', 'file://img', 'other'), repo.run('-c', wrong, 'scrub', uid)]);
    expect(backup.code).toBe(7);
    expect(scrub.code).toBe(7);
    expect(repo.blockFiles()).toEqual(files);
    expect((await repo.ls()).map((v) => [v.uid, flag(v.valid)])).toEqual([[uid, 1]]);
    expect((await repo.cli('restore', uid, 'file://ok.img')).code).toBe(0);
    expect(readFileSync(repo.path('ok.img')).equals(readFileSync(repo.path('img')))).toBe(true);
  });
});

describe('a source that changes size during the backup', { timeout: 90_000 }, () => {
  let repo: Repo;
  let keepUid: string;
  let keepFiles: string[];
  beforeAll(async () => {
    // Small blocks, one read and one write at a time: the backup takes long enough to be paused.
    repo = await Repo.create({ blockSize: 4096, simultaneousReads: 1, simultaneousWrites: 1 });
    makeImage(repo.path('keep.img'), ['random', 'random', 'random'], 4096);
    keepUid = await repo.backup('keep.img', 'keep');
    keepFiles = repo.blockFiles();
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  /** Starts a backup of a 2 MiB image, pauses it after the first progress line, runs `change`, resumes. */
  async function backupWhile(change: (path: string) => void) {
    const path = repo.path(`src-${randomBytes(3).toString('hex')}.img`);
    writeFileSync(path, randomBytes(2 * MiB));
    const running = repo.startCli('backup', `file://${path}`, 'changing');
    await running.waitForStderr(/Backed up \d+\/512 blocks/);
    await pauseOutsideTransaction(running.child, repo.sqlitePath);
    try {
      change(path);
    } finally {
      resume(running.child);
    }
    return running.result;
  }

  test('a source that shrinks: exit 5, the version is not valid and cannot be restored', async () => {
    const r = await backupWhile((p) => truncateSync(p, MiB));
    expect(r.code, r.output).toBe(5);
    expect(r.stderr).toMatch(/shrank during backup|changed size during backup/);
    expect(r.stderr).not.toMatch(/New version/);
    const rows = await repo.ls('changing');
    expect(rows).toHaveLength(1);
    expect(flag(rows[0]!.valid)).toBe(0);
    const restore = await repo.cli('restore', rows[0]!.uid, 'file://partial.img');
    expect(restore.code).toBe(4);
    expect(existsSync(repo.path('partial.img'))).toBe(false);
  });

  test('a source that grows: exit 5 as well', async () => {
    const r = await backupWhile((p) => appendFileSync(p, randomBytes(MiB)));
    expect(r.code, r.output).toBe(5);
    expect(r.stderr).toMatch(/changed size during backup \(2097152 → 3145728 bytes\)/);
    expect((await repo.ls('changing')).every((v) => flag(v.valid) === 0)).toBe(true);
  });

  test('nothing is lost: the earlier version restores, and cleanup -f removes what the failed backups stored', async () => {
    expect(repo.blockFiles().length).toBeGreaterThan(keepFiles.length);
    const c = await repo.cli('cleanup', '-f');
    expect(c.code, c.output).toBe(0);
    expect(repo.blockFiles()).toEqual(keepFiles);
    expect((await repo.cli('restore', keepUid, 'file://keep.out')).code).toBe(0);
    expect(readFileSync(repo.path('keep.out')).equals(readFileSync(repo.path('keep.img')))).toBe(true);
    expect((await repo.cli('scrub', keepUid)).code).toBe(0);
  });
});
