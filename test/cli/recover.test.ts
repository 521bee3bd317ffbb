/**
 * Disaster recovery end to end (embedded): a history with every kind of change after a backup,
 * then the SQLite file is deleted and `backy2 recover` rebuilds it from the data directory and the
 * key alone. What the user sees (ls, stats, du, diff-meta) is what they saw before, every version
 * restores bit-exact, cleanup -f keeps what they need, the removed version stays removed, new
 * backups dedup against the recovered blocks. Also: a recover killed midway and run again, a
 * tampered and a truncated journal entry, a wrong key, a store that is not empty.
 */
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { blockData, fileSha, HOOK_TIMEOUT, makeImage, overwriteBlock, randomKey, Repo, seeded, sha256 } from '../support/cli.ts';

const BS = 4096; // 1024 blocks per chunk: a chunk is 4 MiB, so images span several chunks
const journalDir = (repo: Repo) => join(repo.dataDir, 'journal');

function deleteMetadata(repo: Repo): void {
  for (const suffix of ['', '-wal', '-shm']) rmSync(repo.sqlitePath + suffix, { force: true });
}

async function versionsOf(repo: Repo): Promise<{ uid: string; name: string; status: string; recordedChunks: number; chunkCount: number }[]> {
  const store = SqliteMetadataStore.open(repo.sqlitePath);
  try {
    return await store.listVersions();
  } finally {
    store.close();
  }
}

