import pLimit from 'p-limit';
import { blockKey, manifestKey, storedChecksum, type BlockCodec } from '../blocks/codec.ts';
import { storedKeyId } from '../blocks/codec-sync.ts';
import { KEY_RING_PREFIX, KeyRingError, keyRingKey, ringKeyIdOf, ringOwner, unwrapDedupKey, wrapDedupKey, type RingOwner } from '../blocks/keyring.ts';
import { deriveKeys, deriveWrapKey, parseMasterKey, type RepositoryKeys } from '../blocks/keys.ts';
import type { Config } from '../config/config.ts';
import { integrityError, usageError } from '../domain/errors.ts';
import type { BlockIndexEntry, StoredBlock } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';

/**
 * Key rotation (see docs/DESIGN-NOTES.md "Key rotation"): the key ring in the block store keeps the
 * repository's dedup key (so block ids never change), older master keys stay configured for
 * reading, and `rekey` re-encrypts what they wrote under the current key.
 */

/** `old_encryption_keys`: older master keys, for reading what they wrote until `rekey` (both backends). */
export const oldMasterKeys = (config: Config): Buffer[] =>
  config.oldEncryptionKeysHex.map((hex, i) => parseMasterKey(hex, `[DEFAULTS] old_encryption_keys (key ${i + 1}) in ${config.source}`));

/** The key ids in the ring (hex), sorted. */
export async function ringKeyIds(blocks: BlockStore): Promise<string[]> {
  const ids: string[] = [];
  for await (const key of blocks.list(KEY_RING_PREFIX)) {
    const id = ringKeyIdOf(key);
    if (id) ids.push(id);
  }
  return ids.sort();
}

/**
 * The keys a repository is opened with: the configured master key's ids and encryption key, the
 * repository's dedup key from the ring (the key's own when the repository never rotated), and the
 * older keys for reading. A key that the ring does not list cannot open a repository that has one:
 * it would derive other block ids.
 */
export async function loadRepositoryKeys(blocks: BlockStore, master: Buffer, oldMasters: Buffer[] = []): Promise<RepositoryKeys> {
  const own = deriveKeys(master);
  const wrapKey = deriveWrapKey(master);
  const readKeys = oldMasters
    .map(deriveKeys)
    .filter((k) => !k.keyId.equals(own.keyId))
    .map((k) => ({ keyId: k.keyId, encryptionKey: k.encryptionKey }));
  const entry = await blocks.get(keyRingKey(own.keyId));
  if (entry) {
    try {
      return { ...own, dedupKey: unwrapDedupKey({ keyId: own.keyId, wrapKey }, entry), readKeys, wrapKey };
    } catch (e) {
      if (e instanceof KeyRingError) throw integrityError(`Wrong encryption key: ${e.message}`);
      throw e;
    }
  }
  const ring = await ringKeyIds(blocks);
  if (ring.length)
    throw integrityError(
      `Wrong encryption key: the configured key (id ${own.keyId.toString('hex')}) is not in this repository's key ring (${ring.join(', ')}); add it with "backy2 add-key" while a key of the ring is configured`,
    );
  return { ...own, readKeys, wrapKey };
}

export interface AddKeyResult {
  keyId: string;
  /** False when the ring already held this key (nothing written). */
  added: boolean;
  ring: string[];
}

/**
 * Adds `newMaster` to the ring, wrapping the repository's dedup key for it. The configured key's
 * own entry is written first, so that once a ring exists every key that may open the repository
 * is in it.
 */
export async function addKeyToRing(blocks: BlockStore, current: RepositoryKeys, newMaster: Buffer): Promise<AddKeyResult> {
  const fresh = deriveKeys(newMaster);
  const keyId = fresh.keyId.toString('hex');
  if (fresh.keyId.equals(current.keyId)) throw usageError(`Key ${keyId} is the configured key already`);
  if (!current.wrapKey) throw usageError('The configured key cannot write the key ring');
  const wrapFor = (owner: RingOwner) => wrapDedupKey(owner, current.dedupKey);
  await blocks.putIfAbsent(keyRingKey(current.keyId), wrapFor({ keyId: current.keyId, wrapKey: current.wrapKey }));
  const existing = await blocks.get(keyRingKey(fresh.keyId));
  if (existing) {
    let dedupKey: Buffer;
    try {
      dedupKey = unwrapDedupKey(ringOwner(newMaster), existing);
    } catch (e) {
      if (e instanceof KeyRingError) throw integrityError(`${e.message}; refusing to touch it`);
      throw e;
    }
    if (!dedupKey.equals(current.dedupKey)) throw integrityError(`Key ring entry ${keyId} holds another repository's dedup key; refusing to touch it`);
    return { keyId, added: false, ring: await ringKeyIds(blocks) };
  }
  const added = await blocks.putIfAbsent(keyRingKey(fresh.keyId), wrapFor(ringOwner(newMaster)));
  return { keyId, added, ring: await ringKeyIds(blocks) };
}

export interface RekeyOptions {
  dryRun: boolean;
  concurrency: number;
  /** Called after each block with (blocks done, total blocks). */
  progress?: (done: number, total: number) => void;
  now?: () => Date;
}

export interface RekeyReport {
  /** Index entries looked at. */
  blocks: number;
  /** Re-encrypted under the current key (with --dry-run: would be). */
  rekeyed: number;
  /** Already on the current key, but the index's checksum was not the object's (an interrupted run): fixed. */
  indexFixed: number;
  alreadyCurrent: number;
  /** Claimed for deletion, object gone, or changed by someone else meanwhile: left alone. */
  skipped: number;
  unreadable: { id: string; reason: string }[];
  manifestsRekeyed: number;
  manifestsCurrent: number;
  /** Bytes read from the block store. */
  bytesRead: number;
}

