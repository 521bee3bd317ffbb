import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { blockKey } from '../../shared/blocks/codec.ts';
import { blockLength, chunkLength, DEFAULT_CHUNK_ENTRIES, packChunk } from '../../shared/domain/blockmap.ts';
import { Backy2Error, ExitCode, storageError } from '../../shared/domain/errors.ts';
import { BlocksRecorded, type EventOf } from '../../shared/domain/events.ts';
import { autoTags } from '../../shared/domain/version.ts';
import type { BlockId, BlockRef, StoredBlock, Version, VersionStats } from '../../shared/domain/types.ts';
import { readChunkWithOrigin } from '../../shared/app/block-map.ts';
import { BatchedBlockLookup, isLiveEntry } from '../../shared/app/lookup.ts';
import { writeManifest } from '../../shared/app/manifest.ts';
import { resolveVersion } from '../../shared/app/resolve.ts';
import type { Backend } from '../backend/backend.ts';
import { openSource, readAt, deviceSize } from '../io/device.ts';
import type { Log } from '../ui/log.ts';
import { startProgress } from '../ui/progress.ts';

export interface BackupRequest {
  sourceUrl: string;
  name: string;
  snapshotName: string;
  tags: string[] | null;
  expire: string | null;
  baseUid: string | null;
}

type BlockOutcome = 'sparse' | 'dedup' | 'written';

/**
 * backup: read the source in fixed blocks with several reads in flight; per block decide
 * sparse / dedup / upload; record the block map chunk by chunk; commit only when every
 * chunk is recorded. Memory is bounded by the number of blocks in flight, not the source size.
 */
export async function runBackup(backend: Backend, req: BackupRequest, log: Log, progressBar: boolean): Promise<{ version: Version; stats: VersionStats }> {
  const { catalog, blocks, codec, config } = backend;
  const started = Date.now();
  const source = await openSource(req.sourceUrl);
  try {
    const base = req.baseUid ? await resolveVersion(catalog.reader, req.baseUid) : undefined;
    const tags = req.tags ?? autoTags(req.name, await catalog.reader.listVersions(), new Date());
    // Durable before any dedup lookup (DESIGN: GC invariant, step 1).
    const version = await catalog.execute({
      type: 'StartVersion',
      uid: randomUUID(),
      name: req.name,
      snapshotName: req.snapshotName,
      sizeBytes: source.size,
      blockSize: config.blockSize,
      chunkEntries: DEFAULT_CHUNK_ENTRIES,
      baseUid: base?.uid ?? null,
      tags,
      expire: req.expire,
      host: hostname(),
    });
    log.debug(`Started version ${version.uid} of ${source.path} (${source.size} bytes, ${version.blockCount} blocks)`);
    try {
      const stats = await backupBlocks(backend, version, base, source, req.sourceUrl, log, progressBar);
      const after = await deviceSize(source.path, source.fh);
      if (after.size !== source.size)
        throw new Backy2Error(ExitCode.sourceMismatch, `Source ${req.sourceUrl} changed size during backup (${source.size} → ${after.size} bytes); stop writers or back up a snapshot`);
      await catalog.awaitRecorded(version.uid, version.chunkCount);
      stats.durationSeconds = (Date.now() - started) / 1000;
      const committed = await catalog.execute({ type: 'CommitVersion', uid: version.uid, stats });
      return { version: committed, stats };
    } catch (e) {
      await catalog.execute({ type: 'FailVersion', uid: version.uid, reason: (e as Error).message }).catch(() => {});
      throw e;
    }
  } finally {
    await source.fh.close();
  }
}

