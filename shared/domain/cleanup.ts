import { Backy2Error, ExitCode } from './errors.ts';
import type { BlockIndexEntry, Version } from './types.ts';
import { runStartedAt } from './version.ts';

/**
 * The garbage-collection rule (docs/DESIGN-NOTES.md, GC invariant), pure. No block referenced by a
 * committed version or a backup in progress is ever deleted:
 *  phase 1 marks unreferenced blocks with the time;
 *  phase 2 deletes a marked block only if it is still unreferenced, was marked at least
 *  `graceSeconds` ago, and before the start of the oldest backup still in progress
 *  (that backup may have relied on the block before it was marked).
 */
export interface CleanupPlan {
  mark: string[];
  unmark: string[];
  claim: { id: string; markedAt: string }[];
  /** Claimed by an earlier run that did not finish deleting. */
  resumeDeletion: string[];
}

export function planCleanup(
  entries: BlockIndexEntry[],
  referenced: Set<string>,
  oldestPendingStart: number | null,
  now: Date,
  graceSeconds: number,
): CleanupPlan {
  const plan: CleanupPlan = { mark: [], unmark: [], claim: [], resumeDeletion: [] };
  const markedAt = now.toISOString();
  const graceCutoff = now.getTime() - graceSeconds * 1000;
  for (const e of entries) {
    if (e.deleting) {
      plan.resumeDeletion.push(e.id);
      continue;
    }
    if (referenced.has(e.id)) {
      if (e.unreferencedSince !== null) plan.unmark.push(e.id);
      continue;
    }
    const since = e.unreferencedSince ?? markedAt;
    if (e.unreferencedSince === null) plan.mark.push(e.id);
    const t = Date.parse(since);
    if (t <= graceCutoff && (oldestPendingStart === null || t < oldestPendingStart)) plan.claim.push({ id: e.id, markedAt: since });
  }
  return plan;
}

/** Versions whose blocks must be kept: committed ones and backups in progress. */
export const holdsBlocks = (v: Version) => v.status === 'committed' || v.status === 'pending';

/** A pending backup older than the maximum age is dead: it is failed and stops holding the GC cutoff. */
export const isStalePending = (v: Version, now: Date, maxBackupAgeSeconds: number) =>
  v.status === 'pending' && now.getTime() - runStartedAt(v) > maxBackupAgeSeconds * 1000;

/** Committed, unprotected versions past their expiry date: what retention removes. */
export const isExpired = (v: Version, now: Date) => v.status === 'committed' && !v.protected && v.expire !== null && Date.parse(v.expire) < now.getTime();

/**
 * A served-version lease (`backy2 nbd`): while it is live, cleanup treats the version as holding
 * its blocks, even if it is removed meanwhile, because a connected client may still read them.
 * The server takes the lease before it checks that the version is still committed, and renews it
 * while it serves; cleanup lists versions before leases. So either the lease is in cleanup's list,
 * or cleanup saw the version committed (its blocks referenced), or the server saw it removed and
 * refused to serve it. A lease that is not renewed (the server died) expires by itself.
 */
export interface VersionLease {
  uid: string;
  /** Who serves it (host, process, server instance): one lease per server and version. */
  holder: string;
  expiresAt: string;
}

/** Longest lease one request may take; servers renew well before expiry. */
export const MAX_LEASE_SECONDS = 3600;

export const leaseExpiry = (now: Date, seconds: number): string => new Date(now.getTime() + Math.min(seconds, MAX_LEASE_SECONDS) * 1000).toISOString();

export const isLiveLease = (lease: VersionLease, now: Date): boolean => Date.parse(lease.expiresAt) > now.getTime();

/** The versions whose blocks cleanup keeps: committed ones, backups in progress, and any version a live lease pins. */
export function versionsHoldingBlocks(versions: Version[], leases: VersionLease[], now: Date): Version[] {
  const pinned = new Set(leases.filter((l) => isLiveLease(l, now)).map((l) => l.uid));
  return versions.filter((v) => holdsBlocks(v) || pinned.has(v.uid));
}

/** When the oldest backup still in progress started (ms), or null: no block marked after it may go. */
export function oldestPendingStart(versions: Version[]): number | null {
  const starts = versions.filter((v) => v.status === 'pending').map(runStartedAt);
  return starts.length ? Math.min(...starts) : null;
}

/**
 * `cleanup -f` ignores the grace period, so it must not run beside a backup (whose blocks are not
 * all recorded yet): refused while one is in progress (stale ones are failed before this check).
 */
export function refuseForceWhileBackupRuns(versions: Version[]): void {
  const running = versions.filter((v) => v.status === 'pending');
  if (running.length)
    throw new Backy2Error(
      ExitCode.locked,
      `A backup is in progress (${running.map((v) => v.uid).join(', ')}); cleanup --force must not run in parallel with it`,
    );
}

export const graceSecondsOf = (force: boolean, graceSeconds: number): number => (force ? 0 : graceSeconds);

/**
 * Late starters. A backup that started after this run listed the versions is not in its
 * `referenced` set, and may have found a block live until this run's mark was written; so may one
 * still in progress. A claim goes ahead only if the block was marked before the oldest of those
 * started, a mark made by this run counting from when its write completed (`markWritten`). With
 * a grace period longer than a backup this never bites; with grace 0 (cleanup -f, or
 * cleanup_grace_seconds 0) it is what keeps the invariant.
 *
 * `now`: the versions as read after the marks were written; `listed`: the uids this run listed.
 */
export function withoutLateStarters(
  claims: { id: string; markedAt: string }[],
  now: Version[],
  listed: Set<string>,
  markedByThisRun: Set<string>,
  markWritten: number,
): { id: string; markedAt: string }[] {
  const starts = now.filter((v) => v.status === 'pending' || (!listed.has(v.uid) && holdsBlocks(v))).map(runStartedAt);
  if (!starts.length) return claims;
  const cutoff = Math.min(...starts);
  return claims.filter((c) => (markedByThisRun.has(c.id) ? markWritten : Date.parse(c.markedAt)) < cutoff);
}

/**
 * A deletion resumed from an interrupted (or concurrent) run deletes the object only if it is
 * still the one the entry was made for: a block uploaded anew since has a fresh nonce, hence
 * another checksum, and survives. `storedChecksum`: of the object now stored, null if none.
 */
export const mayDeleteResumed = (entry: BlockIndexEntry, storedChecksum: string | null): boolean => storedChecksum === entry.checksum;

/**
 * Embedded locks. Every cleanup (and rekey) holds the run lock: two runs at a time would delete
 * blocks the first claimed a second time, possibly after a backup uploaded one anew. `cleanup -f`
 * also holds the force lock, which makes backups and imports starting meanwhile wait (see
 * reliesOnStoredObjects in backup.ts); only then may it delete objects no index entry knows.
 */
export const CLEANUP_RUN_LOCK = 'cleanup';
export const CLEANUP_FORCE_LOCK = 'cleanup-force';
export const cleanupLocks = (force: boolean): string[] => (force ? [CLEANUP_RUN_LOCK, CLEANUP_FORCE_LOCK] : [CLEANUP_RUN_LOCK]);
