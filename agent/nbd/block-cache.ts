/**
 * A least-recently-used cache of verified block plaintexts, bounded in bytes and shared by every
 * export and connection of one server (block ids are content addresses, so versions that share
 * blocks share cache entries). Concurrent requests for the same block share one fetch.
 */
export class BlockCache {
  private readonly entries = new Map<string, Buffer>();
  private readonly loading = new Map<string, Promise<Buffer>>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  private readonly maxBytes: number;
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get size(): number {
    return this.bytes;
  }

  /** The cached block, or `load()`'s result (cached if it fits); one load per id at a time. */
  async get(id: string, load: () => Promise<Buffer>): Promise<Buffer> {
    const hit = this.entries.get(id);
    if (hit) {
      this.entries.delete(id);
      this.entries.set(id, hit);
      this.hits++;
      return hit;
    }
    const pending = this.loading.get(id);
    if (pending) return pending;
    this.misses++;
    const p = load().then(
      (data) => {
        this.loading.delete(id);
        this.put(id, data);
        return data;
      },
      (e: unknown) => {
        this.loading.delete(id);
        throw e;
      },
    );
    this.loading.set(id, p);
    return p;
  }

  has(id: string): boolean {
    return this.entries.has(id) || this.loading.has(id);
  }

  private put(id: string, data: Buffer): void {
    if (data.length > this.maxBytes) return;
    this.entries.set(id, data);
    this.bytes += data.length;
    for (const [oldest, buf] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= buf.length;
    }
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }
}
