import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { autoTags, decideVersion, evolveVersion, type DecideContext, type Policy, type VersionCommand } from '../../shared/domain/version.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { DomainEvent, EventOf, VersionEvent } from '../../shared/domain/events.ts';
import { DomainEventSchema } from '../../shared/domain/events.ts';
import { parse } from '../../shared/domain/schema.ts';
import type { Version, VersionStats } from '../../shared/domain/types.ts';

/**
 * The version decider, given / when / then: the history of a version (events) is folded with
 * evolve into its state; a command is decided against it at a given time; the outcome is either
 * the events it emits or the refusal with its exit code.
 */
const UID = '0190a2b4-1c2d-7e3f-8a4b-5c6d7e8f9a0b';
const BASE = '0190a2b4-1c2d-7e3f-8a4b-000000000001';
const T0 = new Date('2026-03-01T12:00:00.000Z');
const policy: Policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86_400 };
const stats: VersionStats = { bytesRead: 3 * 4096, bytesWritten: 100, blocksWritten: 1, blocksDedup: 1, blocksSparse: 1, durationSeconds: 2 };
const later = (ms: number) => new Date(T0.getTime() + ms);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const ID_A = 'a'.repeat(64);
const ID_B = 'b'.repeat(64);

const started = (over: Partial<EventOf<'VersionStarted'>> = {}): EventOf<'VersionStarted'> => ({
  type: 'VersionStarted',
  v: 1,
  uid: UID,
  name: 'vm1',
  snapshotName: 'snap',
  // 5 blocks of 4 KiB in chunks of 2 entries: 3 chunks.
  sizeBytes: 5 * 4096,
  blockSize: 4096,
  chunkEntries: 2,
  baseUid: null,
  tags: ['zeta', 'alpha'],
  expire: null,
  host: 'host1',
  at: T0.toISOString(),
  ...over,
});
const recorded = (chunk: number, uid = UID): EventOf<'BlocksRecorded'> => ({
  type: 'BlocksRecorded',
  v: 1,
  uid,
  chunk,
  entries: null,
  sameAs: null,
  newBlocks: [],
  at: T0.toISOString(),
});
const allRecorded = [recorded(0), recorded(1), recorded(2)];
const committed = (at = T0): EventOf<'VersionCommitted'> => ({ type: 'VersionCommitted', v: 1, uid: UID, stats, at: at.toISOString() });
const simple = <T extends 'VersionProtected' | 'VersionUnprotected'>(type: T) => ({ type, v: 1 as const, uid: UID, at: T0.toISOString() });
const aCommittedVersion: DomainEvent[] = [started(), ...allRecorded, committed()];

const fold = (events: DomainEvent[], from?: Version) => events.reduce<Version | undefined>(evolveVersion, from);

function scenario(given: DomainEvent[], ctx: Partial<DecideContext> = {}) {
  const state = fold(given);
  const context: DecideContext = { now: T0, policy, ...ctx };
  return {
    state,
    when(cmd: VersionCommand) {
      return {
        then(expected: Partial<VersionEvent>[]): VersionEvent[] {
          const events = decideVersion(cmd, state, context);
          expect(events).toHaveLength(expected.length);
          events.forEach((e, i) => {
            expect(e).toMatchObject(expected[i]!);
            // Every emitted event is valid at the boundary (the store parses it again).
            expect(parse(DomainEventSchema, e)).toEqual(e);
          });
          return events;
        },
        thenRefused(exitCode: ExitCode, message: RegExp): void {
          let thrown: unknown;
          try {
            decideVersion(cmd, state, context);
          } catch (e) {
            thrown = e;
          }
          expect(thrown, 'the command should be refused').toBeInstanceOf(Backy2Error);
          expect((thrown as Backy2Error).exitCode).toBe(exitCode);
          expect((thrown as Backy2Error).message).toMatch(message);
        },
      };
    },
  };
}

