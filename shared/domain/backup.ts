import type { TouchResult } from './block-index.ts';
import type { VersionCommand } from './version.ts';

/**
 * The garbage-collection rules a backup (and an import, which relies on objects it never
 * uploaded) follows, pure. The rules of the index itself are in block-index.ts, cleanup's in
 * cleanup.ts; docs/DESIGN-NOTES.md maps each step of the invariant to its function.
 */

/**
 * The commands that let a run rely on stored objects no index entry may know yet: their start must
 * be durable before anything is looked up (DESIGN-NOTES 1), and in embedded mode they wait for a
 * running `cleanup -f` (which deletes objects no index entry knows) before and after their start;
 * a cleanup that took its lock in between may have listed the versions without this one.
 */
export const reliesOnStoredObjects = (cmd: VersionCommand): boolean => cmd.type === 'StartVersion' || cmd.type === 'ImportVersion';

/** How long a start waits for `cleanup -f`: checks a second apart, then fails clearly. */
export const CLEANUP_LOCK_WAIT = { checks: 60, intervalMs: 1000 } as const;

/**
 * After touching an object it found already stored (DESIGN-NOTES 3): a live entry is relied on;
 * a created one only once the object is seen to exist still (else it is uploaded again); one being
 * deleted means waiting until the deletion is done, then uploading again.
 */
export type AfterTouch = 'rely' | 'recheck object' | 'wait for deletion';

export function afterTouch(found: TouchResult | undefined): AfterTouch {
  if (found === 'live') return 'rely';
  if (found === 'created') return 'recheck object';
  return 'wait for deletion';
}
