import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A block's buffers are large ArrayBuffers that die young (garbage once the block is sent on or
 * written), but V8 returns a dead young ArrayBuffer's memory only when it scavenges, and a thread
 * that allocates few JS objects scavenges rarely: each codec thread held 60-100 MiB of dead
 * blocks, and a restore peaked at 350-420 MiB RSS. A scavenge (young generation only: cheap,
 * it holds little else) after every `everyBytes` of blocks keeps the peak flat.
 *
 * With `fullEveryBytes`, a full collection instead after that many bytes (for buffers that
 * something kept referenced past a scavenge, which then wait in the old generation).
 * Returns `(bytes) => void` to call after each block; a no-op if V8 refuses to expose gc().
 */
export function youngCollector(everyBytes: number, fullEveryBytes = 0): (bytes: number) => void {
  if (everyBytes <= 0) return () => {};
  let since = 0;
  let sinceFull = 0;
  // gc() is looked up when first needed, not at start-up (a context of its own costs ~9 ms).
  let gc: Gc | null | undefined;
  return (bytes) => {
    since += bytes;
    sinceFull += bytes;
    const full = fullEveryBytes > 0 && sinceFull >= fullEveryBytes;
    if (!full && since < everyBytes) return;
    gc ??= exposedGc();
    if (!gc) return;
    since = 0;
    if (full) {
      sinceFull = 0;
      gc();
    } else gc({ type: 'minor' });
  };
}

/**
 * Threads started after this have gc() as a global from the start (V8's flag is read when a
 * context is made), so a codec thread needs no context of its own to get it.
 */
export function exposeGcToNewThreads(): void {
  try {
    setFlagsFromString('--expose-gc');
  } catch {
    // Then each thread falls back to exposedGc()'s own way, or goes without.
  }
}

type Gc = (options?: { type?: 'minor' | 'major' }) => void;
let cached: Gc | null | undefined;

/** V8's gc(), from a fresh context created after the flag is set (the usual idiom; no CLI flag needed). */
function exposedGc(): Gc | null {
  if (cached !== undefined) return cached;
  const global = (globalThis as { gc?: Gc }).gc;
  if (typeof global === 'function') {
    cached = global;
    return cached;
  }
  try {
    setFlagsFromString('--expose-gc');
    cached = runInNewContext('gc') as Gc;
  } catch {
    cached = null;
  }
  return cached;
}
