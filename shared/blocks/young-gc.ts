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
  const gc = exposedGc();
  if (!gc || everyBytes <= 0) return () => {};
  let since = 0;
  let sinceFull = 0;
  return (bytes) => {
    since += bytes;
    sinceFull += bytes;
    if (fullEveryBytes > 0 && sinceFull >= fullEveryBytes) {
      since = sinceFull = 0;
      gc();
      return;
    }
    if (since < everyBytes) return;
    since = 0;
    gc({ type: 'minor' });
  };
}

type Gc = (options?: { type?: 'minor' | 'major' }) => void;
let cached: Gc | null | undefined;

/** V8's gc(), from a fresh context created after the flag is set (the usual idiom; no CLI flag needed). */
function exposedGc(): Gc | null {
  if (cached !== undefined) return cached;
  try {
    setFlagsFromString('--expose-gc');
    cached = runInNewContext('gc') as Gc;
  } catch {
    cached = null;
  }
  return cached;
}
