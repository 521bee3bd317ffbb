import { setTimeout as sleep } from 'node:timers/promises';
import type pLimit from 'p-limit';
import { blockKey, storedChecksum } from '../../shared/blocks/codec.ts';
import { storageError } from '../../shared/domain/errors.ts';
import type { BlockId, BlockIndexEntry, StoredBlock } from '../../shared/domain/types.ts';
import type { BatchedBlockLookup } from '../../shared/app/lookup.ts';
import { afterTouch, decideByIndex } from '../../shared/domain/backup.ts';
import type { Backend } from '../backend/backend.ts';

/**
 * Storing one block under the dedup and GC rules (docs/DESIGN-NOTES.md), for every writer of
 * versions (backup, the NBD server's copy-on-write commit). The caller's version must be pending
 * (its start durable) before it calls this.
 *
 * Returns the stored description when this call uploaded the object (a new block for the
 * index), or null when the block was already stored and is now safely relied on.
 */
export async function storeUnlessLive(
  backend: Backend,
  lookup: BatchedBlockLookup,
  writeLimit: ReturnType<typeof pLimit>,
  data: Buffer,
  id: BlockId,
): Promise<StoredBlock | null> {
  const entry = await lookup.get(id);
  const action = decideByIndex(entry);
  if (action === 'dedup') return null;
  // The plaintext is not needed after this: hand it to the codec (no copy to its worker).
  const { stored: body, checksum } = await backend.codec.encodeForUpload(data, id, true);
  const stored: StoredBlock = { id, storedSize: body.length, checksum };
  const key = blockKey(id);
  if (action === 'replace invalid copy') {
    // A scrub found the stored copy bad: replace it with this good one.
    await writeLimit(() => backend.blocks.put(key, body));
  } else if (!(await writeLimit(() => backend.blocks.putIfAbsent(key, body, { sha256: checksum })))) {
    await relyOnExisting(backend, stored, body, entry);
    return null;
  }
  return stored;
}

/**
 * The object already exists but the index did not list it as live (another host's fresh upload,
 * an upload of a killed run, a block marked unreferenced, or one a cleanup is deleting). Touching
 * it makes cleanup keep it; if a cleanup is deleting it, wait until it is gone and upload it again.
 * The index entry must describe the object actually stored (a key-less scrub compares checksums),
 * and an existing object has other ciphertext than ours (fresh nonce): so the touch carries the
 * existing entry's description, or the stored object's own, and ours only once ours is stored.
 */
export async function relyOnExisting(backend: Backend, ours: StoredBlock, body: Buffer, entry: BlockIndexEntry | undefined, oursStored = false): Promise<void> {
  const key = blockKey(ours.id);
  let described: StoredBlock | null = oursStored
    ? ours
    : entry
      ? { id: ours.id, storedSize: entry.storedSize, checksum: entry.checksum }
      : await describeStored(backend, key, ours.id);
  for (let attempt = 0; attempt < 60; attempt++) {
    if (described === null) {
      // The object is gone (a cleanup finished deleting it): store ours and describe it.
      await backend.blocks.put(key, body);
      described = ours;
    }
    const next = afterTouch((await backend.catalog.touch([described])).get(ours.id));
    if (next === 'rely') return;
    if (next === 'recheck object') {
      if ((await backend.blocks.head(key)) !== null) return;
      described = null;
      continue;
    }
    // Being deleted: once it is gone, ours is uploaded.
    await sleep(Math.min(5000, 250 * (attempt + 1)));
    if ((await backend.blocks.head(key)) === null) described = null;
  }
  throw storageError(`Block ${ours.id} is being deleted by a cleanup that has not finished; run "backy2 cleanup" and retry the backup`);
}

/** Size and checksum of the stored object, or null when there is none. */
async function describeStored(backend: Backend, key: string, id: BlockId): Promise<StoredBlock | null> {
  const object = await backend.blocks.get(key);
  return object === null ? null : { id, storedSize: object.length, checksum: storedChecksum(object) };
}
