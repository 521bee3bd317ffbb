import { mkdtemp, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { readChunk } from '../../shared/app/block-map.ts';
import { scrubVerdicts } from '../../shared/app/scrub.ts';
import { storedBlockVerifier } from '../pipeline/codec-thread-reads.ts';
import { blockLength, chunkOf } from '../../shared/domain/blockmap.ts';
import type { BlockRef, Version } from '../../shared/domain/types.ts';
import type { Backend } from '../backend/backend.ts';
import { writeAt } from '../io/device.ts';
import { processAlive } from '../../shared/adapters/local/processes.ts';
import type { Log } from '../ui/log.ts';
import type { BlockCache, PinnedBlock } from './block-cache.ts';
import { STATE_HOLE, STATE_ZERO, type Extent } from './protocol.ts';

/** A block that is missing or fails verification: the client gets EIO, the repository a scrub finding. */
export class BlockUnreadable extends Error {}
/** Storage could not be read (network, permissions): EIO, but no finding — the block may be fine. */
export class StorageUnavailable extends Error {}

/**
 * Verified block plaintexts for every export of one server: fetched on demand with a bounded
 * number of reads in flight, decrypted and checked against their id, cached (BlockCache).
 * A block that fails verification is never served; it is recorded as a scrub would record it.
 */
export class RepositoryBlocks {
  private readonly fetches: ReturnType<typeof pLimit>;
  private readonly reported = new Set<string>();
  /** Block objects read from storage (for tests and the benchmark: a warm cache reads none). */
  fetched = 0;

  private readonly backend: Backend;
  readonly cache: BlockCache;
  private readonly log: Log;
  /** As a scrub reads: on a codec thread where the store locates the block, else (or once more, on a finding) through the store. */
  private readonly verify: ReturnType<typeof storedBlockVerifier>;
  constructor(backend: Backend, cache: BlockCache, log: Log) {
    this.backend = backend;
    this.cache = cache;
    this.log = log;
    this.fetches = pLimit(Math.max(2, backend.config.simultaneousReads * 2));
    this.verify = storedBlockVerifier(backend, log);
  }

  /** The verified block, pinned in the cache until released. */
  block(version: Version, ref: BlockRef): Promise<PinnedBlock> {
    return this.cache.get(ref.id!, (into) => this.fetches(() => this.fetchVerified(version, ref, into)));
  }

  /** Starts fetching a block into the cache unless it is there already; failures surface on a real read. */
  prefetch(version: Version, ref: BlockRef): void {
    if (ref.id === null || this.cache.has(ref.id)) return;
    this.block(version, ref).then(
      (pinned) => pinned.release(),
      () => {},
    );
  }

  /** Read and verified in `into` (the codec's shared block memory) when given. */
  private async fetchVerified(version: Version, ref: BlockRef, into: Buffer | null): Promise<Buffer> {
    this.fetched++;
    let result: { failure: string | null; plaintext: Buffer | null };
    try {
      result = await this.verify(ref, undefined, into);
    } catch (e) {
      throw new StorageUnavailable(`Cannot read block ${ref.idx} of ${version.uid}: ${(e as Error).message}`);
    }
    if (result.failure !== null) {
      await this.report(version, ref, result.failure);
      throw new BlockUnreadable(`Block ${ref.idx} of ${version.uid} failed verification: ${result.failure}`);
    }
    return result.plaintext!;
  }

  /** As `scrub` reports it: the log line, then the block and every committed version using it invalid. */
  private async report(version: Version, ref: BlockRef, failure: string): Promise<void> {
    this.log.error(`${failure}: Block(id=${ref.id}, version_uid=${version.uid}, idx=${ref.idx}, size=${ref.length})`);
    if (this.reported.has(ref.id!)) return;
    this.reported.add(ref.id!);
    try {
      const reader = this.backend.catalog.reader;
      const current = (await reader.getVersion(version.uid)) ?? version;
      for (const cmd of await scrubVerdicts(reader, current, [], [{ id: ref.id!, reason: failure }], false)) {
        const after = await this.backend.catalog.execute(cmd);
        this.log.info(`Marked version invalid (UID ${after.uid})`);
      }
      this.log.info(`Marked block invalid (id ${ref.id})`);
    } catch (e) {
      this.log.error(`Could not record the bad block ${ref.id}: ${(e as Error).message}`);
    }
  }
}

const CHUNKS_CACHED = 64;
const RECENT_ENDS = 16;

/**
 * One served version: its block map (chunks read on demand, a few cached) and sequential-access
 * detection shared by all its connections, so read-ahead works for clients that spread a
 * sequential copy over several connections (nbdcopy does).
 */
export class VersionImage {
  private readonly chunks = new Map<number, Promise<BlockRef[]>>();
  private readonly recentEnds: number[] = [];

  readonly version: Version;
  private readonly backend: Backend;
  readonly blocks: RepositoryBlocks;
  private readonly readAheadBlocks: number;
  constructor(version: Version, backend: Backend, blocks: RepositoryBlocks, readAheadBlocks: number) {
    this.version = version;
    this.backend = backend;
    this.blocks = blocks;
    this.readAheadBlocks = readAheadBlocks;
  }

  get size(): number {
    return this.version.sizeBytes;
  }

  get blockSize(): number {
    return this.version.blockSize;
  }

  async ref(idx: number): Promise<BlockRef> {
    const chunk = chunkOf(idx, this.version.chunkEntries);
    let entries = this.chunks.get(chunk);
    if (entries) {
      this.chunks.delete(chunk);
    } else {
      entries = readChunk(this.backend.catalog.reader, this.version, chunk);
      entries.catch(() => this.chunks.delete(chunk));
    }
    this.chunks.set(chunk, entries);
    if (this.chunks.size > CHUNKS_CACHED) this.chunks.delete(this.chunks.keys().next().value!);
    return (await entries)[idx - chunk * this.version.chunkEntries]!;
  }

  /** The block's verified plaintext (pinned until released), or null for a sparse block. */
  async blockData(idx: number): Promise<PinnedBlock | null> {
    const ref = await this.ref(idx);
    return ref.id === null ? null : this.blocks.block(this.version, ref);
  }

  /** Called for every read: a read that starts where a recent one ended fetches the next blocks ahead. */
  noteRead(offset: number, length: number): void {
    const sequential = this.recentEnds.includes(offset);
    this.recentEnds.push(offset + length);
    if (this.recentEnds.length > RECENT_ENDS) this.recentEnds.shift();
    if (!sequential || this.readAheadBlocks <= 0) return;
    const next = Math.floor((offset + length - 1) / this.blockSize) + 1;
    for (let idx = next; idx < Math.min(next + this.readAheadBlocks, this.version.blockCount); idx++) {
      this.ref(idx).then(
        (ref) => this.blocks.prefetch(this.version, ref),
        () => {},
      );
    }
  }
}

/** A piece of a read: bytes, or null for zeros (a sparse block or a zeroed one). */
export interface ReadPiece {
  offset: number;
  length: number;
  data: Buffer | null;
}

/** The pieces of a read; their bytes stay valid until release() (after the reply is sent). */
export interface ReadResult {
  pieces: ReadPiece[];
  release(): void;
}

/** Splits [offset, offset+length) at block boundaries. */
export function* blockSpans(offset: number, length: number, blockSize: number): Generator<{ idx: number; within: number; length: number; offset: number }> {
  let at = offset;
  const end = offset + length;
  while (at < end) {
    const idx = Math.floor(at / blockSize);
    const within = at - idx * blockSize;
    const n = Math.min(blockSize - within, end - at);
    yield { idx, within, length: n, offset: at };
    at += n;
  }
}

type CowState = 'data' | 'zero';

const COW_PREFIX = 'backy2-nbd-cow-';

/**
 * Removes the copy-on-write directories under `parent` whose server is gone (killed: a clean
 * stop removes its own). Their writes were never committed (the copy-on-write version stays
 * pending or failed, for cleanup). Directories of running servers are left alone.
 */
export async function removeStaleOverlays(parent: string): Promise<{ dirs: number; bytes: number }> {
  const removed = { dirs: 0, bytes: 0 };
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(new RegExp(`^${COW_PREFIX}(\\d+)-`).exec(name)?.[1] ?? Number.NaN);
    if (!Number.isInteger(pid) || processAlive(pid)) continue;
    const dir = join(parent, name);
    const files = await readdir(dir).catch(() => [] as string[]);
    for (const f of files) removed.bytes += (await stat(join(dir, f)).catch(() => ({ blocks: 0 }))).blocks * 512;
    await rm(dir, { recursive: true, force: true });
    removed.dirs++;
  }
  return removed;
}

