import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { addKeyToRing, loadRepositoryKeys, runRekey } from '../../shared/app/rekey.ts';
import { BlockCodec, WrongKeyError, blockKey, manifestKey, storedChecksum } from '../../shared/blocks/codec.ts';
import { KeyRingError, keyRingKey, ringOwner, unwrapDedupKey, wrapDedupKey } from '../../shared/blocks/keyring.ts';
import { deriveKeys, type RepositoryKeys } from '../../shared/blocks/keys.ts';
import type { BlockIndexEntry } from '../../shared/domain/types.ts';
import { MASTER_KEY, makeRepo, patternImage } from './helpers/repo.ts';

const A = Buffer.alloc(32, 0xa1);
const B = Buffer.alloc(32, 0xb2);
const C = Buffer.alloc(32, 0xc3);
const MiB4 = 4 * 1024 * 1024;

/** B's keys in a repository whose dedup key is A's (what the key ring gives after rotation). */
const rotated = (readKeys: Buffer[]): RepositoryKeys => ({
  ...deriveKeys(B),
  dedupKey: deriveKeys(A).dedupKey,
  readKeys: readKeys.map((k) => ({ keyId: deriveKeys(k).keyId, encryptionKey: deriveKeys(k).encryptionKey })),
});

describe('key ring entries (wrap/unwrap)', () => {
  const dedupKey = randomBytes(32);

  it('an entry opens with its own master key and gives the wrapped dedup key back', () => {
    const entry = wrapDedupKey(ringOwner(B), dedupKey);
    expect(entry.length).toBe(73);
    expect(unwrapDedupKey(ringOwner(B), entry).equals(dedupKey)).toBe(true);
    // Fresh nonce each time: two entries differ, both open.
    const other = wrapDedupKey(ringOwner(B), dedupKey);
    expect(other.equals(entry)).toBe(false);
    expect(unwrapDedupKey(ringOwner(B), other).equals(dedupKey)).toBe(true);
  });

  it('another key, a flipped bit, a renamed entry or a truncated one is refused with KeyRingError', () => {
    const entry = wrapDedupKey(ringOwner(B), dedupKey);
    expect(() => unwrapDedupKey(ringOwner(C), entry)).toThrow(KeyRingError);
    for (const at of [0, 5, 20, 40, 72]) {
      const bad = Buffer.from(entry);
      bad[at]! ^= 1;
      expect(() => unwrapDedupKey(ringOwner(B), bad)).toThrow(KeyRingError);
    }
    // C's name on B's entry: the key id inside (and the AAD) say it is not C's.
    const renamed = Buffer.from(entry);
    ringOwner(C).keyId.copy(renamed, 5);
    expect(() => unwrapDedupKey(ringOwner(C), renamed)).toThrow(KeyRingError);
    expect(() => unwrapDedupKey(ringOwner(B), entry.subarray(0, 60))).toThrow(KeyRingError);
  });
});

describe('codec with older keys for reading', () => {
  const web = (keys: RepositoryKeys) => new BlockCodec(keys, MiB4);
  const pool = (keys: RepositoryKeys) => new BlockCodec(keys, MiB4, { workers: 1 });
  const codecs: BlockCodec[] = [];
  afterAll(async () => Promise.all(codecs.map((c) => c.close())));

  for (const [name, make] of [
    ['WebCrypto', web],
    ['worker pool', pool],
  ] as const) {
    it(`${name}: decodes blocks A wrote when A is a read key, encodes with B, refuses without A`, async () => {
      const oldCodec = make(deriveKeys(A));
      const withA = make(rotated([A]));
      const withoutA = make(rotated([]));
      codecs.push(oldCodec, withA, withoutA);
      const plain = Buffer.concat([randomBytes(5000), Buffer.alloc(5000, 7)]);
      const id = await oldCodec.blockId(plain);
      expect(await withA.blockId(plain)).toBe(id); // same dedup key ⇒ same id
      const byA = await oldCodec.encode(plain, id);
      expect((await withA.decode(byA, id)).equals(plain)).toBe(true);
      const byB = await withA.encode(plain, id);
      expect(byB.subarray(6, 14).equals(deriveKeys(B).keyId)).toBe(true);
      expect((await withoutA.decode(byB, id)).equals(plain)).toBe(true);
      const err = await withoutA.decode(byA, id).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WrongKeyError);
      expect((err as Error).message).toContain(deriveKeys(A).keyId.toString('hex'));
      // A read key never writes: B's objects do not open with A alone.
      await expect(oldCodec.decode(byB, id)).rejects.toBeInstanceOf(WrongKeyError);
    });
  }
});

