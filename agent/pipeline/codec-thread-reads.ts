import { checkVerdict, verifyStoredBlock, type StoredBlockVerdict } from '../../shared/app/scrub.ts';
import { blockKey, TransferFailedError } from '../../shared/blocks/codec.ts';
import type { BlockIndexEntry, BlockRef } from '../../shared/domain/types.ts';
import type { Backend } from '../backend/backend.ts';
import { CodecThreadFailures } from '../backend/codec-thread-failures.ts';
import type { BlockStore, HttpLocation } from '../../shared/ports/block-store.ts';
import type { Log } from '../ui/log.ts';

/**
 * Blocks fetched by the codec threads themselves (BlockStore.locate: a presigned GET), so the
 * pipeline's thread neither receives nor garbage-collects their bytes (restore, scrub, nbd). A
 * GET that fails there is a warning and the block is read again through the store, as
 * CodecThreadFailures has it.
 */
export class CodecThreadReads {
  private readonly blocks: BlockStore;
  private readonly failures: CodecThreadFailures;
  constructor(blocks: BlockStore, log: Log) {
    this.blocks = blocks;
    this.failures = new CodecThreadFailures(log, { ing: 'reading', ed: 'read' });
  }

  /**
   * What `fetch` (a codec-thread op: fetchAndDecode, fetchAndCheck) makes of the block `ref.idx`,
   * or null: read it through the store (this thread). `fetch` may answer null too.
   */
  async read<T>(ref: BlockRef, memory: Buffer | null, fetch: (location: HttpLocation, memory: Buffer) => Promise<T | null>): Promise<T | null> {
    if (!memory || !this.failures.tolerated) return null;
    const location = await this.blocks.locate?.(blockKey(ref.id!));
    if (!location) return null;
    try {
      return await fetch(location, memory);
    } catch (e) {
      if (!(e instanceof TransferFailedError)) throw e;
      // Missing (404) is the store's to report, with no retry.
      if (e.failure.status !== 404) this.failures.failed(`block ${ref.idx}`, e);
      return null;
    }
  }
}

/**
 * A stored block's verdict, as a scrub gives it (scrub, the NBD server). Where the store can
 * locate it, its codec thread GETs and checks it (its bytes never reach this thread), and a block
 * found sound there is. Anything else is read and verified again through the store, as before,
 * and that verdict counts: the codec thread's GET has no response checksum (bytes damaged on
 * their way must not mark a block invalid), and the store's read names a missing or damaged
 * object exactly as scrub always has.
 */
export function storedBlockVerifier(backend: Backend, log: Log) {
  const codecThreads = new CodecThreadReads(backend.blocks, log);
  const soundOnCodecThread = (ref: BlockRef, expected: BlockIndexEntry | undefined) => async (location: HttpLocation, into: Buffer) => {
    const verdict = checkVerdict({ id: ref.id!, length: ref.length }, await backend.codec.fetchAndCheck(location, ref.id!, into), expected);
    if (!verdict.failure) return verdict;
    log.debug(`Block ${ref.idx} failed on a codec thread (${verdict.failure}); verifying it again through the store`);
    return null;
  };
  return async (ref: BlockRef, expected: BlockIndexEntry | undefined, memory: Buffer | null): Promise<StoredBlockVerdict> =>
    (await codecThreads.read(ref, memory, soundOnCodecThread(ref, expected))) ??
    (await verifyStoredBlock(backend.blocks, { id: ref.id!, length: ref.length }, expected, backend.codec, memory));
}