/**
 * Copy-on-write overlay of one connection: a sparse local file the size of the version, holding
 * every changed block whole at its own offset, and which blocks changed (or became all zeros).
 * The version itself is never written. The first change to a block copies the original block
 * (verified) in; concurrent changes to one block are serialised.
 */
export class CowOverlay {
  private readonly state = new Map<number, CowState>();
  private readonly locks = new Map<number, Promise<void>>();

  private readonly dir: string;
  private readonly fh: FileHandle;
  readonly path: string;
  private readonly blockSize: number;
  private readonly size: number;
  private constructor(dir: string, fh: FileHandle, path: string, blockSize: number, size: number) {
    this.dir = dir;
    this.fh = fh;
    this.path = path;
    this.blockSize = blockSize;
    this.size = size;
  }

  static async create(parent: string, size: number, blockSize: number): Promise<CowOverlay> {
    // The server's pid in the name: a later server can tell an overlay whose server was killed.
    const dir = await mkdtemp(join(parent, `${COW_PREFIX}${process.pid}-`));
    const path = join(dir, 'cow.img');
    const fh = await open(path, 'w+', 0o600);
    await fh.truncate(size);
    return new CowOverlay(dir, fh, path, blockSize, size);
  }

  get changedBlocks(): number[] {
    return [...this.state.keys()].sort((a, b) => a - b);
  }

