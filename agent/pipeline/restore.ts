import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import pLimit from 'p-limit';
import { blockKey } from '../../shared/blocks/codec.ts';
import { BlockFormatError, WrongKeyError } from '../../shared/blocks/codec.ts';
import { Backy2Error, ExitCode, integrityError, refused, storageError, usageError } from '../../shared/domain/errors.ts';
import type { BlockRef, Version } from '../../shared/domain/types.ts';
import type { HttpLocation } from '../../shared/ports/block-store.ts';
import { readBlockMap } from '../../shared/app/block-map.ts';
import { resolveVersion } from '../../shared/app/resolve.ts';
import type { Backend } from '../backend/backend.ts';
import { deviceSize, parseFileUrl, pathExists, writeAt, Writeback } from '../io/device.ts';
import { DirectProbe, DirectWriter } from '../io/direct.ts';
import { forEachBounded } from './bounded.ts';
import { CodecThreadReads } from './codec-thread-reads.ts';
import { osFault } from '../../shared/adapters/faults.ts';
import type { Log } from '../ui/log.ts';
import { startProgress } from '../ui/progress.ts';

export interface RestoreRequest {
  uid: string;
  targetUrl: string;
  /** backy2 -s: do not write sparse blocks (the target already reads zeros there). */
  sparse: boolean;
  force: boolean;
  /** backy2 -c: resume an interrupted restore into the same target from this block. */
  continueFrom: number | null;
}

/**
 * restore: every block is decrypted and its id recomputed before it is written. A new or
 * replaced regular file is written under a temporary name and renamed only when complete, so
 * a failed restore never leaves a target that looks complete. Block devices (and -c resumes)
 * are written in place; on failure the last contiguous block is reported for `-c`.
 */
export async function runRestore(backend: Backend, req: RestoreRequest, log: Log, progressBar: boolean): Promise<Version> {
  const version = await resolveVersion(backend.catalog.reader, req.uid);
  if (version.status !== 'committed')
    throw refused(`Version ${version.uid} is ${version.status === 'pending' ? 'a backup in progress' : version.status}; it cannot be restored`);
  if (!version.valid) log.warn(`Version ${version.uid} is marked invalid; restoring anyway, every block is verified`);
  const path = parseFileUrl(req.targetUrl, 'target');
  const exists = await pathExists(path);
  const partialPath = join(dirname(path), `.${basename(path)}.backy2-partial`);
  // A restore into a new file that failed on a storage read keeps what it wrote here, for -c.
  const resumePartial = req.continueFrom !== null && !exists && (await pathExists(partialPath));
  if (req.continueFrom !== null && !exists && !resumePartial)
    throw usageError(`Target ${req.targetUrl} does not exist (nor a partial restore of it); -c resumes an earlier restore`);
  if (exists && !req.force && req.continueFrom === null) throw usageError(`Target already exists: ${req.targetUrl}. You must force the restore (--force).`);

  log.debug(`Version ${version.uid} read: ${version.blockCount} blocks in ${version.chunkCount} chunks`);
  // Before the preflight takes block memory: that memory is then aligned for O_DIRECT writes.
  const probe = await DirectProbe.open(path, exists && (await stat(path)).isBlockDevice());
  if (probe) backend.codec.alignBlockBuffers((memory) => probe.alignedOffset(memory));
  try {
    return await restoreInto(backend, version, req, { path, exists, partialPath, resumePartial, direct: probe !== null }, log, progressBar);
  } finally {
    await probe?.close();
  }
}

