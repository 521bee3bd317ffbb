import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { check, instant, label, nonNegativeInt, parse, positiveInt, tags, uid, variant } from '../domain/schema.ts';
import pLimit from 'p-limit';
import { blockKey, WrongKeyError, type BlockCodec } from '../blocks/codec.ts';
import { blockLength, chunkLength, packChunk, unpackChunk } from '../domain/blockmap.ts';
import { Backy2Error, ExitCode, integrityError, refused, storageError } from '../domain/errors.ts';
import { StoredBlockSchema, VersionStatsSchema } from '../domain/events.ts';
import type { BlockId, BlockRef, StoredBlock, Version } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { Catalog, MetadataReader } from '../ports/catalog.ts';
import { chunkRecorded, readChunk } from './block-map.ts';
import { writeManifest } from './manifest.ts';

/**
 * `export` / `import`: a version's metadata as a self-contained, versioned file.
 *
 * The file is JSON Lines, so both sides stream it with memory bounded by one chunk (plus the set
 * of distinct block ids): line 1 is the header (top-level `format`, `formatVersion`, the version),
 * then one line per block-map chunk (`sameAs` references already followed), then one line per
 * distinct referenced block with its stored size, checksum and validity from the block index,
 * then an `end` line with the counts, so a truncated file is recognised.
 */
export const EXPORT_FORMAT = 'backy2-serverless-export';
export const EXPORT_FORMAT_VERSION = 1;

export const ExportedVersionSchema = v.strictObject({
  uid,
  name: label,
  snapshotName: v.pipe(v.string(), v.maxLength(255)),
  date: instant,
  sizeBytes: nonNegativeInt(),
  blockSize: positiveInt(),
  chunkEntries: positiveInt(),
  tags,
  expire: v.nullable(instant),
  protected: v.boolean(),
  valid: v.boolean(),
  stats: VersionStatsSchema,
  baseUid: v.nullable(uid),
  host: v.string(),
});
export type ExportedVersion = v.InferOutput<typeof ExportedVersionSchema>;

export const ExportHeaderSchema = v.strictObject({
  format: v.literal(EXPORT_FORMAT),
  formatVersion: v.literal(EXPORT_FORMAT_VERSION),
  kind: v.literal('version'),
  version: ExportedVersionSchema,
});
const base64 = v.pipe(v.string(), v.regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64'));
export const ExportChunkSchema = v.strictObject({ kind: v.literal('chunk'), chunk: nonNegativeInt(), entries: base64 });
export const ExportBlockSchema = v.strictObject({ ...StoredBlockSchema.entries, kind: v.literal('block'), valid: v.boolean() });
export const ExportEndSchema = v.strictObject({ kind: v.literal('end'), chunks: nonNegativeInt(), blocks: nonNegativeInt() });
const ExportLineSchema = variant('kind', [ExportChunkSchema, ExportBlockSchema, ExportEndSchema]);
export type ExportBlock = v.InferOutput<typeof ExportBlockSchema>;

const formatError = (m: string) => new Backy2Error(ExitCode.importFormat, m);
const INDEX_BATCH = 500;
/** The api accepts at most 1000 blocks per touch (one Lambda payload stays far below 6 MB). */
const TOUCH_BATCH = 500;
const HEAD_CONCURRENCY = 16;

const line = (value: unknown) => JSON.stringify(value) + '\n';

/** The export of a committed version, line by line; memory stays bounded by one chunk and the id set. */
export async function* exportVersion(reader: MetadataReader, version: Version): AsyncIterable<string> {
  if (version.status !== 'committed' || !version.stats) throw refused(`Version ${version.uid} is ${version.status}; only committed versions can be exported`);
  const header: v.InferOutput<typeof ExportHeaderSchema> = {
    format: EXPORT_FORMAT,
    formatVersion: EXPORT_FORMAT_VERSION,
    kind: 'version',
    version: {
      uid: version.uid,
      name: version.name,
      snapshotName: version.snapshotName,
      date: version.date,
      sizeBytes: version.sizeBytes,
      blockSize: version.blockSize,
      chunkEntries: version.chunkEntries,
      tags: version.tags,
      expire: version.expire,
      protected: version.protected,
      valid: version.valid,
      stats: version.stats,
      baseUid: version.baseUid,
      host: version.host,
    },
  };
  yield line(parse(ExportHeaderSchema, header));
  const ids = new Set<BlockId>();
  for (let chunk = 0; chunk < version.chunkCount; chunk++) {
    const entries = await readChunk(reader, version, chunk);
    for (const e of entries) if (e.id) ids.add(e.id);
    yield line({ kind: 'chunk', chunk, entries: packChunk(entries).toString('base64') });
  }
  const all = [...ids];
  for (let i = 0; i < all.length; i += INDEX_BATCH) {
    const batch = all.slice(i, i + INDEX_BATCH);
    const index = await reader.getBlocks(batch);
    let out = '';
    for (const id of batch) {
      const entry = index.get(id);
      if (!entry || entry.deleting)
        throw storageError(`Block ${id} of version ${version.uid} is not in the block index${entry ? ' (a cleanup is deleting it)' : ''}; nothing exported`);
      out += line({ kind: 'block', id, storedSize: entry.storedSize, checksum: entry.checksum, valid: entry.valid });
    }
    yield out;
  }
  yield line({ kind: 'end', chunks: version.chunkCount, blocks: all.length });
}

/** What an export file holds once checked: the version header and its counts. */
export interface CheckedExport {
  version: ExportedVersion;
  blockCount: number;
  chunkCount: number;
  blocks: number;
}

const chunkCountOf = (v: ExportedVersion) => {
  const blockCount = Math.ceil(v.sizeBytes / v.blockSize);
  return { blockCount, chunkCount: Math.ceil(blockCount / v.chunkEntries) };
};

/** Parses one JSON line; any failure is a format error naming the line. */
function parseLine<T>(schema: v.GenericSchema<unknown, T>, text: string, lineNo: number): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw formatError(`Line ${lineNo} of the import file is not JSON`);
  }
  const result = check(schema, raw);
  if (result.success) return result.output;
  const { issue } = result;
  throw formatError(`Line ${lineNo} of the import file is invalid: ${issue.path.join('.') || 'line'}: ${issue.message}`);
}

