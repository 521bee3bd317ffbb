import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pLimit from 'p-limit';
import { blockKey } from '../../shared/blocks/codec.ts';
import { blockLength, chunkLength, DEFAULT_CHUNK_ENTRIES, packChunk } from '../../shared/domain/blockmap.ts';
import { Backy2Error, ExitCode, refused, usageError } from '../../shared/domain/errors.ts';
import type { TouchResult } from '../../shared/ports/metadata-store.ts';
import { scheduleTags } from '../../shared/domain/schedules.ts';
import { planHintedBlocks, sanityCheckSample, type Hint } from '../../shared/domain/hints.ts';
import type { BlockId, BlockRef, StoredBlock, Version, VersionStats } from '../../shared/domain/types.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import { chunkRecorded, readChunk, readChunkWithOrigin } from '../../shared/app/block-map.ts';
import { BatchedBlockLookup } from '../../shared/app/lookup.ts';
import { afterTouch, countBlock, decideByContent, hintedEntry, outcomeOf, outcomeOfRecorded } from '../../shared/domain/backup.ts';
import { writeManifest } from '../../shared/app/manifest.ts';
import { commitRecorded, recordChunk } from '../../shared/app/commit.ts';
import { resolveVersion } from '../../shared/app/resolve.ts';
import type { Backend } from '../backend/backend.ts';
import { openSource, readAt, deviceSize } from '../io/device.ts';
import { osFault } from '../../shared/adapters/faults.ts';
import type { Log } from '../ui/log.ts';
import { startProgress } from '../ui/progress.ts';
import { relyOnExisting, storeUnlessLive } from './store-block.ts';
import { forEachBounded } from './bounded.ts';

export interface BackupRequest {
  sourceUrl: string;
  name: string;
  snapshotName: string;
  tags: string[] | null;
  expire: string | null;
  baseUid: string | null;
  /** backup -c: continue this interrupted version instead of starting a new one. */
  resumeUid?: string | null;
  /** backup -r: only these regions changed (rbd diff --format=json). */
  hints?: Hint[] | null;
}

/**
 * backup: read the source in fixed blocks with several reads in flight; per block decide
 * sparse / dedup / upload; record the block map chunk by chunk; commit only when every
 * chunk is recorded. Memory is bounded by the number of blocks in flight, not the source size.
 */
export async function runBackup(backend: Backend, req: BackupRequest, log: Log, progressBar: boolean): Promise<{ version: Version; stats: VersionStats }> {
  const { catalog, blocks, config } = backend;
  const started = Date.now();
  const source = await openSource(req.sourceUrl);
  try {
    // Hints are checked before a version exists: hints for another device create nothing.
    const plan = req.hints ? planHintedBlocks(req.hints, source.size, config.blockSize) : null;
    // Space a killed earlier run left in temporary files is given back before this run needs it.
    const swept = await blocks.removeStaleTemporaries?.().catch((e: Error) => log.debug(`temporary files not swept: ${e.message}`));
    if (swept?.files) log.info(`Removed ${swept.files} stale temporary files (${swept.bytes} bytes) left by earlier runs`);
    const { version, base, recorded } = req.resumeUid
      ? await resumeVersion(backend, req.resumeUid, req.name, source.size, log)
      : await startVersion(backend, req, source.size);
    log.debug(`Version ${version.uid} is pending: ${version.blockCount} blocks in ${version.chunkCount} chunks`);
    try {
      const { stats, packedMap, last } = await backupBlocks(backend, version, base, source, req.sourceUrl, log, progressBar, { plan, recorded });
      const after = await deviceSize(source.path, source.fh);
      if (after.size !== source.size)
        throw new Backy2Error(
          ExitCode.sourceMismatch,
          `Source ${req.sourceUrl} changed size during backup (${source.size} → ${after.size} bytes); stop writers or back up a snapshot`,
        );
      const manifest = () => writeManifest(blocks, backend.codec, version, packedMap).then(() => log.debug('Manifest written'));
      const committed = await commitRecorded(catalog, version, last, manifest, stats, started);
      log.debug(`Version ${version.uid} committed`);
      return { version: committed, stats };
    } catch (e) {
      const failure = backend.explain?.(e) ?? e;
      await catalog.execute({ type: 'FailVersion', uid: version.uid, reason: (failure as Error).message }).catch(() => {});
      throw resumable(failure, version.uid, req);
    }
  } finally {
    await source.fh.close();
  }
}