const startCmd = (over: Partial<Extract<VersionCommand, { type: 'StartVersion' }>> = {}): VersionCommand => ({
  type: 'StartVersion',
  uid: UID,
  name: 'vm1',
  snapshotName: 'snap',
  sizeBytes: 5 * 4096,
  blockSize: 4096,
  chunkEntries: 2,
  baseUid: null,
  tags: ['alpha'],
  expire: null,
  host: 'host1',
  ...over,
});
const baseVersion = (over: Partial<Version> = {}): Version => ({
  ...fold([started({ uid: BASE }), ...[0, 1, 2].map((c) => recorded(c, BASE))])!,
  status: 'committed',
  valid: true,
  ...over,
});

describe('decideVersion: StartVersion', () => {
  it('starts a new version with the time of the decision', () => {
    scenario([])
      .when(startCmd())
      .then([{ type: 'VersionStarted', uid: UID, name: 'vm1', at: T0.toISOString(), baseUid: null }]);
  });
  it('refuses a uid that already exists (4)', () => {
    scenario([started()])
      .when(startCmd())
      .thenRefused(ExitCode.refused, /already exists/);
  });
  it('starts an incremental backup from a committed, valid base of the same block size', () => {
    scenario([], { base: baseVersion() })
      .when(startCmd({ baseUid: BASE }))
      .then([{ type: 'VersionStarted', baseUid: BASE }]);
  });
  it('refuses a base that is missing (3), not committed (3), invalid (4) or of another block size (4)', () => {
    scenario([])
      .when(startCmd({ baseUid: BASE }))
      .thenRefused(ExitCode.notFound, /not found or not committed/);
    scenario([], { base: baseVersion({ status: 'pending' }) })
      .when(startCmd({ baseUid: BASE }))
      .thenRefused(ExitCode.notFound, /not committed/);
    scenario([], { base: baseVersion({ status: 'removed' }) })
      .when(startCmd({ baseUid: BASE }))
      .thenRefused(ExitCode.notFound, /not committed/);
    scenario([], { base: baseVersion({ valid: false }) })
      .when(startCmd({ baseUid: BASE }))
      .thenRefused(ExitCode.refused, /invalid/);
    scenario([], { base: baseVersion({ blockSize: 8192 }) })
      .when(startCmd({ baseUid: BASE }))
      .thenRefused(ExitCode.refused, /block size 8192/);
  });
});

describe('decideVersion: CommitVersion', () => {
  it('is refused (4) until every block-map chunk is recorded', () => {
    scenario([started()])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .thenRefused(ExitCode.refused, /0\/3 block map chunks/);
    scenario([started(), recorded(0), recorded(2)])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .thenRefused(ExitCode.refused, /2\/3 block map chunks/);
  });
  it('is accepted once every chunk is recorded, in any order', () => {
    scenario([started(), recorded(2), recorded(0), recorded(1)])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .then([{ type: 'VersionCommitted', uid: UID, stats }]);
  });
  it('an empty source (no blocks) commits at once', () => {
    scenario([started({ sizeBytes: 0 })])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .then([{ type: 'VersionCommitted' }]);
  });
  it('a retried commit of a committed version is a no-op', () => {
    scenario(aCommittedVersion).when({ type: 'CommitVersion', uid: UID, stats }).then([]);
  });
  it('a late commit after the maximum backup age is refused (4) and says why', () => {
    const given = scenario([started(), ...allRecorded], { now: later(policy.maxBackupAgeSeconds * 1000 + 1) });
    given.when({ type: 'CommitVersion', uid: UID, stats }).thenRefused(ExitCode.refused, /started more than 86400 s ago; its commit is refused/);
    // Just inside the limit it is still accepted.
    scenario([started(), ...allRecorded], { now: later(policy.maxBackupAgeSeconds * 1000) })
      .when({ type: 'CommitVersion', uid: UID, stats })
      .then([{ type: 'VersionCommitted' }]);
  });
  it('a failed or removed version cannot be committed (4)', () => {
    const failed: EventOf<'VersionFailed'> = { type: 'VersionFailed', v: 1, uid: UID, reason: 'too old', at: T0.toISOString() };
    scenario([started(), ...allRecorded, failed])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .thenRefused(ExitCode.refused, /is failed; its commit is refused/);
    const removed: EventOf<'VersionRemoved'> = { type: 'VersionRemoved', v: 1, uid: UID, forced: true, at: T0.toISOString() };
    scenario([started(), removed])
      .when({ type: 'CommitVersion', uid: UID, stats })
      .thenRefused(ExitCode.refused, /is removed/);
  });
  it('an unknown version is not found (3) for every command but StartVersion', () => {
    const commands: VersionCommand[] = [
      { type: 'CommitVersion', uid: UID, stats },
      { type: 'FailVersion', uid: UID, reason: 'x' },
      { type: 'RemoveVersion', uid: UID, force: true },
      { type: 'ProtectVersion', uid: UID },
      { type: 'UnprotectVersion', uid: UID },
      { type: 'AddTags', uid: UID, tags: ['a'] },
      { type: 'RemoveTags', uid: UID, tags: ['a'] },
      { type: 'SetExpiry', uid: UID, expire: null },
      { type: 'RecordScrub', uid: UID, verified: [], failed: [], complete: true },
    ];
    for (const cmd of commands)
      scenario([])
        .when(cmd)
        .thenRefused(ExitCode.notFound, /not found/);
  });
});