describe('recover rebuilds lost metadata from the data directory and the key', { timeout: 300_000 }, () => {
  let repo: Repo;
  let newKeyConfig: string;
  const images: Record<string, Buffer> = {};
  const uids: Record<string, string> = {};
  let before: Record<string, string>;
  /** Committed versions, and the block-index entries of their blocks before the loss. */
  const COMMITTED = ['a1', 'a2', 'a3', 'b', 'bad', 'healed'];
  const neededIds = new Set<string>();
  let indexBefore: Record<string, unknown>;

  async function indexEntries(ids: string[]): Promise<Record<string, unknown>> {
    const store = SqliteMetadataStore.open(repo.sqlitePath);
    try {
      const found = await store.getBlocks(ids);
      return Object.fromEntries([...found.values()].map((e) => [e.id, { storedSize: e.storedSize, checksum: e.checksum, valid: e.valid }]));
    } finally {
      store.close();
    }
  }

  /** What the user sees, in the machine formats. */
  async function observe(config: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const runs: [string, string[], string[]][] = [
      ['ls', ['-m'], ['ls']],
      ['ls-json', ['--json'], ['ls']],
      ['ls-e', ['-m'], ['ls', '-e']],
      ['ls-t', ['-m'], ['ls', '-t', 'kept']],
      ['stats', ['-m'], ['stats']],
      ['stats-removed', ['-m'], ['stats', uids['removed']!]],
      ['du', ['-m'], ['du']],
      ['diff-meta', ['-m'], ['diff-meta', uids['a1']!, uids['a2']!]],
    ];
    for (const [name, globals, args] of runs) {
      const r = await repo.run(...globals, '-c', config, ...args);
      expect(r.code, `${name}: ${r.output}`).toBe(0);
      out[name] = r.stdout;
    }
    return out;
  }

  async function restoresBitExact(config: string, uid: string, image: Buffer): Promise<void> {
    const target = repo.path(`restore-${uid}.img`);
    rmSync(target, { force: true });
    const r = await repo.run('-c', config, 'restore', uid, `file://${target}`);
    expect(r.code, r.output).toBe(0);
    expect(fileSha(target), uid).toBe(sha256(image));
    unlinkSync(target);
  }

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 6, cleanupGraceSeconds: 0 });
    // Versions of a changing image (full, incremental, incremental).
    images['a1'] = makeImage(repo.path('a.img'), [...Array.from({ length: 1500 }, (_, i) => (i % 7 === 0 ? 'zero' : i)), 'text'], BS);
    uids['a1'] = await repo.backup('a.img', 'alpha');
    for (const i of [3, 1200]) overwriteBlock(repo.path('a.img'), i, BS, blockData(100_000 + i, BS));
    images['a2'] = readFileSync(repo.path('a.img'));
    uids['a2'] = await repo.backup('a.img', 'alpha', '-f', uids['a1']);
    overwriteBlock(repo.path('a.img'), 5, BS, blockData(200_000, BS));
    images['a3'] = readFileSync(repo.path('a.img'));
    uids['a3'] = await repo.backup('a.img', 'alpha', '-f', uids['a2'], '-s', 'snap-3');
    images['b'] = makeImage(
      repo.path('b.img'),
      Array.from({ length: 900 }, (_, i) => 300_000 + i),
      BS,
    );
    uids['b'] = await repo.backup('b.img', 'beta', '-t', 'first');

    // Changes after the backups.
    for (const args of [
      ['protect', uids['a1']],
      ['add-tag', uids['a2'], 'kept,extra'],
      ['remove-tag', uids['a2'], 'extra'],
      ['expire', uids['a3'], '2001-01-01'],
      ['expire', uids['b'], '2040-05-06'],
    ])
      expect((await repo.cli(...(args as string[]))).code, args.join(' ')).toBe(0);

    // A removed version whose own blocks cleanup deleted.
    images['removed'] = makeImage(
      repo.path('r.img'),
      Array.from({ length: 300 }, (_, i) => 400_000 + i),
      BS,
    );
    uids['removed'] = await repo.backup('r.img', 'gone');
    expect((await repo.cli('rm', '-f', uids['removed'])).code).toBe(0);
    expect((await repo.cli('cleanup')).code).toBe(0);

    // A version found invalid by a scrub of a corrupted block.
    images['bad'] = makeImage(
      repo.path('bad.img'),
      Array.from({ length: 200 }, (_, i) => 500_000 + i),
      BS,
    );
    uids['bad'] = await repo.backup('bad.img', 'bad');
    const badId = (await repo.blockIdsOf(uids['bad']))[17]!;
    const corrupt = readFileSync(repo.blockPath(badId));
    corrupt.writeUInt8(corrupt.readUInt8(corrupt.length - 5) ^ 0xff, corrupt.length - 5);
    writeFileSync(repo.blockPath(badId), corrupt);
    expect((await repo.cli('scrub', uids['bad'])).code).toBe(20);

    // A version found invalid by a scrub, then valid again once its block was repaired.
    images['healed'] = makeImage(
      repo.path('h.img'),
      Array.from({ length: 150 }, (_, i) => 700_000 + i),
      BS,
    );
    uids['healed'] = await repo.backup('h.img', 'healed');
    const healedId = (await repo.blockIdsOf(uids['healed']))[9]!;
    const good = readFileSync(repo.blockPath(healedId));
    const broken = Buffer.from(good);
    broken.writeUInt8(broken.readUInt8(broken.length - 5) ^ 0xff, broken.length - 5);
    writeFileSync(repo.blockPath(healedId), broken);
    expect((await repo.cli('scrub', uids['healed'])).code).toBe(20);
    expect((await repo.version(uids['healed']))?.valid).toBe(0);
    writeFileSync(repo.blockPath(healedId), good);
    expect((await repo.cli('scrub', uids['healed'])).code).toBe(0);
    expect((await repo.version(uids['healed']))?.valid).toBe(1);

    // Key rotation: add key B, switch to it (A as old key), rekey what A wrote.
    const keyB = randomKey();
    writeFileSync(repo.path('b.key'), keyB + '\n');
    expect((await repo.cli('add-key', repo.path('b.key'))).code).toBe(0);
    newKeyConfig = repo.writeConfig('new-key.cfg', { minAgeDays: 6, cleanupGraceSeconds: 0, key: keyB, extraDefaults: [`old_encryption_keys: ${repo.key}`] });
    const rekey = await repo.run('-c', newKeyConfig, 'rekey');
    expect(rekey.code, rekey.output).toBe(7); // the corrupted block cannot be re-encrypted; everything else is
    expect((await repo.run('-c', newKeyConfig, 'protect', uids['b'])).code).toBe(0);
    expect((await repo.run('-c', newKeyConfig, 'unprotect', uids['b'])).code).toBe(0);

    // An interrupted backup (killed after its first chunk was recorded).
    images['pending'] = Buffer.concat(Array.from({ length: 4 }, (_, i) => seeded(600_000 + i, 1024 * BS)));
    writeFileSync(repo.path('p.img'), images['pending']);
    const running = repo.start('-c', newKeyConfig, 'backup', 'file://p.img', 'pending');
    for (let i = 0; i < 3000 && !uids['pending']; i++) {
      const v = (await versionsOf(repo).catch(() => [])).find((x) => x.name === 'pending');
      if (v && v.recordedChunks >= 1) {
        running.child.kill('SIGSTOP');
        const frozen = (await versionsOf(repo)).find((x) => x.name === 'pending')!;
        expect(frozen.recordedChunks, 'the backup finished before it could be interrupted').toBeLessThan(frozen.chunkCount);
        uids['pending'] = frozen.uid;
      } else await new Promise((r) => setTimeout(r, 10));
    }
    running.child.kill('SIGKILL');
    await running.result;
    expect(uids['pending'], 'the backup never recorded a chunk').toBeTruthy();

    before = await observe(newKeyConfig);
    for (const name of COMMITTED) for (const id of await repo.blockIdsOf(uids[name]!)) if (id) neededIds.add(id);
    indexBefore = await indexEntries([...neededIds]);
    expect(Object.keys(indexBefore)).toHaveLength(neededIds.size);
    expect(before['ls']).toContain(uids['pending']);
    expect(before['ls']).not.toContain(uids['removed']);
  }, HOOK_TIMEOUT * 2);
  afterAll(() => repo.remove());

  test('the journal holds the history; deleting the SQLite file loses every version', async () => {
    expect(readdirSync(journalDir(repo)).sort()).toEqual([...Object.values(uids), 'index'].sort());
    deleteMetadata(repo);
    expect((await repo.run('-c', newKeyConfig, 'ls')).code).toBe(1);
  });

  test('a wrong key exits 7 and writes nothing', async () => {
    const wrong = repo.writeConfig('wrong.cfg', { key: randomKey() });
    const r = await repo.run('-c', wrong, 'recover');
    expect(r.code, r.output).toBe(7);
    expect(r.stderr).toMatch(/Wrong encryption key/);
    expect(existsSync(repo.sqlitePath)).toBe(false);
  });

  test('--dry-run lists what would be recovered and writes nothing', async () => {
    const r = await repo.run('-m', '-c', newKeyConfig, 'recover', '--dry-run');
    expect(r.code, r.output).toBe(0);
    for (const uid of Object.values(uids)) expect(r.stdout).toContain(uid);
    expect(r.stdout).toMatch(new RegExp(`\\|${uids['removed']}\\|removed\\|`));
    expect(existsSync(repo.sqlitePath)).toBe(false);
  });

  test('recover killed midway and run again finishes; ls, stats, du, diff-meta print what they did before', async () => {
    const running = repo.start('-c', newKeyConfig, 'recover');
    // A random point during the replay.
    const at = 1 + Math.floor(Math.random() * 8);
    await running.waitForStderr(new RegExp(`Replayed \\d+/\\d+ journal entries \\(${at}0%\\)`));
    running.child.kill('SIGKILL');
    await running.result;
    expect(existsSync(repo.sqlitePath)).toBe(true);
    const again = await repo.run('-c', newKeyConfig, 'recover');
    expect(again.code, again.output).toBe(0);
    expect(again.stderr).toMatch(/Continuing the interrupted recover/);
    expect(await observe(newKeyConfig)).toEqual(before);
    // The block index: each block's stored size, ciphertext checksum and validity (rekeys, scrubs).
    expect(await indexEntries([...neededIds])).toEqual(indexBefore);
  });

  test('a cleanup right after the recover deletes no block', async () => {
    const files = repo.blockFiles();
    const r = await repo.run('-c', newKeyConfig, 'cleanup');
    expect(r.code, r.output).toBe(0);
    expect(repo.blockFiles()).toEqual(files);
  });

  test('every version restores bit-exact; scrub is clean except for the corrupted version', async () => {
    for (const name of ['a1', 'a2', 'a3', 'b', 'healed']) await restoresBitExact(newKeyConfig, uids[name]!, images[name]!);
    for (const name of ['a1', 'a2', 'a3', 'b', 'healed']) expect((await repo.run('-c', newKeyConfig, 'scrub', uids[name]!)).code, name).toBe(0);
    expect((await repo.run('-c', newKeyConfig, 'scrub', uids['bad']!)).code).toBe(20);
  });

  test('the removed version stays removed', async () => {
    expect((await repo.run('-c', newKeyConfig, 'restore', uids['removed']!, 'file://removed.img')).code).toBe(3);
    expect((await repo.run('-c', newKeyConfig, 'rm', '-f', uids['removed']!)).code).toBe(3);
  });

  test('the interrupted backup continues (-c) from its recovered chunks; cleanup -f then deletes nothing a version needs', async () => {
    const r = await repo.run('--json', '-c', newKeyConfig, 'backup', '-c', uids['pending']!, 'file://p.img', 'pending');
    expect(r.code, r.output).toBe(0);
    expect(JSON.parse(r.stdout).stats.bytesRead).toBeLessThan(images['pending']!.length);
    await restoresBitExact(newKeyConfig, uids['pending']!, images['pending']!);
    const cleanup = await repo.run('-c', newKeyConfig, 'cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    for (const name of ['a1', 'a2', 'a3', 'b', 'healed', 'pending']) await restoresBitExact(newKeyConfig, uids[name]!, images[name]!);
  });

  test('a new backup dedups against the recovered blocks', async () => {
    writeFileSync(repo.path('a-again.img'), images['a3']!);
    const r = await repo.run('--json', '-c', newKeyConfig, 'backup', 'file://a-again.img', 'alpha-again');
    expect(r.code, r.output).toBe(0);
    expect(JSON.parse(r.stdout).stats.blocksWritten).toBe(0);
  });

  test('a store that is not empty is refused (25); --merge adds nothing twice', async () => {
    const lsBefore = (await repo.run('-m', '-c', newKeyConfig, 'ls')).stdout;
    const r = await repo.run('-c', newKeyConfig, 'recover');
    expect(r.code, r.output).toBe(25);
    expect(r.stderr).toMatch(/already holds \d+ versions/);
    const merged = await repo.run('-c', newKeyConfig, 'recover', '--merge');
    expect(merged.code, merged.output).toBe(0);
    expect(merged.stderr).toMatch(/ 0 events applied/);
    expect((await repo.run('-m', '-c', newKeyConfig, 'ls')).stdout).toBe(lsBefore);
  });
});