describe('loading keys from the ring, add-key', () => {
  it('no ring: the key is its own; after add-key both keys load the same dedup key; a key outside fails (exit 7)', async () => {
    const repo = makeRepo();
    try {
      const blocks = new DirBlockStore(repo.dataPath);
      const own = await loadRepositoryKeys(blocks, A);
      expect(own.dedupKey.equals(deriveKeys(A).dedupKey)).toBe(true);
      expect(await loadRepositoryKeys(blocks, C)).toMatchObject({ keyId: deriveKeys(C).keyId }); // no ring yet: embedded meta guards this
      const added = await addKeyToRing(blocks, own, B);
      expect(added).toMatchObject({ keyId: deriveKeys(B).keyId.toString('hex'), added: true });
      expect(added.ring).toEqual([deriveKeys(A).keyId.toString('hex'), deriveKeys(B).keyId.toString('hex')].sort());
      const viaB = await loadRepositoryKeys(blocks, B, [A]);
      expect(viaB.keyId.equals(deriveKeys(B).keyId)).toBe(true);
      expect(viaB.dedupKey.equals(deriveKeys(A).dedupKey)).toBe(true);
      expect(viaB.readKeys?.map((k) => k.keyId.toString('hex'))).toEqual([deriveKeys(A).keyId.toString('hex')]);
      expect((await loadRepositoryKeys(blocks, A)).dedupKey.equals(deriveKeys(A).dedupKey)).toBe(true);
      await expect(loadRepositoryKeys(blocks, C)).rejects.toMatchObject({ exitCode: 7 });
      // B can add C; the ring then opens C with A's dedup key too.
      expect((await addKeyToRing(blocks, viaB, C)).added).toBe(true);
      expect((await loadRepositoryKeys(blocks, C)).dedupKey.equals(deriveKeys(A).dedupKey)).toBe(true);
      expect((await addKeyToRing(blocks, viaB, C)).added).toBe(false);
      await expect(addKeyToRing(blocks, viaB, B)).rejects.toMatchObject({ exitCode: 1 });
      // A damaged entry: wrong key (exit 7), not a new dedup key.
      const entry = (await blocks.get(keyRingKey(deriveKeys(B).keyId)))!;
      entry[40]! ^= 1;
      await blocks.put(keyRingKey(deriveKeys(B).keyId), entry);
      await expect(loadRepositoryKeys(blocks, B)).rejects.toMatchObject({ exitCode: 7 });
    } finally {
      repo.close();
    }
  });
});