  stateOf(idx: number): CowState | undefined {
    return this.state.get(idx);
  }

  private lengthOf(idx: number): number {
    return blockLength(idx, this.size, this.blockSize);
  }

  private async locked<T>(idx: number, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(idx) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = before.then(() => mine);
    this.locks.set(idx, chained);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(idx) === chained) this.locks.delete(idx);
    }
  }

  /** Writes `data` (null: zeros) at `within` of block idx; `original` gives the block's current bytes. */
  async change(idx: number, within: number, length: number, data: Buffer | null, original: () => Promise<PinnedBlock | null>): Promise<void> {
    await this.locked(idx, async () => {
      const full = this.lengthOf(idx);
      const whole = within === 0 && length === full;
      if (whole && data === null) {
        this.state.set(idx, 'zero');
        return;
      }
      const position = idx * this.blockSize;
      if (this.state.get(idx) !== 'data' && !whole) {
        // First change of part of a block: bring in the rest of it.
        const base = this.state.get(idx) === 'zero' ? null : await original();
        try {
          await writeAt(this.fh, base?.data ?? Buffer.alloc(full), full, position);
        } finally {
          base?.release();
        }
      }
      await writeAt(this.fh, data ?? Buffer.alloc(length), length, position + within);
      this.state.set(idx, 'data');
    });
  }

  /** Bytes of a changed block's range; null when it reads as zeros. */
  async read(idx: number, within: number, length: number): Promise<Buffer | null> {
    if (this.state.get(idx) === 'zero') return null;
    const buf = Buffer.alloc(length);
    const { bytesRead } = await this.fh.read(buf, 0, length, idx * this.blockSize + within);
    if (bytesRead !== length) throw new StorageUnavailable(`Copy-on-write file ${this.path}: short read at block ${idx}`);
    return buf;
  }

  /** A changed block whole, or null when it is all zeros (as changed). */
  async block(idx: number): Promise<Buffer | null> {
    return this.locked(idx, () => this.read(idx, 0, this.lengthOf(idx)));
  }

  async sync(): Promise<void> {
    await this.fh.sync();
  }

  async destroy(): Promise<void> {
    await this.fh.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}