/** Failures that may pass (a device, a disk, a service): the message says how to continue the version. */
const RESUMABLE: readonly number[] = [ExitCode.storage, ExitCode.device, ExitCode.cloud, ExitCode.systemLimit, ExitCode.locked];

function resumable(e: unknown, uid: string, req: BackupRequest): unknown {
  if (!(e instanceof Backy2Error) || !RESUMABLE.includes(e.exitCode)) return e;
  return new Backy2Error(
    e.exitCode,
    `${e.message}. Version ${uid} is not committed; once fixed, continue it with: backy2 backup -c ${uid} ${req.sourceUrl} ${req.name}`,
  );
}

interface StartedRun {
  version: Version;
  base: Version | undefined;
  /** Chunks of the block map already recorded (by an interrupted run): not read again. */
  recorded: Set<number>;
}

async function startVersion(backend: Backend, req: BackupRequest, sizeBytes: number): Promise<StartedRun> {
  const { catalog, config } = backend;
  const base = req.baseUid ? await resolveVersion(catalog.reader, req.baseUid) : undefined;
  const tags = req.tags ?? scheduleTags(req.name, await catalog.reader.listVersions(), new Date(), config.schedulers);
  // Durable before any dedup lookup (docs/DESIGN-NOTES.md, GC invariant step 1).
  const version = await catalog.execute({
    type: 'StartVersion',
    uid: randomUUID(),
    name: req.name,
    snapshotName: req.snapshotName,
    sizeBytes,
    blockSize: config.blockSize,
    chunkEntries: DEFAULT_CHUNK_ENTRIES,
    baseUid: base?.uid ?? null,
    tags,
    expire: req.expire,
    host: hostname(),
  });
  return { version, base, recorded: new Set() };
}

/**
 * backup -c: the version is pending again (durable before anything else, as a new backup's
 * start), then every block its recorded chunks reference is touched, because a cleanup may have
 * marked them while the version was failed. Blocks that are gone are stored again from the
 * source by the chunk's re-check (`repairRecordedChunk`).
 */
async function resumeVersion(backend: Backend, uid: string, name: string, sizeBytes: number, log: Log): Promise<StartedRun> {
  const { catalog, config } = backend;
  const interrupted = await resolveVersion(catalog.reader, uid);
  if (interrupted.name !== name) throw usageError(`Version ${interrupted.uid} is a backup of "${interrupted.name}", not "${name}"`);
  const version = await catalog.execute({ type: 'ResumeVersion', uid: interrupted.uid, sizeBytes, blockSize: config.blockSize, host: hostname() });
  // The base's blocks are reused without an index lookup only while the base is a valid, committed version.
  const candidate = version.baseUid ? await catalog.reader.getVersion(version.baseUid) : undefined;
  const base = candidate && candidate.status === 'committed' && candidate.valid ? candidate : undefined;
  if (version.baseUid && !base) log.warn(`Base version ${version.baseUid} is no longer valid; the rest of the backup is read in full`);
  const recorded = new Set<number>();
  for (let chunk = 0; chunk < version.chunkCount; chunk++) if (await catalog.reader.getChunk(version.uid, chunk)) recorded.add(chunk);
  log.info(`Continuing version ${version.uid}: ${recorded.size} of ${version.chunkCount} block map chunks were recorded and are not read again`);
  return { version, base, recorded };
}

