import { BlocksRecorded } from '../domain/events.ts';
import { parse } from '../domain/schema.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';

/**
 * Projects one block-map chunk record delivered by the queue. Idempotent and
 * order-independent: a duplicate returns false and changes nothing. A malformed record
 * throws, so the queue retries it and finally moves it to the dead-letter queue.
 */
export async function ingestBlockRecord(body: string, store: MetadataStore): Promise<boolean> {
  const event = parse(BlocksRecorded, JSON.parse(body));
  return store.recordChunk(event);
}