describe('runRekey', () => {
  it('re-encrypts blocks and manifests under the current key, fixes an index an interrupted run left behind, skips claimed blocks, and is resumable', async () => {
    const repo = makeRepo();
    const codec = new BlockCodec({ ...rotated([MASTER_KEY]), dedupKey: deriveKeys(MASTER_KEY).dedupKey }, MiB4);
    try {
      const image = patternImage([1, 2, 3, 0, 4, 5, 6]);
      const uid = await repo.backup(image, 'vm');
      // A removed version's manifest is cleanup's to delete: rekey leaves it alone.
      const gone = await repo.backup(patternImage([1, 2]), 'gone');
      await repo.backend.catalog.execute({ type: 'RemoveVersion', uid: gone, force: true });
      const goneManifest = (await repo.backend.blocks.get(manifestKey(gone)))!;
      const index = async () => {
        const all: BlockIndexEntry[] = [];
        for await (const page of repo.store.scanBlocks()) all.push(...page);
        return all;
      };
      const entries = await index();
      expect(entries).toHaveLength(6);
      const blocks = repo.backend.blocks;
      // An interrupted run: one object already re-encrypted, its index entry not yet updated.
      const [interrupted, claimed] = [entries[0]!, entries[1]!];
      const plain = await repo.backend.codec.decode((await blocks.get(blockKey(interrupted.id)))!, interrupted.id);
      await blocks.put(blockKey(interrupted.id), await codec.encode(plain, interrupted.id));
      // A block cleanup claimed: rekey must not touch its object.
      const t = new Date(0).toISOString();
      await repo.store.markUnreferenced([claimed.id], t);
      expect(await repo.store.claimForDeletion([{ id: claimed.id, markedAt: t }], t)).toEqual([claimed.id]);
      const claimedObject = (await blocks.get(blockKey(claimed.id)))!;

      const dry = await runRekey(repo.store, blocks, codec, { dryRun: true, concurrency: 3 });
      expect(dry).toMatchObject({ blocks: 6, rekeyed: 4, indexFixed: 1, skipped: 1, alreadyCurrent: 0, manifestsRekeyed: 1, unreadable: [] });
      expect(storedChecksum((await blocks.get(blockKey(entries[2]!.id)))!)).toBe(entries[2]!.checksum);

      const progress: number[] = [];
      const report = await runRekey(repo.store, blocks, codec, { dryRun: false, concurrency: 3, progress: (done, total) => progress.push(done / total) });
      expect(report).toMatchObject({ blocks: 6, rekeyed: 4, indexFixed: 1, skipped: 1, alreadyCurrent: 0, manifestsRekeyed: 1, unreadable: [] });
      expect(progress.at(-1)).toBe(1);
      expect((await blocks.get(blockKey(claimed.id)))!.equals(claimedObject)).toBe(true);
      for (const e of await index()) {
        const object = (await blocks.get(blockKey(e.id)))!;
        if (e.id === claimed.id) continue;
        expect(object.subarray(6, 14).equals(deriveKeys(B).keyId)).toBe(true);
        expect([e.storedSize, e.checksum]).toEqual([object.length, storedChecksum(object)]);
        // The current key alone reads it, and it still hashes to its id.
        expect((await codec.decode(object, e.id)).length).toBe(4096);
      }
      const manifest = (await blocks.get(manifestKey(uid)))!;
      expect(manifest.subarray(32 + 6, 32 + 14).equals(deriveKeys(B).keyId)).toBe(true);
      expect((await blocks.get(manifestKey(gone)))!.equals(goneManifest)).toBe(true);

      // Replaying the log gives the same index (BlocksRekeyed is an event like any other).
      const before = await index();
      repo.store.rebuildProjections();
      expect(await index()).toEqual(before);

      const again = await runRekey(repo.store, blocks, codec, { dryRun: false, concurrency: 3 });
      expect(again).toMatchObject({ rekeyed: 0, indexFixed: 0, alreadyCurrent: 5, skipped: 1, manifestsRekeyed: 0 });
    } finally {
      await codec.close();
      repo.close();
    }
  });

  it('reports objects no configured key opens as unreadable and leaves them as they are', async () => {
    const repo = makeRepo();
    const codec = new BlockCodec(rotated([]), MiB4); // MASTER_KEY not configured
    try {
      await repo.backup(patternImage([1, 2]), 'vm');
      const before = await repo.storedBlocks();
      const report = await runRekey(repo.store, repo.backend.blocks, codec, { dryRun: false, concurrency: 2 });
      expect(report.rekeyed).toBe(0);
      expect(report.unreadable).toHaveLength(3); // two blocks and the manifest
      expect(report.unreadable[0]!.reason).toMatch(/key id/);
      expect(await repo.storedBlocks()).toEqual(before);
    } finally {
      await codec.close();
      repo.close();
    }
  });
});