describe('decideVersion: FailVersion', () => {
  it('fails a pending version and is a no-op otherwise', () => {
    scenario([started()])
      .when({ type: 'FailVersion', uid: UID, reason: 'source shrank' })
      .then([{ type: 'VersionFailed', reason: 'source shrank' }]);
    scenario(aCommittedVersion).when({ type: 'FailVersion', uid: UID, reason: 'late' }).then([]);
  });
});

describe('decideVersion: RemoveVersion', () => {
  const old = later(7 * DAY);
  it('removes a committed version older than disallow_rm_when_younger_than_days', () => {
    scenario(aCommittedVersion, { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .then([{ type: 'VersionRemoved', forced: false, at: old.toISOString() }]);
  });
  it('refuses a version that is too young (4) unless forced', () => {
    scenario(aCommittedVersion, { now: later(5 * DAY) })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .thenRefused(ExitCode.refused, /too young/);
    scenario(aCommittedVersion, { now: later(5 * DAY) })
      .when({ type: 'RemoveVersion', uid: UID, force: true })
      .then([{ type: 'VersionRemoved', forced: true }]);
    // The boundary: exactly minAgeDaysForRm old is old enough.
    scenario(aCommittedVersion, { now: later(6 * DAY) })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .then([{ type: 'VersionRemoved' }]);
  });
  it('minAgeDaysForRm 0 allows removing a fresh version', () => {
    scenario(aCommittedVersion, { policy: { ...policy, minAgeDaysForRm: 0 } })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .then([{ type: 'VersionRemoved' }]);
  });
  it('refuses a protected version (4), even forced', () => {
    const given = [...aCommittedVersion, simple('VersionProtected')];
    scenario(given, { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .thenRefused(ExitCode.refused, /is protected. Will not delete/);
    scenario(given, { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: true })
      .thenRefused(ExitCode.refused, /is protected/);
    scenario([...given, simple('VersionUnprotected')], { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .then([{ type: 'VersionRemoved' }]);
  });
  it('refuses a backup in progress (4) unless forced', () => {
    scenario([started()], { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .thenRefused(ExitCode.refused, /backup in progress/);
    scenario([started()])
      .when({ type: 'RemoveVersion', uid: UID, force: true })
      .then([{ type: 'VersionRemoved', forced: true }]);
  });
  it('a removed version is not found (3) the second time', () => {
    const removed: EventOf<'VersionRemoved'> = { type: 'VersionRemoved', v: 1, uid: UID, forced: true, at: T0.toISOString() };
    scenario([...aCommittedVersion, removed], { now: old })
      .when({ type: 'RemoveVersion', uid: UID, force: true })
      .thenRefused(ExitCode.notFound, /not found/);
  });
  it('a failed version can be removed without force', () => {
    const failed: EventOf<'VersionFailed'> = { type: 'VersionFailed', v: 1, uid: UID, reason: 'x', at: T0.toISOString() };
    scenario([started(), failed])
      .when({ type: 'RemoveVersion', uid: UID, force: false })
      .then([{ type: 'VersionRemoved' }]);
  });
});

describe('decideVersion: protect / unprotect', () => {
  it('protects once; protecting twice is refused (4)', () => {
    scenario(aCommittedVersion)
      .when({ type: 'ProtectVersion', uid: UID })
      .then([{ type: 'VersionProtected', uid: UID }]);
    scenario([...aCommittedVersion, simple('VersionProtected')])
      .when({ type: 'ProtectVersion', uid: UID })
      .thenRefused(ExitCode.refused, /already protected/);
  });
  it('unprotects a protected version; unprotecting an unprotected one is refused (4)', () => {
    scenario([...aCommittedVersion, simple('VersionProtected')])
      .when({ type: 'UnprotectVersion', uid: UID })
      .then([{ type: 'VersionUnprotected' }]);
    scenario(aCommittedVersion)
      .when({ type: 'UnprotectVersion', uid: UID })
      .thenRefused(ExitCode.refused, /not protected/);
  });
});

describe('decideVersion: tags and expiry', () => {
  it('adds only tags the version does not have, each once', () => {
    scenario(aCommittedVersion)
      .when({ type: 'AddTags', uid: UID, tags: ['alpha', 'beta', 'beta', 'gamma'] })
      .then([{ type: 'TagsAdded', tags: ['beta', 'gamma'] }]);
  });
  it('adding tags the version already has emits nothing (idempotent)', () => {
    scenario(aCommittedVersion)
      .when({ type: 'AddTags', uid: UID, tags: ['alpha', 'zeta'] })
      .then([]);
    const given = scenario(aCommittedVersion);
    const events = given.when({ type: 'AddTags', uid: UID, tags: ['beta'] }).then([{ type: 'TagsAdded' }]);
    scenario([...aCommittedVersion, ...events])
      .when({ type: 'AddTags', uid: UID, tags: ['beta'] })
      .then([]);
  });
  it('removes only tags the version has; removing absent tags emits nothing', () => {
    scenario(aCommittedVersion)
      .when({ type: 'RemoveTags', uid: UID, tags: ['alpha', 'nope', 'alpha'] })
      .then([{ type: 'TagsRemoved', tags: ['alpha'] }]);
    scenario(aCommittedVersion)
      .when({ type: 'RemoveTags', uid: UID, tags: ['nope'] })
      .then([]);
  });
  it('sets and clears the expiry; a malformed one is a usage error (1)', () => {
    scenario(aCommittedVersion)
      .when({ type: 'SetExpiry', uid: UID, expire: '2026-04-01T00:00:00.000Z' })
      .then([{ type: 'ExpirySet', expire: '2026-04-01T00:00:00.000Z' }]);
    scenario(aCommittedVersion)
      .when({ type: 'SetExpiry', uid: UID, expire: null })
      .then([{ type: 'ExpirySet', expire: null }]);
    scenario(aCommittedVersion)
      .when({ type: 'SetExpiry', uid: UID, expire: 'next tuesday' })
      .thenRefused(ExitCode.usage, /Invalid expiry/);
  });
});

describe('decideVersion: RecordScrub', () => {
  const failedScrub: EventOf<'ScrubCompleted'> = {
    type: 'ScrubCompleted',
    v: 1,
    uid: UID,
    verified: [ID_A],
    failed: [{ id: ID_B, reason: 'Blob not found' }],
    complete: true,
    at: T0.toISOString(),
  };
  it('a scrub with failures makes the version invalid', () => {
    const events = scenario(aCommittedVersion)
      .when({ type: 'RecordScrub', uid: UID, verified: [ID_A], failed: [{ id: ID_B, reason: 'Blob not found' }], complete: true })
      .then([{ type: 'ScrubCompleted', failed: [{ id: ID_B, reason: 'Blob not found' }] }]);
    expect(fold(events, fold(aCommittedVersion))?.valid).toBe(false);
  });
  it('a later clean scrub (even a partial one) makes it valid again', () => {
    const given = [...aCommittedVersion, failedScrub];
    expect(fold(given)?.valid).toBe(false);
    const events = scenario(given)
      .when({ type: 'RecordScrub', uid: UID, verified: [ID_B], failed: [], complete: false })
      .then([{ type: 'ScrubCompleted', complete: false }]);
    expect(fold(events, fold(given))?.valid).toBe(true);
  });
  it('only committed versions are scrubbed (4)', () => {
    scenario([started()])
      .when({ type: 'RecordScrub', uid: UID, verified: [], failed: [], complete: true })
      .thenRefused(ExitCode.refused, /only committed versions are scrubbed/);
  });
});

describe('evolveVersion', () => {
  it('folds a history into the projection', () => {
    const v = fold(aCommittedVersion)!;
    expect(v).toMatchObject({
      uid: UID,
      name: 'vm1',
      snapshotName: 'snap',
      date: T0.toISOString(),
      sizeBytes: 5 * 4096,
      blockCount: 5,
      chunkCount: 3,
      recordedChunks: 3,
      status: 'committed',
      valid: true,
      protected: false,
      tags: ['alpha', 'zeta'],
      stats,
      // VersionStarted is seq 1; block records do not advance the lifecycle stream; the commit is seq 2.
      seq: 2,
    });
  });
  it('a pending version is not valid; a failed one stays invalid', () => {
    expect(fold([started()])).toMatchObject({ status: 'pending', valid: false, seq: 1, recordedChunks: 0 });
    expect(fold([started(), { type: 'VersionFailed', v: 1, uid: UID, reason: 'x', at: T0.toISOString() }])).toMatchObject({
      status: 'failed',
      valid: false,
      seq: 2,
    });
  });
  it('a second VersionStarted for the same uid changes nothing', () => {
    const v = fold([started()]);
    expect(evolveVersion(v, started({ name: 'other' }))).toBe(v);
  });
  it('events of another version and block-index events leave the state unchanged', () => {
    const v = fold(aCommittedVersion);
    expect(evolveVersion(v, { ...simple('VersionProtected'), uid: BASE })).toBe(v);
    expect(evolveVersion(v, recorded(0, BASE))).toBe(v);
    expect(evolveVersion(v, { type: 'BlocksMarkedUnreferenced', v: 1, ids: [ID_A], at: T0.toISOString() })).toBe(v);
    expect(evolveVersion(v, { type: 'BlocksDeleted', v: 1, ids: [ID_A], at: T0.toISOString() })).toBe(v);
    expect(evolveVersion(undefined, simple('VersionProtected'))).toBeUndefined();
  });
  it('tags stay sorted and unique; removal removes exactly the named ones; expiry follows ExpirySet', () => {
    const v = fold([
      ...aCommittedVersion,
      { type: 'TagsAdded', v: 1, uid: UID, tags: ['mid', 'alpha'], at: T0.toISOString() },
      { type: 'TagsRemoved', v: 1, uid: UID, tags: ['zeta'], at: T0.toISOString() },
      { type: 'ExpirySet', v: 1, uid: UID, expire: '2027-01-01T00:00:00.000Z', at: T0.toISOString() },
    ])!;
    expect(v.tags).toEqual(['alpha', 'mid']);
    expect(v.expire).toBe('2027-01-01T00:00:00.000Z');
    expect(v.seq).toBe(5);
  });
  it('does not mutate the state it is given', () => {
    const v = fold([started()])!;
    const copy = structuredClone(v);
    fold([recorded(0), recorded(1), recorded(2), committed(), simple('VersionProtected')], v);
    expect(v).toEqual(copy);
  });
});

describe('decide ∘ evolve, property-based', () => {
  const cmdArb: fc.Arbitrary<VersionCommand> = fc.oneof(
    fc.constant<VersionCommand>({ type: 'CommitVersion', uid: UID, stats }),
    fc.constant<VersionCommand>({ type: 'FailVersion', uid: UID, reason: 'r' }),
    fc.boolean().map<VersionCommand>((force) => ({ type: 'RemoveVersion', uid: UID, force })),
    fc.constant<VersionCommand>({ type: 'ProtectVersion', uid: UID }),
    fc.constant<VersionCommand>({ type: 'UnprotectVersion', uid: UID }),
    fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 3 }).map<VersionCommand>((tags) => ({ type: 'AddTags', uid: UID, tags })),
    fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 3 }).map<VersionCommand>((tags) => ({ type: 'RemoveTags', uid: UID, tags })),
    fc
      .boolean()
      .map<VersionCommand>((fail) => ({ type: 'RecordScrub', uid: UID, verified: [ID_A], failed: fail ? [{ id: ID_B, reason: 'bad' }] : [], complete: true })),
  );
  const stepArb = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('cmd' as const), cmd: cmdArb, afterMs: fc.integer({ min: 0, max: 8 * DAY }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('record' as const), chunk: fc.integer({ min: 0, max: 2 }) }) },
  );

  it('refusals are Backy2Errors with user-facing codes, and accepted events keep the lifecycle monotonic', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 30 }), (steps) => {
        let state = fold([started()])!;
        const recordedChunks = new Set<number>();
        for (const step of steps) {
          if (step.kind === 'record') {
            // The store rejects duplicate chunk records; only new ones reach evolve.
            if (recordedChunks.has(step.chunk) || state.status !== 'pending') continue;
            recordedChunks.add(step.chunk);
            state = evolveVersion(state, recorded(step.chunk))!;
            continue;
          }
          const before = state;
          let events: VersionEvent[];
          try {
            events = decideVersion(step.cmd, state, { now: later(step.afterMs), policy });
          } catch (e) {
            expect(e).toBeInstanceOf(Backy2Error);
            expect([ExitCode.usage, ExitCode.notFound, ExitCode.refused]).toContain((e as Backy2Error).exitCode);
            continue;
          }
          state = events.reduce<Version | undefined>(evolveVersion, state)!;
          expect(state.seq).toBe(before.seq + events.length);
          // Never out of removed; never back to pending; committed only with every chunk recorded.
          if (before.status === 'removed') expect(state.status).toBe('removed');
          if (before.status !== 'pending') expect(state.status).not.toBe('pending');
          if (state.status === 'committed' && before.status !== 'committed') expect(state.recordedChunks).toBe(state.chunkCount);
          if (before.protected && state.status === 'removed') expect(before.status).toBe('removed');
          expect(new Set(state.tags).size).toBe(state.tags.length);
          expect([...state.tags].sort()).toEqual(state.tags);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('autoTags', () => {
  const v = (date: Date, tags: string[], over: Partial<Version> = {}): Version => ({ ...fold(aCommittedVersion)!, date: date.toISOString(), tags, ...over });
  const all = ['b_daily', 'b_weekly', 'b_monthly'];

  it('the first backup of a name gets daily, weekly and monthly', () => {
    expect(autoTags('vm1', [], T0)).toEqual(all);
  });
  it('within a day of the last tagged backup, none', () => {
    expect(autoTags('vm1', [v(T0, all)], later(23 * HOUR))).toEqual([]);
  });
  it('a day later, daily only; a week later, daily and weekly; a month later, all three', () => {
    expect(autoTags('vm1', [v(T0, all)], later(DAY))).toEqual(['b_daily']);
    expect(autoTags('vm1', [v(T0, all)], later(7 * DAY))).toEqual(['b_daily', 'b_weekly']);
    // T0 is 1 March: a month later is 1 April (31 days), not 30 days.
    expect(autoTags('vm1', [v(T0, all)], later(30 * DAY))).toEqual(['b_daily', 'b_weekly']);
    expect(autoTags('vm1', [v(T0, all)], later(31 * DAY))).toEqual(all);
  });
  it('each tag counts from the last version carrying it', () => {
    const versions = [v(T0, all), v(later(3 * DAY), ['b_daily'])];
    expect(autoTags('vm1', versions, later(3 * DAY + 2 * HOUR))).toEqual([]);
    expect(autoTags('vm1', versions, later(7 * DAY))).toEqual(['b_daily', 'b_weekly']);
  });
  it('ignores other names, and versions that are not committed', () => {
    expect(autoTags('vm1', [v(T0, all, { name: 'vm2' })], later(HOUR))).toEqual(all);
    expect(autoTags('vm1', [v(T0, all, { status: 'removed' })], later(HOUR))).toEqual(all);
    expect(autoTags('vm1', [v(T0, all, { status: 'failed' })], later(HOUR))).toEqual(all);
    expect(autoTags('vm1', [v(T0, all, { status: 'pending' })], later(HOUR))).toEqual(all);
  });
});