async function backupBlocks(
  backend: Backend,
  version: Version,
  base: Version | undefined,
  source: Awaited<ReturnType<typeof openSource>>,
  sourceUrl: string,
  log: Log,
  progressBar: boolean,
  run: { plan: Uint8Array | null; recorded: Set<number> },
): Promise<{ stats: VersionStats; packedMap: Buffer[]; last: EventOf<'BlocksRecorded'> | null }> {
  const { catalog, codec, config } = backend;
  // The last chunk's record, when it goes with the commit (recordChunk).
  let last: EventOf<'BlocksRecorded'> | null = null;
  const stats: VersionStats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
  const readLimit = pLimit(config.simultaneousReads);
  const writeLimit = pLimit(config.simultaneousWrites);
  // Blocks in flight bound memory: each holds at most its plaintext and its encoded object.
  const inFlight = config.simultaneousReads + config.simultaneousWrites;
  const lookup = new BatchedBlockLookup(catalog.reader);
  // Blocks seen recently in this run (bounded: older repeats fall back to the index lookup).
  const seenThisRun = new Map<BlockId, Promise<unknown>>();
  const SEEN_LIMIT = 65_536;
  const packedMap: Buffer[] = [];
  const progress = startProgress('Backed up', version.blockCount, log, { bar: progressBar });
  let done = 0;

  const readBlock = async (idx: number, length: number, into: Buffer | null): Promise<Buffer> => {
    const data = await readLimit(() => readAt(source.fh, idx * version.blockSize, length, into)).catch((e: unknown) => {
      throw osFault(e, 'source', `${sourceUrl} (block ${idx})`) ?? e;
    });
    if (data.length !== length)
      throw new Backy2Error(ExitCode.sourceMismatch, `Source ${sourceUrl} shrank during backup: block ${idx} returned ${data.length} of ${length} bytes`);
    stats.bytesRead += length;
    return data;
  };
  // Hinted backups re-read a sample of the blocks outside the hints and compare them with the base.
  const sanitySample = new Set(run.plan ? sanityCheckSample(run.plan) : []);
  const remember = (id: BlockId, handled: Promise<unknown>) => {
    seenThisRun.set(id, handled);
    if (seenThisRun.size > SEEN_LIMIT) seenThisRun.delete(seenThisRun.keys().next().value!);
  };

  /** One block: read (unless the hints tell it), decided by shared/domain/backup.ts, stored, counted once. */
  const backupBlock = async (idx: number, baseEntry: BlockRef | undefined, newBlocks: StoredBlock[]): Promise<BlockRef> => {
    const length = blockLength(idx, source.size, version.blockSize);
    const hinted = run.plan ? hintedEntry(run.plan[idx]!, idx, length, base ? (baseEntry ?? null) : undefined) : null;
    if (hinted && !sanitySample.has(idx)) {
      countBlock(stats, outcomeOfRecorded(hinted));
      return hinted;
    }
    // The codec's shared block memory: read into, hashed and encoded in place, given back when done.
    const memory = codec.blockBuffer();
    try {
      return await readAndStore(idx, length, baseEntry, hinted, memory, newBlocks);
    } finally {
      codec.releaseBlockBuffer(memory);
    }
  };
  const readAndStore = async (
    idx: number,
    length: number,
    baseEntry: BlockRef | undefined,
    hinted: BlockRef | null,
    memory: Buffer | null,
    newBlocks: StoredBlock[],
  ): Promise<BlockRef> => {
    let data = await readBlock(idx, length, memory);
    const zero = codec.isZero(data);
    let id: BlockId | null = null;
    if (!zero) ({ id, plaintext: data } = await codec.blockIdOf(data));
    const action = decideByContent({ zero, seenThisRun: id !== null && seenThisRun.has(id), sameAsBase: baseEntry?.id === id });
    let stored: StoredBlock | null = null;
    if (action === 'same as earlier') await seenThisRun.get(id!);
    else if (action === 'reuse base') remember(id!, Promise.resolve());
    else if (action === 'ask the index') {
      const handled = storeUnlessLive(backend, lookup, writeLimit, data, id!);
      remember(id!, handled);
      stored = await handled;
      if (stored) newBlocks.push(stored);
    }
    if (hinted && hinted.id !== id)
      throw new Backy2Error(
        ExitCode.sourceMismatch,
        `Block ${idx} lies outside the hints but differs from ${base ? `base version ${base.uid}` : 'zeros'}: the hints are incomplete; back up without -r`,
      );
    countBlock(stats, outcomeOf(action, stored !== null), stored?.storedSize ?? 0);
    return { idx, id, length };
  };

  for (let chunk = 0; chunk < version.chunkCount; chunk++) {
    const first = chunk * version.chunkEntries;
    const count = chunkLength(chunk, version.blockCount, version.chunkEntries);
    if (run.recorded.has(chunk)) {
      const recordedEntries = await keepRecordedChunk(backend, version, chunk, (idx, length) => readBlock(idx, length, null), stats);
      packedMap.push(packChunk(recordedEntries));
      done += count;
      progress.tick(done, stats.bytesRead);
      continue;
    }
    const baseChunk = base && chunk < base.chunkCount ? await readChunkWithOrigin(catalog.reader, base, chunk) : null;
    const entries: BlockRef[] = new Array(count);
    const newBlocks: StoredBlock[] = [];
    // After a block fails no further block starts (a persistent fault is not retried for every
    // block of the chunk), and the version is failed only once no upload is still in flight.
    await forEachBounded(entries.keys(), inFlight, async (i) => {
      entries[i] = await backupBlock(first + i, baseChunk?.entries[i], newBlocks);
      progress.tick(++done, stats.bytesRead);
    });
    const unchanged =
      baseChunk !== null && baseChunk.entries.length === count && baseChunk.entries.every((e, i) => e.id === entries[i]!.id && e.length === entries[i]!.length);
    const packed = packChunk(entries);
    packedMap.push(packed);
    last = await recordChunk(catalog, version, chunkRecorded(version.uid, chunk, unchanged ? { sameAs: baseChunk.origin } : { entries: packed }, newBlocks));
  }
  progress.stop();
  log.debug(`Blocks read and stored: ${stats.blocksWritten} written, ${stats.blocksDedup} deduplicated, ${stats.blocksSparse} sparse`);
  return { stats, packedMap, last };
}

