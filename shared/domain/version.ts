import { checkBackupName, checkSnapshotName, checkTags } from './names.ts';
import type { DomainEvent, EventOf, VersionEvent } from './events.ts';
import type { VersionCommand, VersionHeader } from './commands.ts';
import type { Version } from './types.ts';
import { Backy2Error, ExitCode, notFound, refused, usageError } from './errors.ts';

const sourceMismatch = (m: string) => new Backy2Error(ExitCode.sourceMismatch, m);

/**
 * The rules of a version's life, decided against its current state.
 * Pure: time and policy come in as arguments, events go out. Commands: commands.ts.
 */
export type { VersionCommand } from './commands.ts';

export interface Policy {
  /** backy2's disallow_rm_when_younger_than_days. */
  minAgeDaysForRm: number;
  /** A backup still pending after this long is considered dead; its commit is refused. */
  maxBackupAgeSeconds: number;
}

export interface DecideContext {
  now: Date;
  policy: Policy;
  /** The base version for StartVersion with -f, looked up by the caller. */
  base?: Version | undefined;
}

const DAY_MS = 86_400_000;

/** Names and tags are checked where a version gets them (every backend, every entry point). */
function checkHeaderNames(h: VersionHeader): void {
  checkBackupName(h.name);
  checkSnapshotName(h.snapshotName);
  checkTags(h.tags);
}

export function decideVersion(cmd: VersionCommand, state: Version | undefined, ctx: DecideContext): VersionEvent[] {
  const at = ctx.now.toISOString();
  if (cmd.type === 'StartVersion' || cmd.type === 'ImportVersion') checkHeaderNames(cmd);
  if (cmd.type === 'StartVersion') {
    if (state) throw refused(`Version ${cmd.uid} already exists`);
    if (cmd.baseUid) {
      const base = ctx.base;
      if (!base || base.status !== 'committed') throw notFound(`Base version ${cmd.baseUid} not found or not committed`);
      if (!base.valid) throw refused(`Base version ${cmd.baseUid} is invalid; scrub it or back up without -f`);
      if (base.blockSize !== cmd.blockSize) throw refused(`Base version ${cmd.baseUid} uses block size ${base.blockSize}, not ${cmd.blockSize}`);
    }
    return [{ type: 'VersionStarted', v: 1, ...withoutType(cmd), at }];
  }
  if (cmd.type === 'ImportVersion') {
    // Even a removed version keeps its uid: an import never revives or overwrites one.
    if (state)
      throw new Backy2Error(ExitCode.importExists, `Version ${cmd.uid} already exists${state.status === 'removed' ? ' (removed)' : ''}; not importing it`);
    return [{ type: 'VersionImported', v: 1, ...withoutType(cmd), at }];
  }
  const v = requireVersion(state, cmd.uid);
  switch (cmd.type) {
    case 'CommitVersion': {
      if (v.status === 'committed') return []; // a retried commit is a no-op
      if (v.status !== 'pending') throw refused(`Version ${v.uid} is ${v.status}; its commit is refused`);
      if (ctx.now.getTime() - runStartedAt(v) > ctx.policy.maxBackupAgeSeconds * 1000)
        throw refused(
          `Version ${v.uid} started more than ${ctx.policy.maxBackupAgeSeconds} s ago; its commit is refused and cleanup may already have reclaimed its blocks`,
        );
      if (v.recordedChunks < v.chunkCount) throw refused(`Version ${v.uid} has ${v.recordedChunks}/${v.chunkCount} block map chunks recorded; not committing`);
      return [{ type: 'VersionCommitted', v: 1, uid: v.uid, stats: cmd.stats, at }];
    }
    case 'ResumeVersion':
      if (v.status === 'removed') throw notFound(`Version ${v.uid} not found`);
      if (v.status === 'committed') throw refused(`Version ${v.uid} is complete${v.valid ? ' and valid' : ''}; only an interrupted backup can be continued`);
      if (v.sizeBytes !== cmd.sizeBytes)
        throw sourceMismatch(`Source has ${cmd.sizeBytes} bytes, version ${v.uid} was a backup of ${v.sizeBytes} bytes; continue it from the same source`);
      if (v.blockSize !== cmd.blockSize) throw refused(`Version ${v.uid} uses block size ${v.blockSize}, the config says ${cmd.blockSize}`);
      return [{ type: 'VersionResumed', v: 1, uid: v.uid, host: cmd.host, at }];
    case 'FailVersion':
      if (v.status !== 'pending') return [];
      return [{ type: 'VersionFailed', v: 1, uid: v.uid, reason: cmd.reason, at }];
    case 'RemoveVersion': {
      if (v.status === 'removed') throw notFound(`Version ${v.uid} not found`);
      if (v.protected) throw refused(`Version ${v.uid} is protected. Will not delete.`);
      const ageDays = (ctx.now.getTime() - Date.parse(v.date)) / DAY_MS;
      if (!cmd.force && v.status === 'committed' && ageDays < ctx.policy.minAgeDaysForRm) throw refused(`Version ${v.uid} is too young. Will not delete.`);
      if (!cmd.force && v.status === 'pending') throw refused(`Version ${v.uid} is a backup in progress. Will not delete without --force.`);
      return [{ type: 'VersionRemoved', v: 1, uid: v.uid, forced: cmd.force, at }];
    }
    case 'ProtectVersion':
      if (v.protected) throw refused(`Version ${v.uid} is already protected`);
      return [{ type: 'VersionProtected', v: 1, uid: v.uid, at }];
    case 'UnprotectVersion':
      if (!v.protected) throw refused(`Version ${v.uid} is not protected`);
      return [{ type: 'VersionUnprotected', v: 1, uid: v.uid, at }];
    case 'AddTags': {
      checkTags(cmd.tags);
      const added = unique(cmd.tags).filter((t) => !v.tags.includes(t));
      return added.length ? [{ type: 'TagsAdded', v: 1, uid: v.uid, tags: added, at }] : [];
    }
    case 'RemoveTags': {
      const removed = unique(cmd.tags).filter((t) => v.tags.includes(t));
      return removed.length ? [{ type: 'TagsRemoved', v: 1, uid: v.uid, tags: removed, at }] : [];
    }
    case 'SetExpiry':
      if (cmd.expire !== null && Number.isNaN(Date.parse(cmd.expire))) throw usageError(`Invalid expiry ${cmd.expire}`);
      return [{ type: 'ExpirySet', v: 1, uid: v.uid, expire: cmd.expire, at }];
    case 'RecordScrub':
      if (v.status !== 'committed') throw refused(`Version ${v.uid} is ${v.status}; only committed versions are scrubbed`);
      return [{ type: 'ScrubCompleted', v: 1, uid: v.uid, verified: cmd.verified, failed: cmd.failed, complete: cmd.complete, at }];
  }
}

