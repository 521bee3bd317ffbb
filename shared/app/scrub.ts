import { BlockCodec, blockKey, storedChecksum } from '../blocks/codec.ts';
import type { BlockId, BlockRef, Version } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataReader } from '../ports/catalog.ts';
import type { VersionCommand } from '../domain/version.ts';
import { readBlockMap } from './block-map.ts';

/**
 * Scrub: read blocks back and prove them. With the key (agent) the block is decrypted and its
 * id recomputed; without it (cloud worker) the stored object's size and checksum recorded at
 * upload are compared. A failure names what is wrong.
 */
export interface BlockFailure {
  id: BlockId;
  reason: string;
}

export async function verifyStoredBlock(
  blocks: BlockStore,
  ref: { id: BlockId; length: number },
  expected: { storedSize: number; checksum: string } | undefined,
  codec: BlockCodec | null,
): Promise<{ failure: string | null; plaintext: Buffer | null }> {
  const stored = await blocks.get(blockKey(ref.id));
  if (stored === null) return { failure: 'Blob not found', plaintext: null };
  if (expected && stored.length !== expected.storedSize)
    return { failure: `stored size ${stored.length} differs from the ${expected.storedSize} bytes recorded at upload`, plaintext: null };
  if (expected && storedChecksum(stored) !== expected.checksum) return { failure: 'stored object checksum differs from the one recorded at upload', plaintext: null };
  if (!codec) return { failure: null, plaintext: null };
  try {
    const plaintext = await codec.decode(stored, ref.id);
    if (plaintext.length !== ref.length) return { failure: `block decrypted to ${plaintext.length} bytes, expected ${ref.length}`, plaintext: null };
    return { failure: null, plaintext };
  } catch (e) {
    return { failure: (e as Error).message, plaintext: null };
  }
}

/** Picks the blocks a scrub of `percent` % checks: each distinct stored block with that probability. */
export function sampleBlocks(entries: BlockRef[], percent: number, seen: Set<BlockId>, random: () => number = Math.random): BlockRef[] {
  const picked: BlockRef[] = [];
  for (const e of entries) {
    if (e.id === null || seen.has(e.id)) continue;
    seen.add(e.id);
    if (percent >= 100 || random() * 100 < percent) picked.push(e);
  }
  return picked;
}

export interface ScrubResult {
  checked: number;
  failures: BlockFailure[];
  sourceMismatches: number[];
  affectedVersions: string[];
}

/**
 * The commands that record a scrub's verdict: the scrubbed version, and every other committed
 * version that references a failed block (marked invalid too, as backy2 does).
 */
export async function scrubVerdicts(
  reader: MetadataReader,
  version: Version,
  verified: BlockId[],
  failures: BlockFailure[],
  complete: boolean,
): Promise<VersionCommand[]> {
  const commands: VersionCommand[] = [{ type: 'RecordScrub', uid: version.uid, verified, failed: failures, complete }];
  if (!failures.length) return commands;
  const failed = new Map(failures.map((f) => [f.id, f]));
  for (const other of await reader.listVersions()) {
    if (other.uid === version.uid || other.status !== 'committed') continue;
    const hits = new Map<BlockId, BlockFailure>();
    for await (const entries of readBlockMap(reader, other)) for (const e of entries) if (e.id && failed.has(e.id)) hits.set(e.id, failed.get(e.id)!);
    if (hits.size) commands.push({ type: 'RecordScrub', uid: other.uid, verified: [], failed: [...hits.values()], complete: false });
  }
  return commands;
}