/**
 * A chunk an interrupted run recorded: its blocks are not read again, only made safe. Touching
 * them unmarks those a cleanup marked while the version was failed; a block that is gone (or is
 * being deleted) is read from the source at its first position and stored again, and must have
 * the recorded id, or the source is not the one the interrupted run read.
 */
async function keepRecordedChunk(
  backend: Backend,
  version: Version,
  chunk: number,
  readBlock: (idx: number, length: number) => Promise<Buffer>,
  stats: VersionStats,
): Promise<BlockRef[]> {
  const { catalog, codec } = backend;
  const entries = await readChunk(catalog.reader, version, chunk);
  const firstRef = new Map<BlockId, BlockRef>();
  for (const e of entries) if (e.id !== null && !firstRef.has(e.id)) firstRef.set(e.id, e);
  const storedAgain = new Map<BlockId, number>();
  const ids = [...firstRef.keys()];
  for (let at = 0; at < ids.length; at += 1000) {
    const batch = ids.slice(at, at + 1000);
    const index = await catalog.reader.getBlocks(batch);
    const invalid = batch.find((id) => index.get(id)?.valid === false);
    if (invalid) throw refused(`Block ${invalid} of interrupted version ${version.uid} failed a scrub; start a new backup instead of continuing this one`);
    const indexed = batch.filter((id) => index.has(id)).map((id) => ({ id, storedSize: index.get(id)!.storedSize, checksum: index.get(id)!.checksum }));
    const touched = indexed.length ? await catalog.touch(indexed) : new Map<BlockId, TouchResult>();
    for (const id of batch) {
      const next = afterTouch(touched.get(id));
      if (next === 'rely') continue;
      if (next === 'recheck object' && (await backend.blocks.head(blockKey(id))) !== null) continue;
      const ref = firstRef.get(id)!;
      const data = await readBlock(ref.idx, ref.length);
      const again = codec.isZero(data) ? null : (await codec.blockIdOf(data)).id;
      if (again !== id)
        throw new Backy2Error(
          ExitCode.sourceMismatch,
          `Block ${ref.idx} of the source differs from what the interrupted backup recorded; start a new backup instead of -c`,
        );
      const { stored: body, checksum } = await codec.encodeForUpload(data, id, true);
      const ours = { id, storedSize: body.length, checksum };
      if (await backend.blocks.putIfAbsent(blockKey(id), body)) await relyOnExisting(backend, ours, body, undefined, true);
      else await relyOnExisting(backend, ours, body, undefined);
      storedAgain.set(id, body.length);
    }
  }
  // Counted once: a block stored again is written (at its first position), every other one reused.
  for (const e of entries) {
    const again = e.id !== null && firstRef.get(e.id) === e ? storedAgain.get(e.id) : undefined;
    countBlock(stats, again === undefined ? outcomeOfRecorded(e) : 'written', again ?? 0);
  }
  return entries;
}