/** Folds one event into the version projection. Unknown or foreign events leave it unchanged. */
export function evolveVersion(state: Version | undefined, event: DomainEvent): Version | undefined {
  if (event.type === 'VersionStarted' || event.type === 'VersionImported') {
    if (state) return state;
    const blockCount = Math.ceil(event.sizeBytes / event.blockSize);
    return {
      uid: event.uid,
      name: event.name,
      snapshotName: event.snapshotName,
      // An imported version keeps its original date; its run (the import) starts now.
      date: event.type === 'VersionImported' ? event.date : event.at,
      startedAt: event.at,
      sizeBytes: event.sizeBytes,
      blockSize: event.blockSize,
      blockCount,
      chunkEntries: event.chunkEntries,
      chunkCount: Math.ceil(blockCount / event.chunkEntries),
      recordedChunks: 0,
      baseUid: event.baseUid,
      host: event.host,
      status: 'pending',
      valid: false,
      protected: false,
      tags: [...event.tags].sort(),
      expire: event.expire,
      stats: null,
      seq: 1,
    };
  }
  if (!state || !('uid' in event) || event.uid !== state.uid) return state;
  if (event.type === 'BlocksRecorded') return { ...state, recordedChunks: state.recordedChunks + 1 };
  const next = applyLifecycle(state, event);
  return { ...next, seq: state.seq + 1 };
}

function applyLifecycle(v: Version, e: Exclude<VersionEvent, EventOf<'VersionStarted' | 'VersionImported'>>): Version {
  switch (e.type) {
    case 'VersionCommitted':
      return { ...v, status: 'committed', valid: true, stats: e.stats };
    case 'VersionFailed':
      return { ...v, status: 'failed', valid: false };
    case 'VersionResumed':
      return { ...v, status: 'pending', valid: false, host: e.host, startedAt: e.at };
    case 'VersionRemoved':
      return { ...v, status: 'removed' };
    case 'VersionProtected':
      return { ...v, protected: true };
    case 'VersionUnprotected':
      return { ...v, protected: false };
    case 'TagsAdded':
      return { ...v, tags: unique([...v.tags, ...e.tags]).sort() };
    case 'TagsRemoved':
      return { ...v, tags: v.tags.filter((t) => !e.tags.includes(t)) };
    case 'ExpirySet':
      return { ...v, expire: e.expire };
    case 'ScrubCompleted':
      // A clean scrub (even a partial one, as backy2) makes the version valid again.
      return { ...v, valid: e.failed.length === 0 };
  }
}

function requireVersion(state: Version | undefined, uid: string): Version {
  if (!state) throw notFound(`Version ${uid} not found`);
  return state;
}

const unique = (xs: string[]) => [...new Set(xs)];

/** When the version's current run (backup, resume, import) started, in ms. */
export const runStartedAt = (v: Version): number => Date.parse(v.startedAt ?? v.date);

function withoutType<T extends { type: string }>(cmd: T): Omit<T, 'type'> {
  const { type: _type, ...rest } = cmd;
  return rest;
}

/** backy2's automatic tags when `-t` is not given: b_daily / b_weekly / b_monthly since the last such tag. */
export function autoTags(name: string, versions: Version[], now: Date): string[] {
  const lastWith = (tag: string) =>
    versions
      .filter((v) => v.name === name && v.status === 'committed' && v.tags.includes(tag))
      .reduce<number | null>((max, v) => Math.max(max ?? 0, Date.parse(v.date)), null);
  const tags: string[] = [];
  const daily = lastWith('b_daily');
  if (daily === null || now.getTime() - daily >= DAY_MS) tags.push('b_daily');
  const weekly = lastWith('b_weekly');
  if (weekly === null || now.getTime() - weekly >= 7 * DAY_MS) tags.push('b_weekly');
  const monthly = lastWith('b_monthly');
  if (monthly === null || addMonths(new Date(monthly), 1).getTime() <= now.getTime()) tags.push('b_monthly');
  return tags;
}

function addMonths(d: Date, n: number): Date {
  const r = new Date(d);
  r.setUTCMonth(r.getUTCMonth() + n);
  return r;
}