/** Index updates are written in small batches, so the index follows the objects closely (key-less scrubs compare checksums). */
const FLUSH_EVERY = 64;

/**
 * Re-encrypts every block and manifest that an older key wrote under the current key, keeping
 * block ids. Resumable: a second run only touches objects still on older keys (or whose index
 * entry an interrupted run did not update yet).
 */
export async function runRekey(store: MetadataStore, blocks: BlockStore, codec: BlockCodec, opts: RekeyOptions): Promise<RekeyReport> {
  const now = opts.now ?? (() => new Date());
  const report: RekeyReport = {
    blocks: 0,
    rekeyed: 0,
    indexFixed: 0,
    alreadyCurrent: 0,
    skipped: 0,
    unreadable: [],
    manifestsRekeyed: 0,
    manifestsCurrent: 0,
    bytesRead: 0,
  };
  const limit = pLimit(opts.concurrency);
  let total = 0;
  for await (const page of store.scanBlocks()) total += page.length;

  const rekeyBlock = async (entry: BlockIndexEntry): Promise<StoredBlock | null> => {
    if (entry.deleting) return skip();
    const stored = await blocks.get(blockKey(entry.id));
    if (!stored) return skip();
    report.bytesRead += stored.length;
    const keyId = storedKeyId(stored);
    if (!keyId) return unreadable(entry.id, 'not a backy2 block object');
    const onCurrentKey = keyId.equals(codec.keys.keyId);
    if (onCurrentKey && storedChecksum(stored) === entry.checksum) {
      report.alreadyCurrent++;
      return null;
    }
    let plaintext: Buffer;
    try {
      plaintext = await codec.decode(stored, entry.id);
    } catch (e) {
      return unreadable(entry.id, (e as Error).message);
    }
    if (onCurrentKey) {
      report.indexFixed++;
      return opts.dryRun ? null : { id: entry.id, storedSize: stored.length, checksum: storedChecksum(stored) };
    }
    report.rekeyed++;
    if (opts.dryRun) return null;
    const fresh = await codec.encodeForUpload(plaintext, entry.id, true);
    // The new object replaces the only copy: it must decode to the block id before it does.
    await codec.decode(fresh.stored, entry.id);
    // Right before the overwrite the entry must still be live and unchanged: a block that cleanup
    // claimed meanwhile is not brought back (see DESIGN-NOTES for the window that remains).
    const latest = (await store.getBlocks([entry.id])).get(entry.id);
    if (!latest || latest.deleting || latest.checksum !== entry.checksum) {
      report.rekeyed--;
      return skip();
    }
    await blocks.put(blockKey(entry.id), fresh.stored);
    return { id: entry.id, storedSize: fresh.stored.length, checksum: fresh.checksum };
  };
  const skip = () => {
    report.skipped++;
    return null;
  };
  const unreadable = (id: string, reason: string) => {
    report.unreadable.push({ id, reason });
    return null;
  };

  let done = 0;
  for await (const page of store.scanBlocks()) {
    for (let i = 0; i < page.length; i += FLUSH_EVERY) {
      const slice = page.slice(i, i + FLUSH_EVERY);
      const updates = await Promise.all(
        slice.map((entry) =>
          limit(async () => {
            const update = await rekeyBlock(entry);
            opts.progress?.(++done, total);
            return update;
          }),
        ),
      );
      await store.rekeyBlocks(
        updates.filter((u): u is StoredBlock => u !== null),
        now().toISOString(),
      );
    }
    report.blocks += page.length;
  }
  await rekeyManifests(store, blocks, codec, opts.dryRun, report);
  return report;
}

/**
 * Manifests (`manifests/<uid>` = manifest id ‖ encoded object) are written once at commit; cleanup
 * deletes those of removed versions, so those are left alone (checked again right before the
 * overwrite). Manifests of uids the metadata does not know are kept by cleanup and rekeyed.
 */
async function rekeyManifests(store: MetadataStore, blocks: BlockStore, codec: BlockCodec, dryRun: boolean, report: RekeyReport): Promise<void> {
  const PREFIX = manifestKey('');
  const removed = async (key: string) => (await store.getVersion(key.slice(PREFIX.length)))?.status === 'removed';
  for await (const key of blocks.list(PREFIX)) {
    if (await removed(key)) continue;
    const stored = await blocks.get(key);
    if (!stored) continue;
    report.bytesRead += stored.length;
    const id = stored.subarray(0, 32).toString('hex');
    const object = stored.subarray(32);
    const keyId = storedKeyId(object);
    if (keyId?.equals(codec.keys.keyId)) {
      report.manifestsCurrent++;
      continue;
    }
    let plaintext: Buffer;
    try {
      plaintext = await codec.decode(object, id);
    } catch (e) {
      report.unreadable.push({ id: key, reason: (e as Error).message });
      continue;
    }
    report.manifestsRekeyed++;
    if (dryRun) continue;
    const fresh = await codec.encode(plaintext, id);
    await codec.decode(fresh, id);
    if (await removed(key)) {
      report.manifestsRekeyed--;
      continue;
    }
    await blocks.put(key, Buffer.concat([stored.subarray(0, 32), fresh]));
  }
}
