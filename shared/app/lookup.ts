import type { BlockId, BlockIndexEntry } from '../domain/types.ts';
import type { MetadataReader } from '../ports/catalog.ts';

/**
 * Coalesces per-block index lookups made by concurrent pipeline tasks into batched reads
 * (a DynamoDB BatchGetItem takes 100 keys), so dedup costs one request per ~100 blocks.
 */
export class BatchedBlockLookup {
  private readonly reader: MetadataReader;
  private readonly maxBatch: number;
  private queue: { id: BlockId; resolve: (e: BlockIndexEntry | undefined) => void; reject: (e: unknown) => void }[] = [];
  private scheduled = false;

  constructor(reader: MetadataReader, maxBatch = 100) {
    this.reader = reader;
    this.maxBatch = maxBatch;
  }

  get(id: BlockId): Promise<BlockIndexEntry | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id, resolve, reject });
      if (this.queue.length >= this.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.maxBatch);
    if (!batch.length) return;
    this.reader.getBlocks([...new Set(batch.map((b) => b.id))]).then(
      (found) => {
        for (const b of batch) b.resolve(found.get(b.id));
      },
      (e) => {
        for (const b of batch) b.reject(e);
      },
    );
    if (this.queue.length) this.flush();
  }
}
