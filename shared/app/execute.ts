import { decideVersion, evolveVersion, type Policy, type VersionCommand } from '../domain/version.ts';
import { Backy2Error, ExitCode, usageError } from '../domain/errors.ts';
import { DomainEventSchema, type VersionEvent } from '../domain/events.ts';
import { check } from '../domain/schema.ts';
import type { Version } from '../domain/types.ts';
import { ConcurrencyError, type MetadataStore } from '../ports/metadata-store.ts';

/**
 * Decides a command against the version's current state and appends the resulting events
 * with optimistic concurrency; on a concurrent change it re-reads and decides again.
 * Used in-process by the embedded backend and by the cloud `api` function.
 */
export async function executeVersionCommand(store: MetadataStore, cmd: VersionCommand, policy: Policy, now: () => Date = () => new Date()): Promise<Version> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const state = await store.getVersion(cmd.uid);
    const base = cmd.type === 'StartVersion' && cmd.baseUid ? await store.getVersion(cmd.baseUid) : undefined;
    const events = decideVersion(cmd, state, { now: now(), policy, base }).map(validated);
    if (events.length === 0) return state!;
    const next = events.reduce<Version | undefined>(evolveVersion, state)!;
    try {
      await store.appendVersionEvents(state?.seq ?? 0, events, next);
      return next;
    } catch (e) {
      if (!(e instanceof ConcurrencyError)) throw e;
    }
  }
  throw new Backy2Error(ExitCode.unexpected, `Version ${cmd.uid} kept changing concurrently; gave up`);
}

/**
 * Events are validated before they are appended: an event the schema refuses (an empty backup
 * name, a tag too long, …) would otherwise sit in the log and make every later replay fail.
 */
function validated(event: VersionEvent): VersionEvent {
  const result = check(DomainEventSchema, event);
  if (result.success) return event;
  const { issue } = result;
  const field = issue.path.join('.');
  throw usageError(`Invalid ${event.type}${field ? ` ${field}` : ''}: ${issue.message}`);
}