async function backupBlocks(
  backend: Backend,
  version: Version,
  base: Version | undefined,
  source: Awaited<ReturnType<typeof openSource>>,
  sourceUrl: string,
  log: Log,
  progressBar: boolean,
): Promise<VersionStats> {
  const { catalog, blocks, codec, config } = backend;
  const stats: VersionStats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
  const readLimit = pLimit(config.simultaneousReads);
  const writeLimit = pLimit(config.simultaneousWrites);
  // Blocks in flight bound memory: each holds at most its plaintext and its encoded object.
  const inFlight = pLimit(config.simultaneousReads + config.simultaneousWrites + 2);
  const lookup = new BatchedBlockLookup(catalog.reader);
  // Blocks seen recently in this run (bounded: older repeats fall back to the index lookup).
  const seenThisRun = new Map<BlockId, Promise<BlockOutcome>>();
  const SEEN_LIMIT = 65_536;
  const packedMap: Buffer[] = [];
  const progress = startProgress('Backed up', version.blockCount, log, { bar: progressBar });
  let done = 0;

  const storeBlock = async (data: Buffer, id: BlockId, newBlocks: StoredBlock[], sameAsBase: boolean): Promise<BlockOutcome> => {
    // The base version is committed, valid and not removed (checked at start), so a block it holds
    // at the same position is safe to reuse without asking the index.
    if (sameAsBase) return 'dedup';
    const entry = await lookup.get(id);
    if (isLiveEntry(entry)) return 'dedup';
    // The plaintext is not needed after this: hand it to the codec (no copy to its worker).
    const { stored: body, checksum } = await codec.encodeForUpload(data, id, true);
    const stored: StoredBlock = { id, storedSize: body.length, checksum };
    const key = blockKey(id);
    if (entry && !entry.valid && !entry.deleting) {
      // A scrub found the stored copy bad: replace it with this good one.
      await writeLimit(() => blocks.put(key, body));
    } else if (!(await writeLimit(() => blocks.putIfAbsent(key, body)))) {
      await relyOnExisting(backend, stored, body);
      return 'dedup';
    }
    newBlocks.push(stored);
    stats.bytesWritten += body.length;
    return 'written';
  };

  for (let chunk = 0; chunk < version.chunkCount; chunk++) {
    const first = chunk * version.chunkEntries;
    const count = chunkLength(chunk, version.blockCount, version.chunkEntries);
    const baseChunk = base && chunk < base.chunkCount ? await readChunkWithOrigin(catalog.reader, base, chunk) : null;
    const entries: BlockRef[] = new Array(count);
    const newBlocks: StoredBlock[] = [];
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        inFlight(async () => {
          const idx = first + i;
          const length = blockLength(idx, source.size, version.blockSize);
          let data = await readLimit(() => readAt(source.fh, idx * version.blockSize, length));
          if (data.length !== length)
            throw new Backy2Error(ExitCode.sourceMismatch, `Source ${sourceUrl} shrank during backup: block ${idx} returned ${data.length} of ${length} bytes`);
          stats.bytesRead += length;
          let outcome: BlockOutcome;
          let id: BlockId | null = null;
          if (codec.isZero(data)) outcome = 'sparse';
          else {
            ({ id, plaintext: data } = await codec.blockIdOf(data));
            const known = seenThisRun.get(id);
            if (known) outcome = (await known) === 'sparse' ? 'sparse' : 'dedup';
            else {
              const pending = storeBlock(data, id, newBlocks, baseChunk?.entries[i]?.id === id);
              seenThisRun.set(id, pending);
              if (seenThisRun.size > SEEN_LIMIT) seenThisRun.delete(seenThisRun.keys().next().value!);
              outcome = await pending;
            }
          }
          if (outcome === 'sparse') stats.blocksSparse++;
          else if (outcome === 'dedup') stats.blocksDedup++;
          else stats.blocksWritten++;
          entries[i] = { idx, id, length };
          progress.tick(++done, stats.bytesRead);
        }),
      ),
    );
    const unchanged = baseChunk !== null && baseChunk.entries.length === count && baseChunk.entries.every((e, i) => e.id === entries[i]!.id && e.length === entries[i]!.length);
    const packed = packChunk(entries);
    packedMap.push(packed);
    const event: EventOf<'BlocksRecorded'> = BlocksRecorded.parse({
      type: 'BlocksRecorded',
      v: 1,
      uid: version.uid,
      chunk,
      entries: unchanged ? null : packed.toString('base64'),
      sameAs: unchanged ? baseChunk.origin : null,
      newBlocks,
      at: new Date().toISOString(),
    });
    await catalog.record(event);
  }
  progress.stop();
  await writeManifest(blocks, codec, version, packedMap);
  return stats;
}

/**
 * The object already exists but the index did not list it as live (another host's fresh upload,
 * a block marked unreferenced, or one a cleanup is deleting). Touching it makes cleanup keep it;
 * if a cleanup is deleting it, wait until it is gone and upload it again.
 */
async function relyOnExisting(backend: Backend, stored: StoredBlock, body: Buffer): Promise<void> {
  const key = blockKey(stored.id);
  for (let attempt = 0; attempt < 60; attempt++) {
    const result = (await backend.catalog.touch([stored])).get(stored.id);
    if (result === 'live') return;
    if (result === 'created') {
      if ((await backend.blocks.head(key)) !== null) return;
      await backend.blocks.putIfAbsent(key, body);
      return;
    }
    await sleep(Math.min(5000, 250 * (attempt + 1)));
  }
  throw storageError(`Block ${stored.id} is being deleted by a cleanup that has not finished; run "backy2 cleanup" and retry the backup`);
}
