import { holdsBlocks } from '../domain/cleanup.ts';
import { refused } from '../domain/errors.ts';
import {
  addBlockUsage,
  diffStatus,
  emptyUsage,
  lastBlockOutcome,
  selectStats,
  statsRowOf,
  type DiffStatus,
  type LastBlockOutcome,
  type StatsRow,
  type Usage,
} from '../domain/reports.ts';
import type { BlockId, BlockRef, Version } from '../domain/types.ts';
import type { MetadataReader } from '../ports/catalog.ts';
import { readBlockMap, readChunk } from './block-map.ts';
import { runStartedAt } from '../domain/version.ts';
import { resolveVersion } from './resolve.ts';

/**
 * The report commands over the read side only (MetadataReader), so the same code serves the
 * embedded backend (SQLite) and the cloud agent (DynamoDB read directly). Block maps are read
 * chunk by chunk; nothing loads a whole map.
 */

// ---------------------------------------------------------------- stats

/**
 * One row per committed backup run; removed versions keep theirs (as backy2's stats table).
 * Pending and failed versions have no row: their run never finished.
 */
export async function statsReport(reader: MetadataReader, opts: { uid?: string; limit?: number } = {}): Promise<StatsRow[]> {
  const versions = opts.uid !== undefined ? [await resolveWithRemoved(reader, opts.uid)] : await reader.listVersions();
  const rows: StatsRow[] = [];
  for (const v of versions) {
    if (!v.stats) continue;
    const row = statsRowOf(v, await shortLastBlock(reader, v));
    if (row) rows.push(row);
  }
  return selectStats(rows, opts.limit);
}

/** `stats UID` also finds a removed version by its full uid: its stats row outlives it. */
async function resolveWithRemoved(reader: MetadataReader, uid: string): Promise<Version> {
  try {
    return await resolveVersion(reader, uid);
  } catch (e) {
    const removed = await reader.getVersion(uid.trim().toLowerCase());
    if (removed) return removed;
    throw e;
  }
}

/** What the run did with a short last block: read from the last map chunk and that block's index entry. */
async function shortLastBlock(reader: MetadataReader, v: Version): Promise<LastBlockOutcome> {
  if (v.blockCount === 0 || v.sizeBytes % v.blockSize === 0) return null;
  const last = (await readChunk(reader, v, v.chunkCount - 1)).at(-1)!;
  if (last.id === null) return lastBlockOutcome(v, true, undefined);
  const entry = (await reader.getBlocks([last.id])).get(last.id);
  return lastBlockOutcome(v, false, entry && Date.parse(entry.createdAt) >= runStartedAt(v));
}

// ---------------------------------------------------------------- du

export interface DuRow {
  uid: string;
  name: string;
  date: string;
  /** backy2's figures, in plaintext bytes. */
  plain: Usage;
  /** The same over the bytes actually stored (compressed + encrypted objects; sparse blocks store nothing). */
  stored: Usage;
}

/**
 * `du [UID]`: rows for committed, not removed versions (a backup in progress has an incomplete map;
 * a failed one holds no blocks). The reference counts ("in all versions") cover every version
 * that holds blocks for cleanup: committed ones and backups in progress (their recorded chunks),
 * so Est. Space freed is what `rm` + `cleanup` of that version would actually free.
 *
 * Memory: a Map from block id to reference count (measured ~108 bytes per entry: 27 MiB per TiB of
 * distinct 4 MiB blocks) and one version's own counts at a time. With `UID` the reference counts
 * cover only that version's blocks; without, every distinct block referenced anywhere.
 */
export async function duReport(reader: MetadataReader, uid?: string): Promise<DuRow[]> {
  const all = await reader.listVersions();
  const holders = all.filter(holdsBlocks);
  let targets: Version[];
  if (uid !== undefined) {
    const v = await resolveVersion(reader, uid);
    requireCommitted(v, 'du');
    targets = [v];
  } else targets = holders.filter((v) => v.status === 'committed').sort((a, b) => a.name.localeCompare(b.name) || a.date.localeCompare(b.date));
  if (!targets.length) return [];

  // With one target, only its own blocks need counting in the other versions.
  const single = uid !== undefined ? await ownCounts(reader, targets[0]!) : undefined;
  const references = await countReferences(reader, holders, single?.counts);
  const rows: DuRow[] = [];
  for (const v of targets) rows.push(await versionUsage(reader, v, single ?? (await ownCounts(reader, v)), references));
  return rows;
}

type OwnCounts = Awaited<ReturnType<typeof ownCounts>>;

