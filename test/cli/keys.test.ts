/**
 * Key rotation end to end (embedded): backups with key A, `add-key B`, switch the config to B
 * with A as an old key, back up again (same block ids: nothing new written), `rekey` moves every
 * object to B, and with A gone from the config every version still restores bit-exact and
 * scrubs clean. A key C outside the key ring fails with exit 7 before anything is written.
 */
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deriveKeys } from '../../shared/blocks/keys.ts';
import { HOOK_TIMEOUT, listFiles, makeImage, overwriteBlock, blockData, randomKey, sha256, Repo } from '../support/cli.ts';

const BS = 256 * 1024;
const keyIdOf = (hex: string) => deriveKeys(Buffer.from(hex, 'hex')).keyId.toString('hex');
/** Key id in a stored block object's header (bytes 6..14). */
const headerKeyId = (object: Buffer) => object.subarray(6, 14).toString('hex');

interface Stats {
  blocksWritten: number;
  blocksDedup: number;
}

describe('key rotation: add-key, old_encryption_keys, rekey', { timeout: 120_000 }, () => {
  let repo: Repo;
  const keyA = randomKey();
  const keyB = randomKey();
  let image1: Buffer;
  let image2: Buffer;
  let uid1: string;
  const uids: string[] = [];
  let configB: string;
  let configBOnly: string;

  const backupWith = async (config: string, image: string): Promise<{ uid: string; stats: Stats }> => {
    const r = await repo.run('--json', '-c', config, 'backup', `file://${image}`, 'vm');
    expect(r.code, r.output).toBe(0);
    return JSON.parse(r.stdout) as { uid: string; stats: Stats };
  };
  const restoresBitExact = async (config: string, uid: string, image: Buffer) => {
    const target = `restored-${uid}-${Math.random().toString(36).slice(2)}.img`;
    const r = await repo.run('-c', config, 'restore', uid, `file://${target}`);
    expect(r.code, r.output).toBe(0);
    expect(sha256(readFileSync(repo.path(target)))).toBe(sha256(image));
  };
  const objects = () => listFiles(join(repo.dataDir, 'blocks')).map((p) => readFileSync(p));
  const manifests = () => listFiles(join(repo.dataDir, 'manifests')).map((p) => readFileSync(p).subarray(32));
  const rekeyJson = async (config: string, ...args: string[]) => {
    const r = await repo.run('--json', '-c', config, 'rekey', ...args);
    expect(r.code, r.output).toBe(0);
    return (JSON.parse(r.stdout) as Record<string, number>[])[0]!;
  };

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, key: keyA });
    image1 = makeImage(repo.path('one.img'), [1, 2, 'text', 'zero', 3, 4], BS);
    uid1 = (await backupWith(repo.configPath, 'one.img')).uid;
    uids.push(uid1);
    configB = repo.writeConfig('b.cfg', { key: keyB, extraDefaults: [`old_encryption_keys: ${keyA}`] });
    configBOnly = repo.writeConfig('b-only.cfg', { key: keyB });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('before add-key, key B cannot open the repository (exit 7)', async () => {
    const r = await repo.run('-c', configB, 'ls');
    expect(r.code, r.output).toBe(7);
    expect(r.output).toMatch(/Wrong encryption key/);
  });

  test('add-key B (run with key A) writes ring entries for A and B; -m prints the row', async () => {
    writeFileSync(repo.path('b.key'), keyB + '\n');
    const r = await repo.cliG(['-m'], 'add-key', repo.path('b.key'));
    expect(r.code, r.output).toBe(0);
    const [header, row] = r.stdout.trim().split('\n');
    expect(header).toBe('key_id|file|added|ring');
    expect(row).toBe(`${keyIdOf(keyB)}|${repo.path('b.key')}|1|${[keyIdOf(keyA), keyIdOf(keyB)].sort().join(',')}`);
    expect(readdirSync(join(repo.dataDir, 'keys')).sort()).toEqual([keyIdOf(keyA), keyIdOf(keyB)].sort());
    // A second add-key of the same key changes nothing.
    const again = await repo.cliG(['--json'], 'add-key', repo.path('b.key'));
    expect(again.code, again.output).toBe(0);
    expect(JSON.parse(again.stdout)[0]).toMatchObject({ key_id: keyIdOf(keyB), added: 0 });
  });

  test('add-key --generate creates a 0600 key file and refuses to overwrite one; bad key files exit 1', async () => {
    const r = await repo.cliG(['--json'], 'add-key', '--generate', repo.path('gen.key'));
    expect(r.code, r.output).toBe(0);
    const generated = readFileSync(repo.path('gen.key'), 'utf8').trim();
    expect(generated).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(repo.path('gen.key')).mode & 0o777).toBe(0o600);
    expect(JSON.parse(r.stdout)[0]).toMatchObject({ key_id: keyIdOf(generated), added: 1 });
    const refused = await repo.cli('add-key', '--generate', repo.path('gen.key'));
    expect(refused.code).toBe(1);
    expect(readFileSync(repo.path('gen.key'), 'utf8').trim()).toBe(generated);
    writeFileSync(repo.path('short.key'), 'abcd\n');
    expect((await repo.cli('add-key', repo.path('short.key'))).code).toBe(1);
    expect((await repo.cli('add-key', repo.path('missing.key'))).code).toBe(1);
  });

  test('with B configured (A as old key) an identical backup writes no block: the ids did not change', async () => {
    const b = await backupWith(configB, 'one.img');
    uids.push(b.uid);
    expect(b.stats.blocksWritten).toBe(0);
    expect(b.stats.blocksDedup).toBe(5);
    expect(await repo.blockIdsOf(b.uid)).toEqual(await repo.blockIdsOf(uid1));
  });

  test('a changed block is written with B; every version restores bit-exact with B + old A', async () => {
    image2 = Buffer.from(image1);
    blockData(9, BS).copy(image2, BS);
    writeFileSync(repo.path('two.img'), image2);
    overwriteBlock(repo.path('two.img'), 1, BS, blockData(9, BS));
    const b = await backupWith(configB, 'two.img');
    uids.push(b.uid);
    expect(b.stats.blocksWritten).toBe(1);
    const newId = (await repo.blockIdsOf(b.uid))[1]!;
    expect(headerKeyId(readFileSync(repo.blockPath(newId)))).toBe(keyIdOf(keyB));
    await restoresBitExact(configB, uids[0]!, image1);
    await restoresBitExact(configB, uids[1]!, image1);
    await restoresBitExact(configB, uids[2]!, image2);
  });

  test('without the old key, blocks A wrote cannot be read yet (exit 7)', async () => {
    const r = await repo.run('-c', configBOnly, 'restore', uid1, 'file://too-early.img');
    expect(r.code, r.output).toBe(7);
  });

  test('rekey --dry-run counts and changes nothing', async () => {
    const before = objects().map(sha256);
    const report = await rekeyJson(configB, '--dry-run');
    expect(report).toMatchObject({ blocks: 6, rekeyed: 5, already_current: 1, unreadable: 0, manifests_rekeyed: 1 });
    expect(objects().map(sha256)).toEqual(before);
  });

  test('rekey moves every block and manifest to B, updates the index checksums, and a second run has nothing to do', async () => {
    const report = await rekeyJson(configB);
    expect(report).toMatchObject({ blocks: 6, rekeyed: 5, already_current: 1, unreadable: 0, manifests_rekeyed: 1 });
    expect(new Set(objects().map(headerKeyId))).toEqual(new Set([keyIdOf(keyB)]));
    expect(new Set(manifests().map(headerKeyId))).toEqual(new Set([keyIdOf(keyB)]));
    // The index holds each object's checksum and size (what key-less scrubs compare).
    const db = new DatabaseSync(repo.sqlitePath, { readOnly: true });
    try {
      const rows = db.prepare('SELECT id, stored_size, checksum FROM blocks').all() as { id: string; stored_size: number; checksum: string }[];
      expect(rows).toHaveLength(6);
      for (const row of rows) {
        const object = readFileSync(repo.blockPath(row.id));
        expect([row.stored_size, row.checksum]).toEqual([object.length, sha256(object)]);
      }
    } finally {
      db.close();
    }
    const again = await rekeyJson(configB);
    expect(again).toMatchObject({ rekeyed: 0, already_current: 6, manifests_rekeyed: 0 });
  });

  test('with A removed from the config every version restores bit-exact and scrubs clean; A alone can no longer read', async () => {
    await restoresBitExact(configBOnly, uids[0]!, image1);
    await restoresBitExact(configBOnly, uids[1]!, image1);
    await restoresBitExact(configBOnly, uids[2]!, image2);
    for (const uid of uids) {
      const s = await repo.run('-c', configBOnly, 'scrub', uid);
      expect(s.code, s.output).toBe(0);
    }
    const oldOnly = await repo.cli('restore', uid1, 'file://with-a.img');
    expect(oldOnly.code, oldOnly.output).toBe(7);
  });

  test('a key C outside the key ring exits 7 and writes nothing', async () => {
    const configC = repo.writeConfig('c.cfg', { key: randomKey() });
    const blocksBefore = repo.blockFiles();
    const eventsBefore = countEvents(repo.sqlitePath);
    for (const args of [['ls'], ['backup', 'file://two.img', 'vm'], ['rekey']]) {
      const r = await repo.run('-c', configC, ...args);
      expect(r.code, `${args.join(' ')}: ${r.output}`).toBe(7);
      expect(r.output).toMatch(/not in this repository's key ring/);
    }
    // add-key needs a key of the ring: refused, and --generate leaves no key file behind.
    const addByOutsider = await repo.run('-c', configC, 'add-key', '--generate', repo.path('outsider.key'));
    expect(addByOutsider.code, addByOutsider.output).toBe(7);
    expect(existsSync(repo.path('outsider.key'))).toBe(false);
    expect(readdirSync(join(repo.dataDir, 'keys'))).toHaveLength(3); // A, B and the generated key of an earlier test
    expect(repo.blockFiles()).toEqual(blocksBefore);
    expect(countEvents(repo.sqlitePath)).toBe(eventsBefore);
  });
});

function countEvents(sqlitePath: string): number {
  const db = new DatabaseSync(sqlitePath, { readOnly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n;
  } finally {
    db.close();
  }
}
