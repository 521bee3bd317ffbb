import { Worker } from 'node:worker_threads';
import type { RepositoryKeys } from './keys.ts';
import { exposeGcToNewThreads, youngCollector } from './young-gc.ts';
import type { CodecOp, CodecRequest, CodecResponse, KeysMessage, SlotRegistration, WorkerKeys } from './codec-worker.ts';
import type { HttpLocation } from '../ports/block-store.ts';
import { STORED_OVERHEAD } from './codec-sync.ts';

/**
 * Worker threads that run the block codec (codec-sync.ts), one block start to finish per job:
 * hashing, compression and encryption of the blocks in flight spread over the cores with fewer
 * copies and thread hops than WebCrypto and async zlib on libuv's pool. Idle workers do not keep
 * the process alive.
 */
interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (r: CodecResponse) => void; reject: (e: unknown) => void }>;
  /** Why the worker is gone (it failed to start, crashed or exited): no job may wait on it. */
  failure?: unknown;
}

export class CodecPool {
  private slots: Slot[] = [];
  /** Shared block memory (see acquire()): every piece ever made, and those free now. */
  private readonly memory: SharedArrayBuffer[] = [];
  private readonly memoryIndex = new Map<SharedArrayBuffer, number>();
  /** Where each piece's block memory starts within it (see alignMemory()). */
  private readonly memoryOffset: number[] = [];
  /** The pieces the alignment probe has seen, and those it found an offset for. */
  private readonly probedMemory = new Set<number>();
  private readonly alignedMemory = new Set<number>();
  private readonly freeMemory: Buffer[] = [];
  private readonly memoryBytes: number;
  private alignment: ((memory: SharedArrayBuffer) => number | null) | null = null;
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
    this.memoryBytes = maxBlockSize + STORED_OVERHEAD;
    this.afterReply = youngCollector(4 * maxBlockSize);
  }

  private start(): Slot[] {
    exposeGcToNewThreads();
    const early = takeEarlyWorkers();
    this.slots = Array.from({ length: this.wanted }, () => {
      const adopted = early.pop();
      const worker = adopted ?? new Worker(CODEC_WORKER, { workerData: this.workerData });
      // A worker started early (startCodecWorkersEarly) gets its keys as its first message.
      if (adopted) worker.postMessage({ init: this.workerData } satisfies KeysMessage);
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
        slot.failure ??= e;
        for (const job of slot.pending.values()) job.reject(e);
        slot.pending.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`codec worker exited (${code})`)));
      for (let register = 0; register < this.memory.length; register++) worker.postMessage(this.registration(register));
      return slot;
    });
    for (const unused of early) void unused.terminate();
    return this.slots;
  }

  /**
   * Block memory shared with the workers, for one block in flight: the pipeline reads a block (or
   * a stored object) into it, and a job given this memory has its result written back into it,
   * so no buffer is allocated (and none left for the collector) per block on the pipeline's
   * thread. Made on first need, reused after release(); as many exist as blocks were in flight
   * at once (each maxBlockSize plus a stored object's overhead).
   */
  acquire(): Buffer {
    const free = this.freeMemory.pop();
    if (free) return free;
    const memory = pageAlignedSharedMemory(this.memoryBytes + ALIGNMENT_SLACK);
    const register = this.memory.push(memory) - 1;
    this.memoryIndex.set(memory, register);
    this.memoryOffset[register] = 0;
    this.align(register);
    // Messages are ordered: every worker knows this memory before any job that uses it.
    for (const s of this.slots) s.worker.postMessage(this.registration(register));
    return this.view(register);
  }

  /** Gives block memory from acquire() back (any view of it); nothing may use it afterwards. */
  release(view: Buffer): void {
    const register = this.memoryIndex.get(view.buffer as SharedArrayBuffer);
    if (register === undefined) return;
    // Memory handed out before alignMemory() was called is aligned now that it is free.
    if (this.alignment && !this.probedMemory.has(register) && this.align(register))
      for (const s of this.slots) s.worker.postMessage(this.registration(register));
    this.freeMemory.push(this.view(register));
  }

  /**
   * Makes block memory start where `probe` says (an offset into the piece, or null: no aligned
   * offset found): a restore asks for the alignment O_DIRECT writes need, which JavaScript cannot
   * see (memory is page-aligned where pageAlignedSharedMemory() could map it, otherwise as
   * malloc made it). Free memory is aligned now, memory in use when it is given back.
   */
  alignMemory(probe: (memory: SharedArrayBuffer) => number | null): void {
    this.alignment = probe;
    const free = this.freeMemory.splice(0);
    for (const view of free) this.release(view);
  }

  /** Whether `data` starts where aligned block memory starts (see alignMemory()). */
  isAligned(data: Buffer): boolean {
    const register = this.sharedSlot(data);
    return register !== undefined && this.alignedMemory.has(register);
  }

  /** Whether `data` is a view from the start of this pool's block memory (from acquire()). */
  isShared(data: Buffer): boolean {
    return this.sharedSlot(data) !== undefined;
  }

  /** Chooses the piece's offset with the alignment probe; true when it found one. */
  private align(register: number): boolean {
    if (!this.alignment) return false;
    this.probedMemory.add(register);
    const offset = this.alignment(this.memory[register]!);
    if (offset === null || offset < 0 || offset > ALIGNMENT_SLACK) return false;
    this.memoryOffset[register] = offset;
    this.alignedMemory.add(register);
    return true;
  }

  private view(register: number): Buffer {
    return Buffer.from(this.memory[register]!, this.memoryOffset[register], this.memoryBytes);
  }

  private registration(register: number): SlotRegistration {
    return { register, memory: this.memory[register]!, offset: this.memoryOffset[register]!, length: this.memoryBytes };
  }

  /** The register of `data` when it is a view from the start of this pool's block memory. */
  private sharedSlot(data: Buffer): number | undefined {
    if (!(data.buffer instanceof SharedArrayBuffer)) return undefined;
    const register = this.memoryIndex.get(data.buffer);
    return register !== undefined && data.byteOffset === this.memoryOffset[register] ? register : undefined;
  }

  get size(): number {
    return this.wanted;
  }

  /**
   * Runs one job on the least busy worker. `data` is copied, unless `give` says the caller gives
   * it up: then a buffer that owns its whole memory moves to the worker without a copy (and is
   * empty here afterwards), and data in shared memory from acquire() stays where it is and has
   * the result written over it (the response then carries its `length` instead of `data`).
   */
  run(op: CodecOp, data: Buffer, id?: string, give = false): Promise<CodecResponse> {
    const shared = give ? this.sharedSlot(data) : undefined;
    if (shared !== undefined) return this.send((seq) => ({ seq, op, slot: shared, length: data.length, ...(id === undefined ? {} : { id }) }));
    const payload = give && ownsItsMemory(data) ? data : new Uint8Array(data);
    return this.send((seq) => ({ seq, op, data: payload, ...(id === undefined ? {} : { id }) }), [payload.buffer as ArrayBuffer]);
  }

  /**
   * A worker GETs the stored object at `location` into `memory` (from acquire()) and decodes (or
   * checks) it there (codec-worker.ts fetchThenDecode); the response is that op's, or the GET's
   * `http` failure.
   */
  fetch(location: HttpLocation, memory: Buffer, id: string, then: 'decode' | 'check' = 'decode'): Promise<CodecResponse> {
    const slot = this.sharedSlot(memory);
    if (slot === undefined) return Promise.reject(new Error('fetch needs block memory from acquire()'));
    return this.send((seq) => ({ seq, op: 'fetch', slot, location, id, then }));
  }

  /**
   * A worker PUTs the first `length` bytes of `memory` (from acquire(): a stored object encoded
   * there) to `location`; the response is ok, or the PUT's `http` failure.
   */
  upload(location: HttpLocation, memory: Buffer, length: number): Promise<CodecResponse> {
    const slot = this.sharedSlot(memory);
    if (slot === undefined) return Promise.reject(new Error('upload needs block memory from acquire()'));
    return this.send((seq) => ({ seq, op: 'upload', slot, length, location }));
  }

  /** Sends one job to the least busy worker, and waits for its answer. */
  private send(request: (seq: number) => CodecRequest, transfer: ArrayBuffer[] = []): Promise<CodecResponse> {
    if (this.closed) return Promise.reject(new Error('codec pool is closed'));
    const slots = this.slots.length ? this.slots : this.start();
    // A job sent to a worker that is gone would never be answered (and, nothing else keeping the
    // event loop alive, the process would end with exit 13): it fails with the worker's reason.
    const alive = slots.filter((s) => s.failure === undefined);
    if (!alive.length) return Promise.reject(slots[0]!.failure);
    const slot = alive.reduce((best, s) => (s.pending.size < best.pending.size ? s : best));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(seq, { resolve, reject });
      slot.worker.postMessage(request(seq), transfer);
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

/** Room in each piece of block memory to start it on an aligned address (a page; O_DIRECT needs at most the device's logical block size). */
export const ALIGNMENT_SLACK = 4096;

const WASM_PAGE = 65536;
/** The part of WebAssembly used here (the project's lib has no DOM types, where WebAssembly is declared). */
export interface WithWasmMemory {
  WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: boolean }) => { buffer: SharedArrayBuffer } };
}

