import type { EventOf } from '../domain/events.ts';
import type { Version, VersionStats } from '../domain/types.ts';
import type { Catalog } from '../ports/catalog.ts';

/**
 * The end of a version's writing, for every writer (backup, the NBD server's copy-on-write).
 * `recordChunk` hands each chunk record to the catalog, except the version's last one when the
 * catalog can commit with it (cloud: one api call instead of the queue, the ingest function and a
 * wait): that one is returned, for `commitRecorded`.
 */
export async function recordChunk(catalog: Catalog, version: Version, event: EventOf<'BlocksRecorded'>): Promise<EventOf<'BlocksRecorded'> | null> {
  if (catalog.recordAndCommit && event.chunk === version.chunkCount - 1) return event;
  await catalog.record(event);
  return null;
}

/**
 * Writes the manifest while the chunks handed to the catalog are projected; once both are
 * durable, commits (with the held-back last chunk, if any). `stats.durationSeconds` is set just
 * before the commit.
 */
export async function commitRecorded(
  catalog: Catalog,
  version: Version,
  last: EventOf<'BlocksRecorded'> | null,
  writeManifest: () => Promise<void>,
  stats: VersionStats,
  startedMs: number,
): Promise<Version> {
  // The held-back last chunk is made ready (cloud: journaled) while the manifest is written.
  const ready = last && catalog.recordAndCommit ? (catalog.prepareLast?.(last) ?? Promise.resolve(last)) : null;
  await allDone([writeManifest(), catalog.awaitRecorded(version.uid, version.chunkCount - (last ? 1 : 0)), ...(ready ? [ready] : [])]);
  stats.durationSeconds = (Date.now() - startedMs) / 1000;
  const commit = { type: 'CommitVersion' as const, uid: version.uid, stats };
  return ready ? catalog.recordAndCommit!(await ready, commit) : catalog.execute(commit);
}

/** Waits for every promise (none is left running unobserved), then throws the first failure. */
async function allDone(work: Promise<unknown>[]): Promise<void> {
  for (const r of await Promise.allSettled(work)) if (r.status === 'rejected') throw r.reason;
}
