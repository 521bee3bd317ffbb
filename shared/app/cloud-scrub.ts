import * as v from 'valibot';
import { blockId, boundedArray, nonNegativeInt, num, record, uid } from '../domain/schema.ts';
import { randomUUID } from 'node:crypto';
import type { Policy } from '../domain/version.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import type { ScrubLedger } from '../ports/scrub-ledger.ts';
import { readBlockMap } from './block-map.ts';
import { executeVersionCommand } from './execute.ts';
import { scrubVerdicts, verifyStoredBlock } from './scrub.ts';
import { sampleBlocks, type BlockFailure } from '../domain/scrub.ts';

/**
 * The cloud scrub, without the key: the planner fans a version's distinct blocks out in
 * batches; workers check each object's existence, size and the ciphertext checksum recorded
 * at upload; the worker finishing the last batch records the verdict for the version (and
 * every other version using a bad block).
 */
export const SCRUB_BATCH = 100;

export const ScrubBatchSchema = v.object({
  scrubId: uid,
  uid,
  batch: nonNegativeInt(),
  ids: boundedArray(blockId, SCRUB_BATCH),
});
export type ScrubBatch = v.InferOutput<typeof ScrubBatchSchema>;

export const ScrubRequestSchema = record({
  uid: v.optional(uid),
  percent: v.optional(v.pipe(num(), v.gtValue(0), v.maxValue(100)), 100),
});

export async function planCloudScrub(
  store: MetadataStore,
  ledger: ScrubLedger,
  send: (batches: ScrubBatch[]) => Promise<void>,
  request: v.InferOutput<typeof ScrubRequestSchema>,
): Promise<{ scrubId: string; uid: string; batches: number }[]> {
  const versions = (await store.listVersions()).filter((v) => v.status === 'committed' && (!request.uid || v.uid === request.uid));
  const planned: { scrubId: string; uid: string; batches: number }[] = [];
  for (const version of versions) {
    const seen = new Set<string>();
    const ids: string[] = [];
    for await (const entries of readBlockMap(store, version)) ids.push(...sampleBlocks(entries, request.percent, seen).map((e) => e.id!));
    const scrubId = randomUUID();
    const batches: ScrubBatch[] = [];
    for (let i = 0; i < ids.length; i += SCRUB_BATCH) batches.push({ scrubId, uid: version.uid, batch: batches.length, ids: ids.slice(i, i + SCRUB_BATCH) });
    await ledger.create(scrubId, version.uid, batches.length, request.percent);
    if (batches.length === 0) await ledger.finish(scrubId, 0, []);
    for (let i = 0; i < batches.length; i += 10) await send(batches.slice(i, i + 10));
    planned.push({ scrubId, uid: version.uid, batches: batches.length });
  }
  return planned;
}

export async function runScrubBatch(batch: ScrubBatch, store: MetadataStore, blocks: BlockStore, ledger: ScrubLedger, policy: Policy): Promise<void> {
  const index = await store.getBlocks(batch.ids);
  const verified: string[] = [];
  const failures: BlockFailure[] = [];
  for (const id of batch.ids) {
    const entry = index.get(id);
    const { failure } = entry ? await verifyStoredBlock(blocks, { id, length: 0 }, entry, null) : { failure: 'block is not in the block index' };
    if (failure) failures.push({ id, reason: failure });
    else verified.push(id);
  }
  if (!(await ledger.recordBatch(batch.scrubId, batch.batch, verified, failures))) return;
  const all = await ledger.results(batch.scrubId);
  const version = await store.getVersion(all.uid);
  if (version && version.status === 'committed') {
    for (const cmd of await scrubVerdicts(store, version, all.verified, all.failures, all.percent >= 100)) await executeVersionCommand(store, cmd, policy);
  }
  await ledger.finish(batch.scrubId, all.verified.length + all.failures.length, all.failures);
}
