import type { EventOf, VersionEvent } from '../domain/events.ts';
import { evolveVersion } from '../domain/version.ts';
import type { StoredBlock, Version } from '../domain/types.ts';
import { ConcurrencyError, type MetadataStore } from '../ports/metadata-store.ts';
import { Backy2Error, ExitCode } from '../domain/errors.ts';
import { journalKeys, type Journal } from './journal.ts';

/**
 * A new stream whose first slot is taken: uids of backups are random, so this is an import of a
 * uid the storage's journal already holds — the metadata store lost it (recover), or the storage
 * was copied with its journal from another repository.
 */
function journaledElsewhere(event: VersionEvent): Backy2Error {
  const where = journalKeys.version(event.uid, 1);
  return new Backy2Error(
    event.type === 'VersionImported' ? ExitCode.importExists : ExitCode.refused,
    `Version ${event.uid} is already in this storage's journal (${where}) but not in the metadata store: its metadata was lost (run "backy2 recover") or the storage was copied with another repository's journal`,
  );
}

/**
 * A metadata store that writes the journal (journal.ts) before each change it must survive the
 * loss of the metadata: version lifecycle events, block-map chunks, rekeyed blocks. Every writer
 * of those goes through it, so the journal is a write-ahead log of the version streams:
 *
 * - A version event takes its journal slot `journal/<uid>/v<seq>` with If-None-Match first; the
 *   slot is the lock on that sequence number. A writer that finds the slot taken while the store
 *   is still one event behind (the winner crashed, or has not appended yet) appends the journaled
 *   event itself (roll forward) and decides again: the store never holds an event at a sequence
 *   number whose journal slot holds another.
 * - A writer whose append then meets a concurrent change finds its own event applied (rolled
 *   forward by someone else) and is done.
 * - A chunk record is journaled first; if the slot already holds a record (a retried or resumed
 *   run), the journaled record is the one projected.
 *
 * Block-index marks, claims, deletions and touches are not journaled: `recover` derives the index
 * from the journaled chunks and the objects actually stored.
 */
export class JournaledMetadataStore implements Pick<MetadataStore, 'appendVersionEvents' | 'recordChunk' | 'rekeyBlocks'> {
  readonly inner: MetadataStore;
  readonly journal: Journal;

  constructor(inner: MetadataStore, journal: Journal) {
    this.inner = inner;
    this.journal = journal;
  }

  async appendVersionEvents(expectedSeq: number, events: VersionEvent[], next: Version): Promise<void> {
    let seq = expectedSeq;
    for (const event of events) {
      seq++;
      if (!(await this.journal.appendVersionEvent(seq, event))) {
        if (seq === 1) throw journaledElsewhere(event);
        await this.rollForward(next.uid, seq);
        throw new ConcurrencyError(`version ${next.uid}: journal slot ${seq} is taken`);
      }
    }
    try {
      await this.inner.appendVersionEvents(expectedSeq, events, next);
    } catch (e) {
      if (!(e instanceof ConcurrencyError)) throw e;
      // We hold the journal slots, so whoever appended at those sequence numbers appended our events.
      const now = await this.inner.getVersion(next.uid);
      if (!now || now.seq < seq) throw e;
    }
  }

  /** Appends the journaled event at `seq` if the store is still just before it. */
  private async rollForward(uid: string, seq: number): Promise<void> {
    const state = await this.inner.getVersion(uid);
    if ((state?.seq ?? 0) !== seq - 1) return;
    const event = (await this.journal.read(journalKeys.version(uid, seq))) as VersionEvent | null;
    if (!event || event.uid !== uid) return;
    const next = evolveVersion(state, event);
    if (!next) return;
    try {
      await this.inner.appendVersionEvents(seq - 1, [event], next);
    } catch (e) {
      if (!(e instanceof ConcurrencyError)) throw e;
    }
  }

  async recordChunk(event: EventOf<'BlocksRecorded'>): Promise<boolean> {
    if (await this.journal.appendChunk(event)) return this.inner.recordChunk(event);
    const journaled = await this.journal.read(journalKeys.chunk(event.uid, event.chunk)).catch(() => null);
    return this.inner.recordChunk(journaled?.type === 'BlocksRecorded' && journaled.uid === event.uid && journaled.chunk === event.chunk ? journaled : event);
  }

  async rekeyBlocks(blocks: StoredBlock[], at: string): Promise<void> {
    if (!blocks.length) return;
    await this.journal.append(journalKeys.index(at), { type: 'BlocksRekeyed', v: 1, blocks, at });
    await this.inner.rekeyBlocks(blocks, at);
  }
}

/**
 * `inner` with the journaled writes of JournaledMetadataStore; every other method of the port
 * (reads, block-index marks, leases, whatever the port grows) goes to `inner` unchanged.
 */
export function journaled(inner: MetadataStore, journal: Journal): MetadataStore {
  const writer = new JournaledMetadataStore(inner, journal);
  const own = new Set<PropertyKey>(['appendVersionEvents', 'recordChunk', 'rekeyBlocks']);
  return new Proxy(inner, {
    get(target, prop) {
      if (own.has(prop)) return (writer[prop as 'recordChunk'] as (...a: unknown[]) => unknown).bind(writer);
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