function parseHeader(text: string | undefined): ExportedVersion {
  if (text === undefined) throw formatError('The import file is empty');
  let raw: { format?: unknown; formatVersion?: unknown };
  try {
    raw = JSON.parse(text) as typeof raw;
  } catch {
    throw formatError('The import file is not a backy2-serverless export (its first line is not JSON)');
  }
  if (raw?.format !== EXPORT_FORMAT) throw formatError(`The import file is not a ${EXPORT_FORMAT} (format ${JSON.stringify(raw?.format ?? null)})`);
  if (raw.formatVersion !== EXPORT_FORMAT_VERSION)
    throw formatError(
      `The import file has formatVersion ${JSON.stringify(raw.formatVersion ?? null)}; this backy2 reads formatVersion ${EXPORT_FORMAT_VERSION}`,
    );
  return parseLine(ExportHeaderSchema, text, 1).version;
}

/**
 * Reads the whole file and checks it without touching the repository: the header, every chunk
 * in order with the right number of entries, exactly one block line per referenced block, and the
 * end line with matching counts (a truncated file has none).
 */
export async function checkExport(lines: AsyncIterable<string>): Promise<CheckedExport> {
  let lineNo = 0;
  let version: ExportedVersion | undefined;
  let counts = { blockCount: 0, chunkCount: 0 };
  let nextChunk = 0;
  let blocks = 0;
  let ended = false;
  // Referenced ids without their block line yet; block lines follow all chunks, so one set suffices.
  const unlisted = new Set<BlockId>();
  for await (const text of lines) {
    lineNo++;
    if (lineNo === 1) {
      version = parseHeader(text);
      counts = chunkCountOf(version);
      continue;
    }
    if (text.trim() === '') continue;
    if (ended) throw formatError(`Line ${lineNo} of the import file follows its end line`);
    const item = parseLine(ExportLineSchema, text, lineNo);
    if (item.kind === 'chunk') {
      if (blocks > 0 || item.chunk !== nextChunk) throw formatError(`Line ${lineNo}: chunk ${item.chunk} is out of order (expected chunk ${nextChunk})`);
      if (item.chunk >= counts.chunkCount) throw formatError(`Line ${lineNo}: chunk ${item.chunk} is beyond the version's ${counts.chunkCount} chunks`);
      const packed = Buffer.from(item.entries, 'base64');
      const expected = chunkLength(item.chunk, counts.blockCount, version!.chunkEntries);
      let entries: BlockRef[];
      try {
        entries = unpackChunk(packed, item.chunk * version!.chunkEntries);
      } catch {
        throw formatError(`Line ${lineNo}: chunk ${item.chunk} is corrupt`);
      }
      if (entries.length !== expected) throw formatError(`Line ${lineNo}: chunk ${item.chunk} has ${entries.length} entries, expected ${expected}`);
      for (const e of entries) {
        const length = blockLength(e.idx, version!.sizeBytes, version!.blockSize);
        if (e.length !== length) throw formatError(`Line ${lineNo}: block ${e.idx} has length ${e.length}, expected ${length}`);
        if (e.id) unlisted.add(e.id);
      }
      nextChunk++;
    } else if (item.kind === 'block') {
      if (nextChunk !== counts.chunkCount) throw formatError(`Line ${lineNo}: block lines before all ${counts.chunkCount} chunks`);
      if (!unlisted.delete(item.id)) throw formatError(`Line ${lineNo}: block ${item.id} is listed twice or not referenced by the block map`);
      blocks++;
    } else {
      if (item.chunks !== counts.chunkCount || item.blocks !== blocks || nextChunk !== counts.chunkCount)
        throw formatError(`Line ${lineNo}: the end line counts ${item.chunks} chunks and ${item.blocks} blocks, the file has ${nextChunk} and ${blocks}`);
      ended = true;
    }
  }
  if (!version) throw formatError('The import file is empty');
  if (!ended) throw formatError(`The import file is truncated: no end line after line ${lineNo}`);
  if (unlisted.size) throw formatError(`The import file lacks the block lines of ${unlisted.size} referenced blocks`);
  return { version, ...counts, blocks };
}