describe('recover refuses journal entries that do not verify, and recovers the rest', { timeout: 120_000 }, () => {
  let repo: Repo;
  const uids: string[] = [];
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    for (let i = 0; i < 3; i++) {
      makeImage(
        repo.path(`${i}.img`),
        Array.from({ length: 50 }, (_, j) => 1000 * i + j),
        BS,
      );
      uids.push(await repo.backup(`${i}.img`, `v${i}`));
      for (const args of [
        ['protect', uids[i]!],
        ['add-tag', uids[i]!, 'x'],
        ['expire', uids[i]!, '2040-01-01'],
      ])
        expect((await repo.cli(...args)).code).toBe(0);
    }
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('a tampered and a truncated entry are listed and refused (exit 26); the rest is recovered', async () => {
    const rows = await repo.ls();
    // Version 0: its 4th event (add-tag) altered; version 1: its 5th (expire) truncated.
    const tampered = join(journalDir(repo), uids[0]!, 'v0000000004');
    const data = readFileSync(tampered);
    data.writeUInt8(data.readUInt8(data.length - 20) ^ 0x01, data.length - 20);
    writeFileSync(tampered, data);
    const truncated = join(journalDir(repo), uids[1]!, 'v0000000005');
    truncateSync(truncated, readFileSync(truncated).length - 1);
    // An entry moved to another version's name fails too (the object key is authenticated).
    cpSync(join(journalDir(repo), uids[0]!, 'v0000000003'), join(journalDir(repo), uids[2]!, 'v0000000006'));
    deleteMetadata(repo);

    const r = await repo.cli('recover');
    expect(r.code, r.output).toBe(26);
    expect(r.stderr).toContain(`journal/${uids[0]}/v0000000004: fails authentication`);
    expect(r.stderr).toContain(`journal/${uids[1]}/v0000000005: fails authentication`);
    expect(r.stderr).toContain(`journal/${uids[2]}/v0000000006: fails authentication`);
    const after = await repo.ls();
    const byUid = (rowsOf: typeof rows, uid: string) => rowsOf.find((x) => x.uid === uid)!;
    // Up to the refused entry, and nothing after it.
    expect(byUid(after, uids[0]!)).toMatchObject({ protected: 1, expire: '' });
    expect(byUid(after, uids[0]!).tags).not.toContain('x');
    expect(byUid(after, uids[1]!)).toMatchObject({ protected: 1, expire: '' });
    expect(byUid(after, uids[1]!).tags).toContain('x');
    expect(byUid(after, uids[2]!)).toEqual(byUid(rows, uids[2]!));
    // cleanup -f right after a partial recover deletes no block a recovered version needs.
    const files = repo.blockFiles();
    const cleanup = await repo.cli('cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    expect(repo.blockFiles()).toEqual(files);
    for (const uid of uids) expect((await repo.cli('restore', uid, `file://${uid}.img`)).code).toBe(0);
    for (let i = 0; i < 3; i++) expect(fileSha(repo.path(`${uids[i]}.img`))).toBe(fileSha(repo.path(`${i}.img`)));
  });
});

describe('a storage whose journal holds a version the metadata store does not know', { timeout: 120_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('import of that version is refused (22) and names recover; recover into the empty store brings it back', async () => {
    makeImage(
      repo.path('x.img'),
      Array.from({ length: 40 }, (_, j) => 9000 + j),
      BS,
    );
    const uid = await repo.backup('x.img', 'x');
    expect((await repo.cli('export', uid, repo.path('x.export'))).code).toBe(0);
    deleteMetadata(repo);
    expect((await repo.cli('initdb')).code).toBe(0);
    const imported = await repo.cli('import', repo.path('x.export'));
    expect(imported.code, imported.output).toBe(22);
    expect(imported.stderr).toMatch(/already in this storage's journal .*run "backy2 recover"/);
    const r = await repo.cli('recover');
    expect(r.code, r.output).toBe(0);
    expect((await repo.ls()).map((v) => v.uid)).toEqual([uid]);
    expect((await repo.cli('restore', uid, 'file://x.out')).code).toBe(0);
    expect(fileSha(repo.path('x.out'))).toBe(fileSha(repo.path('x.img')));
  });
});

describe('the journal entry is written before the change is applied', { timeout: 120_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('a change whose journal entry cannot be written fails (6) and changes nothing; once it can, it is journaled and applied', async () => {
    makeImage(
      repo.path('j.img'),
      Array.from({ length: 20 }, (_, j) => 8000 + j),
      BS,
    );
    const uid = await repo.backup('j.img', 'j');
    const before = await repo.version(uid);
    const stream = join(journalDir(repo), uid);
    const entries = readdirSync(stream).sort();
    // A file where the version's journal directory was: no entry can be put there.
    renameSync(stream, `${stream}.away`);
    writeFileSync(stream, '');
    for (const args of [
      ['protect', uid],
      ['add-tag', uid, 'x'],
      ['expire', uid, '2040-01-01'],
      ['rm', '-f', uid],
    ]) {
      const r = await repo.cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.output}`).toBe(6);
      expect(r.stderr).toContain(repo.dataDir);
    }
    expect(await repo.version(uid)).toEqual(before);
    unlinkSync(stream);
    renameSync(`${stream}.away`, stream);
    expect(readdirSync(stream).sort()).toEqual(entries);

    const r = await repo.cli('protect', uid);
    expect(r.code, r.output).toBe(0);
    expect(readdirSync(stream)).toHaveLength(entries.length + 1);
    expect((await repo.version(uid))?.protected).toBe(1);
  });
});
