import { BlockCodec, blockKey, storedChecksum, type CheckedBlock } from '../blocks/codec.ts';
import type { BlockId, Version } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataReader } from '../ports/catalog.ts';
import type { VersionCommand } from '../domain/version.ts';
import { blocksToRevalidate, sharesVerdict, storedObjectFailure, verdictCommands, type BlockFailure } from '../domain/scrub.ts';
import { readBlockMap } from './block-map.ts';

/**
 * Scrub: read blocks back and prove them. With the key (agent) the block is decrypted and its
 * id recomputed; without it (cloud worker) the stored object's size and checksum recorded at
 * upload are compared. A failure names what is wrong (rules in shared/domain/scrub.ts).
 */

/** What a scrub found wrong with a stored block (null: nothing), and its plaintext when it read one. */
export interface StoredBlockVerdict {
  failure: string | null;
  plaintext: Buffer | null;
}

/**
 * With `into` (the codec's shared block memory), the object is read into it and the plaintext
 * returned there; otherwise in buffers of their own.
 */
export async function verifyStoredBlock(
  blocks: BlockStore,
  ref: { id: BlockId; length: number },
  expected: { storedSize: number; checksum: string } | undefined,
  codec: BlockCodec | null,
  into: Buffer | null = null,
): Promise<StoredBlockVerdict> {
  const key = blockKey(ref.id);
  const stored = into ? await blocks.getInto(key, into) : await blocks.get(key);
  if (!stored || !codec) {
    const failure = storedObjectFailure(stored && { size: stored.length, checksum: storedChecksum(stored) }, expected);
    return { failure, plaintext: null };
  }
  // The stored object is ours to give: moved to the worker, or (in shared memory) decoded in place.
  return checkVerdict(ref, await codec.check(stored, ref.id, true), expected);
}

/**
 * What a check (BlockCodec.check, fetchAndCheck) found wrong with a stored block, compared with its
 * index entry and the block map (null: nothing), and its plaintext when nothing is.
 */
export function checkVerdict(
  ref: { id: BlockId; length: number },
  { checksum, storedSize, plaintext, error }: CheckedBlock,
  expected: { storedSize: number; checksum: string } | undefined,
): StoredBlockVerdict {
  const failure = storedObjectFailure({ size: storedSize, checksum }, expected) ?? error?.message ?? null;
  if (failure || !plaintext) return { failure, plaintext: null };
  if (plaintext.length !== ref.length) return { failure: `block decrypted to ${plaintext.length} bytes, expected ${ref.length}`, plaintext: null };
  return { failure: null, plaintext };
}

const REVALIDATE_PAGE = 1000;

/**
 * The commands that record a scrub's verdict: the scrubbed version, and every other committed
 * version that references a failed block (marked invalid too, as backy2 does). Of the verified
 * blocks, only those the index holds invalid are named (blocksToRevalidate).
 */
export async function scrubVerdicts(
  reader: MetadataReader,
  version: Version,
  verified: BlockId[],
  failures: BlockFailure[],
  complete: boolean,
): Promise<VersionCommand[]> {
  const hits = new Map<string, BlockFailure[]>();
  if (failures.length) {
    const failed = new Map(failures.map((f) => [f.id, f]));
    for (const other of await reader.listVersions()) {
      if (!sharesVerdict(other, version)) continue;
      const found = new Map<BlockId, BlockFailure>();
      for await (const entries of readBlockMap(reader, other)) for (const e of entries) if (e.id && failed.has(e.id)) found.set(e.id, failed.get(e.id)!);
      hits.set(other.uid, [...found.values()]);
    }
  }
  // Looked up a page at a time: a full scrub of a large device verifies millions of blocks.
  const revalidated: BlockId[] = [];
  for (let i = 0; i < verified.length; i += REVALIDATE_PAGE) {
    const page = verified.slice(i, i + REVALIDATE_PAGE);
    revalidated.push(...blocksToRevalidate(page, await reader.getBlocks(page)));
  }
  return verdictCommands(version, revalidated, failures, complete, hits);
}