/**
 * Shared memory that starts on a page: a shared WebAssembly.Memory, which V8 maps by itself
 * (page-aligned), where a SharedArrayBuffer is malloc's (16 bytes past a page here). O_DIRECT
 * accepts memory aligned to the device's logical block (512 bytes), but memory that is not also
 * page-aligned spreads every 4 KiB of a write over two pages: the same restore wrote 2-4x slower
 * (virtio disk, AMD EPYC guest; docs/BENCHMARKS.md). Only address space is reserved beyond the
 * size asked for; where even that is refused (ulimit -v), a SharedArrayBuffer it is.
 */
export function pageAlignedSharedMemory(bytes: number): SharedArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  try {
    return new (globalThis as unknown as WithWasmMemory).WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer;
  } catch {
    return new SharedArrayBuffer(bytes);
  }
}

const CODEC_WORKER = new URL('./codec-worker.ts', import.meta.url);
const EARLY = Symbol.for('backy2.earlyCodecWorkers');

/**
 * Starts the codec's worker threads before the rest of the program has loaded (the CLI's launcher
 * does this for the commands that process blocks): a thread takes ~0.1-0.3 s to load its modules,
 * which otherwise delayed the first block of every backup, restore and scrub. They wait, unref'd,
 * for the pool that adopts them (and its keys); a command that never makes one leaves them to exit.
 */
export function startCodecWorkersEarly(count: number): void {
  const holder = globalThis as { [EARLY]?: Worker[] };
  exposeGcToNewThreads();
  holder[EARLY] ??= Array.from({ length: count }, () => {
    const worker = new Worker(CODEC_WORKER, { workerData: null });
    worker.unref();
    // One that fails to start (EMFILE) is not adopted: the pool starts its own and reports why that fails.
    worker.on('error', () => failedEarly.add(worker));
    return worker;
  });
}

const failedEarly = new WeakSet<Worker>();

function takeEarlyWorkers(): Worker[] {
  const holder = globalThis as { [EARLY]?: Worker[] };
  const early = (holder[EARLY] ?? []).filter((w) => w.threadId >= 0 && !failedEarly.has(w));
  holder[EARLY] = [];
  return early;
}

/** A buffer that is the whole of its ArrayBuffer (not a slice of Node's shared pool) can be transferred. */
export const ownsItsMemory = (b: Uint8Array) => b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer);
