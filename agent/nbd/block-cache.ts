/** A cached block in use: its bytes stay valid (their memory is not reused) until release(). */
export interface PinnedBlock {
  data: Buffer;
  release(): void;
}

/**
 * Where a block's memory comes from: the codec's shared block memory (a block is read and
 * verified in it, nothing is allocated per block), or nothing (the loader allocates).
 */
export interface BlockMemory {
  acquire(): Buffer | null;
  release(memory: Buffer): void;
}

const NO_MEMORY: BlockMemory = { acquire: () => null, release: () => {} };

interface Entry {
  data: Buffer;
  /** The memory `data` lies in, when it came from BlockMemory: handed back on eviction. */
  memory: Buffer | null;
  pins: number;
}

/**
 * A least-recently-used cache of verified block plaintexts, bounded in bytes and shared by every
 * export and connection of one server (block ids are content addresses, so versions that share
 * blocks share cache entries). Concurrent requests for the same block share one fetch.
 *
 * A block is pinned while a reply still sends its bytes: an entry is evicted (and its memory
 * reused) only when nobody holds it, so a reply never sends memory that holds another block by
 * then. An entry larger than the cache is served to those waiting for it and then dropped.
 */
export class BlockCache {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, { entry: Promise<Entry>; waiters: number }>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  private readonly maxBytes: number;
  private readonly memory: BlockMemory;
  constructor(maxBytes: number, memory: BlockMemory = NO_MEMORY) {
    this.maxBytes = maxBytes;
    this.memory = memory;
  }

  get size(): number {
    return this.bytes;
  }

  /**
   * The block, pinned: cached, or `load(into)`'s result (one load per id at a time). `into` is
   * memory to read the block into (or null); the result may lie in it or in a buffer of its own.
   */
  async get(id: string, load: (into: Buffer | null) => Promise<Buffer>): Promise<PinnedBlock> {
    const hit = this.entries.get(id);
    if (hit) {
      this.entries.delete(id);
      this.entries.set(id, hit);
      this.hits++;
      hit.pins++;
      return this.pinned(hit);
    }
    let pending = this.loading.get(id);
    if (!pending) {
      this.misses++;
      pending = this.load(id, load);
    }
    // Counted before the load ends: the entry is pinned for every waiter the moment it arrives.
    pending.waiters++;
    return this.pinned(await pending.entry);
  }

  private load(id: string, load: (into: Buffer | null) => Promise<Buffer>): { entry: Promise<Entry>; waiters: number } {
    const into = this.memory.acquire();
    const pending = { entry: null as unknown as Promise<Entry>, waiters: 0 };
    pending.entry = load(into).then(
      (data) => {
        this.loading.delete(id);
        const inMemory = into !== null && data.buffer === into.buffer;
        if (into && !inMemory) this.memory.release(into);
        const entry: Entry = { data, memory: inMemory ? into : null, pins: pending.waiters };
        this.entries.set(id, entry);
        this.bytes += data.length;
        this.evict();
        return entry;
      },
      (e: unknown) => {
        this.loading.delete(id);
        if (into) this.memory.release(into);
        throw e;
      },
    );
    this.loading.set(id, pending);
    return pending;
  }

  private pinned(entry: Entry): PinnedBlock {
    let held = true;
    return {
      data: entry.data,
      release: () => {
        if (!held) return;
        held = false;
        if (--entry.pins === 0) this.evict();
      },
    };
  }

  has(id: string): boolean {
    return this.entries.has(id) || this.loading.has(id);
  }

  /** Drops least recently used entries nobody holds until the cache fits. */
  private evict(): void {
    if (this.bytes <= this.maxBytes) return;
    for (const [id, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      if (entry.pins > 0) continue;
      this.entries.delete(id);
      this.bytes -= entry.data.length;
      if (entry.memory) this.memory.release(entry.memory);
    }
  }
}