async function restoreInto(
  backend: Backend,
  version: Version,
  req: RestoreRequest,
  where: { path: string; exists: boolean; partialPath: string; resumePartial: boolean; direct: boolean },
  log: Log,
  progressBar: boolean,
): Promise<Version> {
  const { path, exists, partialPath, resumePartial } = where;
  const checked = await preflight(backend, version, log);
  log.debug('Preflight: the first data block was read and verified');

  let target: FileHandle;
  let inPlace = false;
  let writePath = path;
  if (exists) {
    const probe = await open(path, 'r');
    const { size, isBlockDevice } = await deviceSize(path, probe).finally(() => probe.close());
    if (isBlockDevice && size < version.sizeBytes) throw usageError(`Target ${req.targetUrl} is too small: ${size} bytes, version needs ${version.sizeBytes}`);
    inPlace = isBlockDevice || req.continueFrom !== null;
  }
  if (!inPlace) writePath = partialPath;
  // A target that cannot be opened (no such directory, no permission, …) is the user's to fix: exit 1, one line.
  target = await open(writePath, inPlace || resumePartial ? 'r+' : 'w', 0o600).catch((e: Error) => {
    throw osFault(e, 'target', req.targetUrl) ?? usageError(`Cannot open restore target ${req.targetUrl}: ${e.message}`);
  });
  // A new file (or the partial one) reads zeros wherever nothing was written: sparse blocks are skipped.
  const fresh = !inPlace;
  let lastContiguous = (req.continueFrom ?? 0) - 1;
  let direct: DirectWriter | null = null;
  try {
    if (fresh) await target.truncate(version.sizeBytes);
    direct = where.direct ? await DirectWriter.open(writePath) : null;
    log.debug(direct ? 'Blocks are written with O_DIRECT where aligned' : 'Blocks are written through the page cache');
    await writeBlocks(backend, version, { target, direct }, { fresh, sparse: req.sparse, from: req.continueFrom ?? 0, checked }, log, progressBar, (idx) => {
      lastContiguous = idx;
    });
    log.debug('Every block is written');
    await direct?.close();
    direct = null;
    // One inode: this also flushes what was written directly (its extents, the device's cache).
    await target.sync();
    await target.close();
    if (!inPlace) await rename(writePath, path);
    log.debug('Target synced and in place');
    return version;
  } catch (e) {
    await direct?.close().catch(() => {});
    // A resume point is promised only for blocks that are on disk: sync what was written.
    const synced = await target.sync().then(
      () => true,
      () => false,
    );
    await target.close().catch(() => {});
    const { cause, fromTarget } = restoreFault(backend, e, req.targetUrl);
    let outcome: string;
    if (!inPlace && e instanceof BlockReadFailed && lastContiguous >= 0 && synced) {
      // Storage may come back (a network, a mount): keep what was restored so -c need not start over.
      outcome = `${req.targetUrl} was not created. Blocks up to ${lastContiguous} are kept in ${writePath}: resume with -c ${lastContiguous + 1}`;
    } else if (!inPlace) {
      // A full or failing target: the partial file goes (it holds the space the user must free).
      await rm(writePath, { force: true });
      outcome = `nothing was written to ${req.targetUrl}`;
    } else if (synced && !fromTarget) {
      outcome = `${req.targetUrl} is INCOMPLETE. Blocks up to ${lastContiguous} are restored: resume with -c ${lastContiguous + 1}`;
    } else {
      // The device failed a write or a sync: any block not yet on disk may be lost, whatever was acknowledged.
      outcome = `${req.targetUrl} is INCOMPLETE and blocks written before the error may not have reached it: once it is fixed, restore again from the start (-f, or -c 0)`;
    }
    // One line: what failed, then what became of the target.
    if (!(cause instanceof Backy2Error)) {
      log.error(`Restore failed; ${outcome}`);
      throw cause;
    }
    throw new Backy2Error(cause.exitCode, `${cause.message}. Restore failed; ${outcome}`);
  }
}

/** An error of the target's own writes (ENOSPC, EIO, EROFS: exit 10), of storage, or else as it came. */
function restoreFault(backend: Backend, e: unknown, targetUrl: string): { cause: unknown; fromTarget: boolean } {
  if (e instanceof Backy2Error) return { cause: e, fromTarget: false };
  const explained = backend.explain?.(e) ?? e;
  if (explained instanceof Backy2Error) return { cause: explained, fromTarget: false };
  const target = osFault(e, 'target', targetUrl);
  return target ? { cause: target, fromTarget: true } : { cause: e, fromTarget: false };
}

/** Reading a stored block failed (not: it is missing or corrupt); this may pass, so a partial restore is kept. */
class BlockReadFailed extends Backy2Error {
  constructor(message: string, exitCode: ExitCode = ExitCode.storage) {
    super(exitCode, message);
  }
}

const PREFLIGHT_CHUNKS_KEPT = 4;

/** A stored object read ahead into the codec's shared memory, not yet verified. */
interface ReadAhead {
  memory: Buffer | null;
  stored: Promise<Buffer>;
}

/**
 * What the preflight read: the block map's first chunks (up to the first data block), that block
 * verified, and the stored objects of the next data blocks, read meanwhile (verified when their
 * turn comes in the pipeline).
 */
interface Preflight {
  chunks: BlockRef[][];
  first: { ref: BlockRef; data: Buffer } | null;
  ahead: Map<number, ReadAhead>;
}

/**
 * Proves the key and storage work on one data block before the target is touched. While it
 * does, the next data blocks of its chunk are read (the other read slots), so the pipeline does
 * not start from nothing. What it read is handed to the pipeline, not read again.
 */
