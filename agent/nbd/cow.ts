import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pLimit from 'p-limit';
import { chunkRecorded, readChunkWithOrigin } from '../../shared/app/block-map.ts';
import { BatchedBlockLookup } from '../../shared/app/lookup.ts';
import { writeManifest } from '../../shared/app/manifest.ts';
import { commitRecorded, recordChunk } from '../../shared/app/commit.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';
import { refused } from '../../shared/domain/errors.ts';
import type { StoredBlock, Version, VersionStats } from '../../shared/domain/types.ts';
import { runStartedAt } from '../../shared/domain/version.ts';
import type { Backend } from '../backend/backend.ts';
import { storeUnlessLive } from '../pipeline/store-block.ts';
import type { Log } from '../ui/log.ts';
import type { CowOverlay } from './export.ts';

/** Tag of every version made by writing through `backy2 nbd`. */
export const COW_TAG = 'nbd-cow';

/**
 * The first write to a served version starts a new pending version, as a backup starts (its start
 * durable before it relies on any block): named after the original, tagged, based on it.
 */
export async function startCowVersion(backend: Backend, original: Version, log: Log): Promise<Version> {
  const version = await backend.catalog.execute({
    type: 'StartVersion',
    uid: randomUUID(),
    name: `nbd-cow-${original.uid}`,
    snapshotName: original.name,
    sizeBytes: original.sizeBytes,
    blockSize: original.blockSize,
    chunkEntries: original.chunkEntries,
    baseUid: original.valid ? original.uid : null,
    tags: [COW_TAG],
    expire: null,
    host: hostname(),
  });
  log.info(`First write to ${original.uid}: copy-on-write version ${version.uid} started`);
  return version;
}

/**
 * Commits the copy-on-write version: the original's block map with the changed blocks put in,
 * each stored under the backup's dedup and GC rules (store-block.ts); unchanged chunks are
 * references to the original's. On failure the version is failed, never committed.
 */
export async function commitCowVersion(
  backend: Backend,
  original: Version,
  pending: Version,
  overlay: CowOverlay,
  log: Log,
): Promise<{ version: Version; stats: VersionStats }> {
  const started = Date.now();
  const { catalog, codec, config } = backend;
  try {
    // A block of the original found bad while this session ran would be copied into the new version.
    const now = await catalog.reader.getVersion(original.uid);
    if (now && !now.valid) throw refused(`Version ${original.uid} was found invalid while it was served; its copy-on-write version is not committed`);
    const version = await freshRun(backend, pending);
    const stats: VersionStats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
    const lookup = new BatchedBlockLookup(catalog.reader);
    const writeLimit = pLimit(config.simultaneousWrites);
    const inFlight = pLimit(config.simultaneousWrites + 2);
    const changed = new Set(overlay.changedBlocks);
    const packedMap: Buffer[] = [];
    let last: EventOf<'BlocksRecorded'> | null = null;
    for (let chunk = 0; chunk < version.chunkCount; chunk++) {
      const { entries, origin } = await readChunkWithOrigin(catalog.reader, original, chunk);
      const newBlocks: StoredBlock[] = [];
      let touched = false;
      await Promise.all(
        entries.map((e, i) => {
          if (!changed.has(e.idx)) {
            if (e.id === null) stats.blocksSparse++;
            else stats.blocksDedup++;
            return null;
          }
          touched = true;
          return inFlight(async () => {
            const data = await overlay.block(e.idx);
            stats.bytesRead += e.length;
            if (data === null || codec.isZero(data)) {
              entries[i] = { idx: e.idx, id: null, length: e.length };
              stats.blocksSparse++;
              return;
            }
            const { id, plaintext } = await codec.blockIdOf(data);
            entries[i] = { idx: e.idx, id, length: e.length };
            const stored = await storeUnlessLive(backend, lookup, writeLimit, plaintext, id);
            if (stored) {
              newBlocks.push(stored);
              stats.bytesWritten += stored.storedSize;
              stats.blocksWritten++;
            } else stats.blocksDedup++;
          });
        }),
      );
      const packed = packChunk(entries);
      packedMap.push(packed);
      last = await recordChunk(catalog, version, chunkRecorded(version.uid, chunk, touched ? { entries: packed } : { sameAs: origin }, newBlocks));
    }
    const committed = await commitRecorded(catalog, version, last, () => writeManifest(backend.blocks, codec, version, packedMap), stats, started);
    log.info(`Copy-on-write version ${committed.uid} committed: ${changed.size} changed blocks, ${stats.blocksWritten} stored`);
    return { version: committed, stats };
  } catch (e) {
    await catalog.execute({ type: 'FailVersion', uid: pending.uid, reason: (e as Error).message }).catch(() => {});
    throw e;
  }
}

/**
 * A session may last longer than a backup may: a version pending for more than half the maximum
 * backup age (or failed by a cleanup meanwhile) starts a new run first, as `backup -c` does, so
 * its commit is accepted. Nothing was looked up or uploaded for it before this point.
 */
async function freshRun(backend: Backend, pending: Version): Promise<Version> {
  const current = (await backend.catalog.reader.getVersion(pending.uid)) ?? pending;
  const tooOld = Date.now() - runStartedAt(current) > (backend.policy.maxBackupAgeSeconds * 1000) / 2;
  if (current.status === 'pending' && !tooOld) return current;
  return backend.catalog.execute({ type: 'ResumeVersion', uid: current.uid, sizeBytes: current.sizeBytes, blockSize: current.blockSize, host: hostname() });
}