/** The lines of an export file again, past the header. */
async function* itemsOf(lines: AsyncIterable<string>): AsyncIterable<v.InferOutput<typeof ExportLineSchema>> {
  let lineNo = 0;
  for await (const text of lines) {
    if (++lineNo === 1) continue;
    if (text.trim() !== '') yield parseLine(ExportLineSchema, text, lineNo);
  }
}

async function* blockBatches(lines: AsyncIterable<string>, size: number): AsyncIterable<ExportBlock[]> {
  let batch: ExportBlock[] = [];
  for await (const item of itemsOf(lines)) {
    if (item.kind !== 'block') continue;
    batch.push(item);
    if (batch.length === size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

export interface ImportDeps {
  catalog: Catalog;
  blocks: BlockStore;
  codec: BlockCodec;
}

/** Blocks whose object is absent, or has another size than the export says (another object). */
async function missingObjects(blocks: BlockStore, batch: StoredBlock[]): Promise<string[]> {
  const limit = pLimit(HEAD_CONCURRENCY);
  const sizes = await Promise.all(batch.map((b) => limit(() => blocks.head(blockKey(b.id)))));
  return batch.flatMap((b, i) =>
    sizes[i] === b.storedSize ? [] : [`${b.id} (${sizes[i] === null ? 'missing' : `${sizes[i]} bytes, expected ${b.storedSize}`})`],
  );
}

/**
 * Imports an export file. `open` gives the file's lines anew on every call (it is read several
 * times, so memory stays bounded). Nothing changes unless the file is well-formed, its uid is new
 * and every block object it references is in the block store and readable with this key. Then,
 * as the GC invariant demands, the version is durably pending before its blocks are touched in
 * the index; its chunks are recorded, the manifest written, and it is committed. A failure after
 * the start fails the version, so cleanup treats it as a failed backup.
 */
export async function importVersion(deps: ImportDeps, open: () => AsyncIterable<string>, log: (line: string) => void = () => {}): Promise<Version> {
  const { catalog, blocks, codec } = deps;
  const checkedRead = digested(open());
  const checked = await checkExport(checkedRead.lines);
  const v = checked.version;
  const existing = await catalog.reader.getVersion(v.uid);
  if (existing)
    throw new Backy2Error(ExitCode.importExists, `Version ${v.uid} already exists${existing.status === 'removed' ? ' (removed)' : ''}; not importing it`);

  let sampled = false;
  for await (const batch of blockBatches(open(), INDEX_BATCH)) {
    const missing = await missingObjects(blocks, batch);
    if (missing.length)
      throw storageError(
        `${missing.length}+ block objects of version ${v.uid} are not in the block store, e.g. ${missing.slice(0, 3).join(', ')}; nothing imported`,
      );
    if (!sampled) {
      await provesKey(blocks, codec, batch[0]!.id, v.uid);
      sampled = true;
    }
  }
  log(`Importing version ${v.uid} (${checked.chunkCount} chunks, ${checked.blocks} blocks)`);

  let version = await catalog.execute({
    type: 'ImportVersion',
    uid: v.uid,
    name: v.name,
    snapshotName: v.snapshotName,
    date: v.date,
    sizeBytes: v.sizeBytes,
    blockSize: v.blockSize,
    chunkEntries: v.chunkEntries,
    baseUid: v.baseUid,
    tags: v.tags,
    expire: v.expire,
    host: v.host,
  });
  try {
    for await (const batch of blockBatches(open(), TOUCH_BATCH))
      await relyOn(
        deps,
        batch.map(({ id, storedSize, checksum }) => ({ id, storedSize, checksum })),
      );
    const packedMap: Buffer[] = [];
    const recordedRead = digested(open());
    for await (const item of itemsOf(recordedRead.lines)) {
      if (item.kind !== 'chunk') continue;
      packedMap.push(Buffer.from(item.entries, 'base64'));
      await catalog.record(chunkRecorded(v.uid, item.chunk, { entries: item.entries }, []));
    }
    // What was recorded must be what was checked: a file changed in between fails the import.
    if (recordedRead.digest() !== checkedRead.digest()) throw formatError(`The import file changed while it was being imported; version ${v.uid} is failed`);
    await catalog.awaitRecorded(v.uid, version.chunkCount);
    await writeManifest(blocks, codec, version, packedMap);
    version = await catalog.execute({ type: 'CommitVersion', uid: v.uid, stats: v.stats });
  } catch (e) {
    await catalog.execute({ type: 'FailVersion', uid: v.uid, reason: `import failed: ${(e as Error).message}` }).catch(() => {});
    throw e;
  }
  // After the commit, the exported state: protection, and what its scrubs had found invalid.
  if (v.protected) version = await catalog.execute({ type: 'ProtectVersion', uid: v.uid });
  const invalid = await invalidBlocks(open());
  if (invalid.length || !v.valid)
    version = await catalog.execute({
      type: 'RecordScrub',
      uid: v.uid,
      verified: [],
      failed: invalid.map((id) => ({ id, reason: 'invalid in the exported repository' })),
      complete: false,
    });
  if (!v.valid && version.valid) log(`Version ${v.uid} was invalid when exported, but none of its blocks is; it is valid here`);
  return version;
}

/** Passes the lines through and hashes them, to notice a file that changes between two reads. */
function digested(lines: AsyncIterable<string>): { lines: AsyncIterable<string>; digest: () => string } {
  const hash = createHash('sha256');
  let result: string | null = null;
  return {
    lines: (async function* () {
      for await (const text of lines) {
        hash.update(text).update('\n');
        yield text;
      }
      result = hash.digest('hex');
    })(),
    digest: () => result ?? 'unfinished',
  };
}

async function invalidBlocks(lines: AsyncIterable<string>): Promise<BlockId[]> {
  const ids: BlockId[] = [];
  for await (const batch of blockBatches(lines, INDEX_BATCH)) for (const b of batch) if (!b.valid) ids.push(b.id);
  return ids;
}

/** One block decrypted and checked against its id proves the repository key is the one that wrote it. */
async function provesKey(blocks: BlockStore, codec: BlockCodec, id: BlockId, uid: string): Promise<void> {
  const stored = await blocks.get(blockKey(id));
  if (!stored) throw storageError(`Block ${id} of version ${uid} vanished from the block store; nothing imported`);
  try {
    await codec.decode(stored, id);
  } catch (e) {
    if (e instanceof WrongKeyError) throw integrityError(`Block ${id} of version ${uid} was written with another key: ${e.message}; nothing imported`);
    throw integrityError(`Block ${id} of version ${uid} cannot be read with this repository's key: ${(e as Error).message}; nothing imported`);
  }
}

/**
 * Tells the index this version relies on the blocks (creating missing entries with the exported
 * size and checksum). An entry a cleanup is deleting, or one created while its object vanished
 * meanwhile, cannot be relied on: the import cannot upload what it never had.
 */
async function relyOn(deps: ImportDeps, batch: StoredBlock[]): Promise<void> {
  const touched = await deps.catalog.touch(batch);
  const deleting = batch.filter((b) => touched.get(b.id) === 'deleting');
  if (deleting.length) throw storageError(`Block ${deleting[0]!.id} is being deleted by a cleanup; the import is failed`);
  const created = batch.filter((b) => touched.get(b.id) === 'created');
  const gone = await missingObjects(deps.blocks, created);
  if (gone.length) throw storageError(`Block ${gone[0]} vanished from the block store during the import; the import is failed`);
}