async function preflight(backend: Backend, version: Version, log: Log): Promise<Preflight> {
  const chunks: BlockRef[][] = [];
  for await (const entries of readBlockMap(backend.catalog.reader, version)) {
    // A long sparse start is read again later rather than held (memory stays bounded).
    if (chunks.length < PREFLIGHT_CHUNKS_KEPT) chunks.push(entries);
    const data = entries.filter((e) => e.id !== null);
    const first = data[0];
    if (!first) continue;
    const ahead = new Map<number, ReadAhead>();
    for (const e of data.slice(1, backend.config.simultaneousReads)) {
      const memory = backend.codec.blockBuffer();
      const stored = readStored(backend, e, memory);
      stored.catch(() => {}); // seen by the pipeline when it takes this block
      ahead.set(e.idx, { memory, stored });
    }
    try {
      return { chunks, first: { ref: first, data: await fetchBlock(backend, first, log) }, ahead };
    } catch (e) {
      await dropReadAhead(backend, ahead);
      throw e;
    }
  }
  return { chunks, first: null, ahead: new Map() };
}

/** Waits for reads ahead nobody took (a failure, or blocks before -c) and gives their memory back. */
async function dropReadAhead(backend: Backend, ahead: Map<number, ReadAhead>): Promise<void> {
  for (const { memory, stored } of ahead.values()) {
    await stored.catch(() => {});
    backend.codec.releaseBlockBuffer(memory);
  }
  ahead.clear();
}

async function fetchBlock(backend: Backend, ref: BlockRef, log: Log): Promise<Buffer> {
  return verifyOrReadAgain(backend, ref, verify(backend, ref, await readStored(backend, ref)), () => readStored(backend, ref), log);
}

/** The stored object, read into `into` (the codec's shared block memory) when given. */
async function readStored(backend: Backend, ref: BlockRef, into: Buffer | null = null): Promise<Buffer> {
  const key = blockKey(ref.id!);
  // Every block read is verified here (and read again once on a mismatch): S3's response checksum is not needed on top.
  const stored = await (into ? backend.blocks.getInto(key, into, { verifiedByCaller: true }) : backend.blocks.get(key)).catch((e: Error) => {
    // The backend's reading of the failure (S3: throttled → 9, HTTP 5xx after N attempts → 6), kept resumable.
    const explained = backend.explain?.(e);
    const why = explained instanceof Backy2Error ? explained : null;
    throw new BlockReadFailed(`Cannot read block ${ref.id} (block ${ref.idx}): ${(why ?? e).message}`, why?.exitCode);
  });
  if (stored === null) throw storageError(`Block ${ref.id} (block ${ref.idx}) is missing from storage`);
  return stored;
}

/** Decrypts and decompresses the stored object and recomputes its id (on a codec worker). */
const verify = (backend: Backend, ref: BlockRef, stored: Buffer): Promise<Buffer> => verified(ref, backend.codec.decode(stored, ref.id!, true));

/** A decode's plaintext, checked against the block map; its failures as the restore reports them. */
async function verified(ref: BlockRef, decoding: Promise<Buffer>): Promise<Buffer> {
  try {
    const plain = await decoding;
    if (plain.length !== ref.length) throw integrityError(`Block ${ref.id} (block ${ref.idx}) has ${plain.length} bytes, expected ${ref.length}`);
    return plain;
  } catch (e) {
    if (e instanceof WrongKeyError) throw new Backy2Error(ExitCode.integrity, `Wrong encryption key: ${e.message}`);
    if (e instanceof BlockFormatError) throw new DamagedBlock(`Block ${ref.idx} failed verification: ${e.message}`);
    throw e;
  }
}

/** A stored object that failed verification (exit 7, as any integrity error). */
class DamagedBlock extends Backy2Error {
  constructor(message: string) {
    super(ExitCode.integrity, message);
  }
}

/**
 * A verification (`attempt`); an object that fails it is read once more and verified again before
 * it counts as damaged. A body corrupted on its way reads right the second time (a restore's S3
 * reads skip the SDK's response checksum: see BlockStore.getInto); a damaged object fails again,
 * and exit 7 it is.
 */
async function verifyOrReadAgain<T extends Buffer | null>(
  backend: Backend,
  ref: BlockRef,
  attempt: Promise<T>,
  readAgain: () => Promise<Buffer>,
  log: Log,
): Promise<T | Buffer> {
  try {
    return await attempt;
  } catch (e) {
    if (!(e instanceof DamagedBlock)) throw e;
    log.warn(`${e.message}; reading it again`);
    return verify(backend, ref, await readAgain());
  }
}

