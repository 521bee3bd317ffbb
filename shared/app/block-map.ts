import { chunkLength, unpackChunk } from '../domain/blockmap.ts';
import { BlocksRecorded, type EventOf } from '../domain/events.ts';
import { parse } from '../domain/schema.ts';
import type { BlockId, BlockRef, StoredBlock, Version } from '../domain/types.ts';
import type { MetadataReader } from '../ports/catalog.ts';
import { Backy2Error, ExitCode } from '../domain/errors.ts';

/** Reads one chunk of a version's block map, following `sameAs` references to the chunk holding the entries. */
export async function readChunk(reader: MetadataReader, version: Version, chunk: number): Promise<BlockRef[]> {
  return (await readChunkWithOrigin(reader, version, chunk)).entries;
}

/** The chunk's entries and the (version, chunk) that actually stores them, for `sameAs` references. */
export async function readChunkWithOrigin(
  reader: MetadataReader,
  version: Version,
  chunk: number,
): Promise<{ entries: BlockRef[]; origin: { uid: string; chunk: number } }> {
  let uid = version.uid;
  let at = chunk;
  for (let hops = 0; hops < 1000; hops++) {
    const stored = await reader.getChunk(uid, at);
    if (!stored) throw new Backy2Error(ExitCode.unexpected, `Block map chunk ${chunk} of version ${version.uid} is missing`);
    if (stored.entries) {
      const entries = unpackChunk(stored.entries, chunk * version.chunkEntries);
      const expected = chunkLength(chunk, version.blockCount, version.chunkEntries);
      if (entries.length !== expected)
        throw new Backy2Error(ExitCode.unexpected, `Block map chunk ${chunk} of version ${version.uid} has ${entries.length} entries, expected ${expected}`);
      return { entries, origin: { uid, chunk: at } };
    }
    if (!stored.sameAs) throw new Backy2Error(ExitCode.unexpected, `Block map chunk ${chunk} of version ${version.uid} is empty`);
    ({ uid, chunk: at } = stored.sameAs);
  }
  throw new Backy2Error(ExitCode.unexpected, `Block map chunk ${chunk} of version ${version.uid}: reference loop`);
}

/** The whole map (from chunk `first`), chunk by chunk: memory stays bounded by one chunk. */
export async function* readBlockMap(reader: MetadataReader, version: Version, first = 0): AsyncIterable<BlockRef[]> {
  for (let chunk = first; chunk < version.chunkCount; chunk++) yield await readChunk(reader, version, chunk);
}

/** Distinct non-sparse block ids a version references. */
export async function referencedIds(reader: MetadataReader, version: Version, into = new Set<BlockId>()): Promise<Set<BlockId>> {
  for await (const entries of readBlockMap(reader, version)) for (const e of entries) if (e.id) into.add(e.id);
  return into;
}

/** Recorded chunks only (a backup in progress): chunks not yet recorded are skipped. */
export async function recordedIds(reader: MetadataReader, version: Version, into: Set<BlockId>): Promise<Set<BlockId>> {
  for (let chunk = 0; chunk < version.chunkCount; chunk++) {
    if (!(await reader.getChunk(version.uid, chunk))) continue;
    for (const e of await readChunk(reader, version, chunk)) if (e.id) into.add(e.id);
  }
  return into;
}

/**
 * The record of one block-map chunk, as every writer of versions (backup, copy-on-write, import)
 * sends it: either its packed entries, or `sameAs` the chunk of an older version it equals.
 */
export function chunkRecorded(
  uid: string,
  chunk: number,
  content: { entries: Buffer | string } | { sameAs: EventOf<'BlocksRecorded'>['sameAs'] },
  newBlocks: StoredBlock[],
): EventOf<'BlocksRecorded'> {
  const entries = 'entries' in content ? (typeof content.entries === 'string' ? content.entries : content.entries.toString('base64')) : null;
  const sameAs = 'sameAs' in content ? content.sameAs : null;
  return parse(BlocksRecorded, { type: 'BlocksRecorded', v: 1, uid, chunk, entries, sameAs, newBlocks, at: new Date().toISOString() });
}