async function versionUsage(reader: MetadataReader, v: Version, own: OwnCounts, references: Map<BlockId, number>): Promise<DuRow> {
  const { counts, lengths, nullBytes } = own;
  const plain = emptyUsage();
  const stored = emptyUsage();
  plain.null = nullBytes;
  const ids = [...counts.keys()];
  for (let at = 0; at < ids.length; at += 1000) {
    const batch = ids.slice(at, at + 1000);
    const index = await reader.getBlocks(batch);
    for (const id of batch) {
      const here = counts.get(id)!;
      // The version itself is one of the holders counted, so `everywhere` >= `here`; max() only guards a version listed after the count.
      const everywhere = Math.max(references.get(id) ?? here, here);
      addBlockUsage(plain, lengths.get(id) ?? v.blockSize, here, everywhere);
      addBlockUsage(stored, index.get(id)?.storedSize ?? 0, here, everywhere);
    }
  }
  return { uid: v.uid, name: v.name, date: v.date, plain, stored };
}

/**
 * A version's references per distinct block, the lengths of those shorter than a block (only the
 * last one can be), and its sparse bytes.
 */
async function ownCounts(reader: MetadataReader, v: Version): Promise<{ counts: Map<BlockId, number>; lengths: Map<BlockId, number>; nullBytes: number }> {
  const counts = new Map<BlockId, number>();
  const lengths = new Map<BlockId, number>();
  let nullBytes = 0;
  for await (const entries of readBlockMap(reader, v)) {
    for (const e of entries) {
      if (e.id === null) nullBytes += e.length;
      else {
        counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
        if (e.length !== v.blockSize) lengths.set(e.id, e.length);
      }
    }
  }
  return { counts, lengths, nullBytes };
}

/**
 * References per block id over `holders` (committed: the whole map; in progress: the chunks
 * recorded so far), counting only ids in `only` when given.
 */
export async function countReferences(reader: MetadataReader, holders: Version[], only?: { has(id: BlockId): boolean }): Promise<Map<BlockId, number>> {
  const counts = new Map<BlockId, number>();
  const add = (entries: BlockRef[]) => {
    for (const e of entries) if (e.id !== null && (!only || only.has(e.id))) counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
  };
  for (const v of holders) {
    if (v.status === 'committed') {
      for await (const entries of readBlockMap(reader, v)) add(entries);
    } else {
      for (let chunk = 0; chunk < v.chunkCount; chunk++) if (await reader.getChunk(v.uid, chunk)) add(await readChunk(reader, v, chunk));
    }
  }
  return counts;
}

// ---------------------------------------------------------------- diff-meta

export interface DiffRow {
  idx: number;
  status: DiffStatus;
  left: BlockRef | undefined;
  right: BlockRef | undefined;
}

/** The two versions of `diff-meta`, committed and not removed (an unfinished map cannot be compared). */
export async function resolveDiffPair(reader: MetadataReader, leftUid: string, rightUid: string): Promise<[Version, Version]> {
  const left = await resolveVersion(reader, leftUid);
  const right = await resolveVersion(reader, rightUid);
  requireCommitted(left, 'diff-meta');
  requireCommitted(right, 'diff-meta');
  if (left.blockSize !== right.blockSize)
    throw refused(
      `Versions ${left.uid} and ${right.uid} use different block sizes (${left.blockSize}, ${right.blockSize}); their blocks cannot be compared by index`,
    );
  return [left, right];
}

/**
 * Compares two block maps index by index, `batch` rows at a time, also when the versions differ
 * in length. Memory: one chunk of each map plus one batch.
 */
export async function* diffBlockMaps(reader: MetadataReader, left: Version, right: Version, batch = 1024): AsyncIterable<DiffRow[]> {
  const l = new MapCursor(readBlockMap(reader, left));
  const r = new MapCursor(readBlockMap(reader, right));
  const total = Math.max(left.blockCount, right.blockCount);
  for (let first = 0; first < total; first += batch) {
    const n = Math.min(batch, total - first);
    const [ls, rs] = [await l.take(n), await r.take(n)];
    const rows: DiffRow[] = [];
    for (let i = 0; i < n; i++) rows.push({ idx: first + i, status: diffStatus(ls[i], rs[i]), left: ls[i], right: rs[i] });
    yield rows;
  }
}

/** Reads a chunked block map as a stream of entries, whatever the chunk size of each version. */
class MapCursor {
  private readonly chunks: AsyncIterator<BlockRef[]>;
  private buffer: BlockRef[] = [];
  private at = 0;
  private done = false;

  constructor(map: AsyncIterable<BlockRef[]>) {
    this.chunks = map[Symbol.asyncIterator]();
  }

  /** Up to `n` next entries (fewer at the end of the map). */
  async take(n: number): Promise<BlockRef[]> {
    const out: BlockRef[] = [];
    while (out.length < n) {
      if (this.at === this.buffer.length) {
        if (this.done) break;
        const next = await this.chunks.next();
        if (next.done) {
          this.done = true;
          break;
        }
        this.buffer = next.value;
        this.at = 0;
        continue;
      }
      const take = Math.min(n - out.length, this.buffer.length - this.at);
      out.push(...this.buffer.slice(this.at, this.at + take));
      this.at += take;
    }
    return out;
  }
}

function requireCommitted(v: Version, command: string): void {
  if (v.status !== 'committed')
    throw refused(`Version ${v.uid} is ${v.status === 'pending' ? 'a backup in progress' : v.status}; ${command} needs a committed version`);
}