/** Background writeback of the target every this many bytes (see Writeback). */
const WRITEBACK_BYTES = 64 * 1024 * 1024;

/**
 * The block pipeline: reads (at most `simultaneous_reads` at once), verification on the codec's
 * worker threads and positional writes (at most `simultaneous_writes`) overlap, with
 * `restoreDepth` blocks in flight. Sparse blocks are not written where the target already reads
 * zeros (a new file, or -s). On a failure no new block starts and the blocks in flight finish
 * before the error is thrown, so the contiguous prefix reported for -c is really on the target.
 */
async function writeBlocks(
  backend: Backend,
  version: Version,
  { target, direct }: { target: FileHandle; direct: DirectWriter | null },
  opts: { fresh: boolean; sparse: boolean; from: number; checked: Preflight },
  log: Log,
  progressBar: boolean,
  onContiguous: (idx: number) => void,
): Promise<void> {
  const { config } = backend;
  const reads = pLimit(config.simultaneousReads);
  const writes = pLimit(config.simultaneousWrites);
  const zeros = Buffer.alloc(version.blockSize);
  const total = version.blockCount - opts.from;
  const progress = startProgress('Restored', total, log, { bar: progressBar, totalBytes: version.sizeBytes - opts.from * version.blockSize });
  const writeback = new Writeback(target, WRITEBACK_BYTES);
  const finished = new Set<number>();
  let contiguous = opts.from - 1;
  let done = 0;
  let bytes = 0;
  const write = (data: Buffer, length: number, position: number) =>
    writes(async () => {
      const written = direct && backend.codec.isAlignedBlockBuffer(data) && (await direct.write(data, length, position));
      if (!written) await writeAt(target, data, length, position);
      writeback.wrote(length);
    });
  let checked = opts.checked.first;
  const codecThreads = new CodecThreadReads(backend.blocks, log);
  const fetchVerified = (e: BlockRef) => (location: HttpLocation, into: Buffer) => verified(e, backend.codec.fetchAndDecode(location, e.id!, into));
  const restoreBlock = async (e: BlockRef): Promise<void> => {
    const position = e.idx * version.blockSize;
    if (e.id === null) {
      if (!opts.fresh && !opts.sparse) await write(zeros, e.length, position);
    } else if (checked?.ref.idx === e.idx) {
      // The preflight's block, verified already.
      const { data } = checked;
      checked = null;
      await write(data, data.length, position);
    } else {
      // One piece of shared memory holds the stored object, then (written over it) the plaintext.
      const readAhead = opts.checked.ahead.get(e.idx);
      opts.checked.ahead.delete(e.idx);
      const memory = readAhead ? readAhead.memory : backend.codec.blockBuffer();
      const readHere = () => reads(() => readStored(backend, e, memory));
      try {
        const fetched = readAhead
          ? null
          : await verifyOrReadAgain(
              backend,
              e,
              reads(() => codecThreads.read(e, memory, fetchVerified(e))),
              readHere,
              log,
            );
        const data = fetched ?? (await verifyOrReadAgain(backend, e, verify(backend, e, await (readAhead ? readAhead.stored : readHere())), readHere, log));
        await write(data, data.length, position);
      } finally {
        backend.codec.releaseBlockBuffer(memory);
      }
    }
    bytes += e.length;
    finished.add(e.idx);
    while (finished.delete(contiguous + 1)) contiguous++;
    onContiguous(contiguous);
    progress.tick(++done, bytes);
  };
  try {
    await forEachBounded(entriesFrom(backend, version, opts.from, opts.checked.chunks), restoreDepth(config), restoreBlock);
  } finally {
    await dropReadAhead(backend, opts.checked.ahead);
  }
  await writeback.drain();
  progress.stop();
}

/** Blocks in flight in a restore: each holds its stored object, then its plaintext. */
export const restoreDepth = (config: { simultaneousReads: number; simultaneousWrites: number }) => config.simultaneousReads + config.simultaneousWrites;

/** The block map from block `from` on; the chunks the preflight read are not read again. */
async function* entriesFrom(backend: Backend, version: Version, from: number, read: BlockRef[][]): AsyncIterable<BlockRef> {
  for (const entries of read) for (const e of entries) if (e.idx >= from) yield e;
  for await (const entries of readBlockMap(backend.catalog.reader, version, read.length)) for (const e of entries) if (e.idx >= from) yield e;
}