export interface SessionOptions {
  readOnly: boolean;
  /** Whether the version's lease is live (pins.ts): without it no block is served. */
  isPinned: () => boolean;
  /** Called once, before the first change is accepted (creates the copy-on-write version). */
  beforeFirstWrite?: () => Promise<void>;
  cowDir: string;
}

/**
 * What one connection sees of a version: reads from the repository (through the cache) or,
 * for blocks it changed, from its copy-on-write overlay.
 */
export class ExportSession {
  private cow: CowOverlay | null = null;
  private starting: Promise<CowOverlay> | null = null;

  readonly image: VersionImage;
  private readonly opts: SessionOptions;
  constructor(image: VersionImage, opts: SessionOptions) {
    this.image = image;
    this.opts = opts;
  }

  get overlay(): CowOverlay | null {
    return this.cow;
  }

  async read(offset: number, length: number): Promise<ReadResult> {
    if (!this.opts.isPinned()) throw new StorageUnavailable(`The lease on ${this.image.version.uid} could not be renewed; not serving its blocks`);
    this.image.noteRead(offset, length);
    const held: PinnedBlock[] = [];
    const release = () => {
      for (const p of held) p.release();
    };
    const settled = await Promise.allSettled(
      [...blockSpans(offset, length, this.image.blockSize)].map(async (s): Promise<ReadPiece> => {
        if (this.cow?.stateOf(s.idx)) return { offset: s.offset, length: s.length, data: await this.cow.read(s.idx, s.within, s.length) };
        const block = await this.image.blockData(s.idx);
        if (block) held.push(block);
        return { offset: s.offset, length: s.length, data: block && block.data.subarray(s.within, s.within + s.length) };
      }),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) {
      release();
      throw failed.reason;
    }
    return { pieces: settled.map((r) => (r as PromiseFulfilledResult<ReadPiece>).value), release };
  }

  /** WRITE (data) or WRITE_ZEROES / TRIM (null: the range reads as zeros afterwards). */
  async change(offset: number, length: number, data: Buffer | null): Promise<void> {
    if (this.opts.readOnly) throw new Error('read-only export');
    if (!this.opts.isPinned()) throw new StorageUnavailable(`The lease on ${this.image.version.uid} could not be renewed; not serving its blocks`);
    const cow = await this.overlayForWrite();
    await Promise.all(
      [...blockSpans(offset, length, this.image.blockSize)].map((s) =>
        cow.change(s.idx, s.within, s.length, data && data.subarray(s.offset - offset, s.offset - offset + s.length), () => this.image.blockData(s.idx)),
      ),
    );
  }

  private overlayForWrite(): Promise<CowOverlay> {
    this.starting ??= (async () => {
      await this.opts.beforeFirstWrite?.();
      this.cow = await CowOverlay.create(this.opts.cowDir, this.image.size, this.image.blockSize);
      return this.cow;
    })();
    this.starting.catch(() => (this.starting = null));
    return this.starting;
  }

  async flush(): Promise<void> {
    await this.cow?.sync();
  }

  /** base:allocation extents from `offset`, block by block, up to `length` (at most `maxBlocks` blocks). */
  async extents(offset: number, length: number, maxBlocks = 65_536): Promise<Extent[]> {
    const out: Extent[] = [];
    let blocks = 0;
    for (const s of blockSpans(offset, length, this.image.blockSize)) {
      if (blocks++ >= maxBlocks) break;
      const changed = this.cow?.stateOf(s.idx);
      const zero = changed ? changed === 'zero' : (await this.image.ref(s.idx)).id === null;
      out.push({ length: s.length, flags: zero ? STATE_HOLE | STATE_ZERO : 0 });
    }
    return out;
  }
}
