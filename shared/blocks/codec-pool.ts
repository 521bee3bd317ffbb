import { Worker } from 'node:worker_threads';
import type { RepositoryKeys } from './keys.ts';
import { youngCollector } from './young-gc.ts';
import type { CodecRequest, CodecResponse, WorkerKeys } from './codec-worker.ts';

/**
 * Worker threads that run the block codec (codec-sync.ts), one block start to finish per job:
 * hashing, compression and encryption of the blocks in flight spread over the cores with fewer
 * copies and thread hops than WebCrypto and async zlib on libuv's pool. Idle workers do not keep
 * the process alive.
 */
interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (r: CodecResponse) => void; reject: (e: unknown) => void }>;
}

export class CodecPool {
  private slots: Slot[] = [];
  private readonly workerData: WorkerKeys;
  private readonly wanted: number;
  private seq = 0;
  private closed = false;
  /** The pipeline's own block buffers die young too (young-gc.ts); every few blocks is enough here. */
  private readonly afterReply: (bytes: number) => void;

  /** Workers start on the first job: commands that touch no block (ls, rm, protect…) start none. */
  constructor(keys: RepositoryKeys, maxBlockSize: number, size: number) {
    this.workerData = {
      keyId: new Uint8Array(keys.keyId),
      encryptionKey: new Uint8Array(keys.encryptionKey),
      dedupKey: new Uint8Array(keys.dedupKey),
      readKeys: (keys.readKeys ?? []).map((k) => ({ keyId: new Uint8Array(k.keyId), encryptionKey: new Uint8Array(k.encryptionKey) })),
      maxBlockSize,
    };
    this.wanted = Math.max(1, size);
    this.afterReply = youngCollector(4 * maxBlockSize);
  }

  private start(): Slot[] {
    this.slots = Array.from({ length: this.wanted }, () => {
      const worker = new Worker(new URL('./codec-worker.ts', import.meta.url), { workerData: this.workerData });
      worker.unref();
      const slot: Slot = { worker, pending: new Map() };
      worker.on('message', (res: CodecResponse) => {
        const job = slot.pending.get(res.seq);
        if (!job) return;
        slot.pending.delete(res.seq);
        // Not while closing: a reply that arrives after terminate() would unref a worker whose
        // exit close() still awaits, the event loop would drain, and the process end with exit 13.
        if (slot.pending.size === 0 && !this.closed) worker.unref();
        job.resolve(res);
        if (res.ok && res.data) this.afterReply(res.data.byteLength);
      });
      const fail = (e: unknown) => {
        for (const job of slot.pending.values()) job.reject(e);
        slot.pending.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`codec worker exited (${code})`)));
      return slot;
    });
    return this.slots;
  }

  get size(): number {
    return this.wanted;
  }

  /**
   * Runs one job on the least busy worker. `data` is copied, unless `give` says the caller gives
   * it up: then a buffer that owns its whole memory moves to the worker without a copy (and is
   * empty here afterwards).
   */
  run(op: CodecRequest['op'], data: Buffer, id?: string, give = false): Promise<CodecResponse> {
    if (this.closed) return Promise.reject(new Error('codec pool is closed'));
    const slots = this.slots.length ? this.slots : this.start();
    const slot = slots.reduce((best, s) => (s.pending.size < best.pending.size ? s : best));
    const seq = ++this.seq;
    const payload = give && ownsItsMemory(data) ? data : new Uint8Array(data);
    return new Promise((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(seq, { resolve, reject });
      const req: CodecRequest = id === undefined ? { seq, op, data: payload } : { seq, op, data: payload, id };
      slot.worker.postMessage(req, [payload.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Every worker stays ref'ed until it has exited: otherwise the event loop could drain while
    // terminate() is awaited and the process end mid-await (exit 13), e.g. after a failed restore.
    await Promise.all(
      this.slots.map((s) => {
        s.worker.ref();
        return s.worker.terminate();
      }),
    );
  }
}

/** A buffer that is the whole of its ArrayBuffer (not a slice of Node's shared pool) can be transferred. */
export const ownsItsMemory = (b: Uint8Array) => b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer);
