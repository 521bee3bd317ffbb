import pLimit from 'p-limit';
import { blockKey, storedChecksum } from '../blocks/codec.ts';
import { holdsBlocks } from '../domain/cleanup.ts';
import { integrityError } from '../domain/errors.ts';
import type { DomainEvent, EventOf, VersionEvent } from '../domain/events.ts';
import type { BlockId, StoredBlock, Version } from '../domain/types.ts';
import { evolveVersion } from '../domain/version.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { recordedIds, referencedIds } from './block-map.ts';
import { JournalEntryError, parseJournalKey, type Journal, type JournalSlot } from './journal.ts';

/**
 * `recover`: rebuilds the metadata from the journal (journal.ts) and the stored objects.
 *  1. read and verify every journal entry (nothing is written before this; a wrong key stops here);
 *  2. replay the verified events, in the order they happened, through the store's normal appends
 *     (lifecycle events folded with evolveVersion, chunks through recordChunk), so the projections
 *     are what the same events made before; events already in the store are skipped, which makes a
 *     killed recover resumable and lets a store restored from an older copy catch up;
 *  3. make the block index describe what is stored: entries whose object is gone (deleted by a
 *     cleanup) and that no version needs are dropped through the normal mark/claim/delete events;
 *     blocks a version needs that no journaled chunk indexed (found already stored by a backup)
 *     are indexed from their object, as that backup's touch did.
 */
export interface JournalProblem {
  key: string;
  reason: string;
}

interface Item {
  slot: JournalSlot;
  event: DomainEvent;
  /** Replay order: when it happened, then a rank that keeps chunks inside their run, then the key. */
  order: [string, number, string];
}

export interface RecoverPlan {
  /** Journal objects found. */
  entries: number;
  items: Item[];
  /** Versions with at least one verified lifecycle event, as the journal leaves them. */
  versions: Version[];
  problems: JournalProblem[];
}

export interface ReplayReport {
  applied: number;
  skipped: number;
  indexed: number;
  dropped: number;
  /** Blocks a recovered version references that are not stored (lost before the recover). */
  missing: { id: BlockId; versions: string[] }[];
}

const compareOrder = (a: Item, b: Item) => cmp(a.order[0], b.order[0]) || a.order[1] - b.order[1] || cmp(a.order[2], b.order[2]);
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Steps 1 and the ordering of 2: reads everything, writes nothing. Throws exit 7 when no entry opens with this key. */
export async function readJournal(journal: Journal, opts: { concurrency: number; progress?: (done: number, total: number) => void }): Promise<RecoverPlan> {
  const problems: JournalProblem[] = [];
  const slots: JournalSlot[] = [];
  for await (const key of journal.list()) {
    const slot = parseJournalKey(key);
    if (slot) slots.push(slot);
    else problems.push({ key, reason: 'not a journal entry name; ignored' });
  }
  const limit = pLimit(opts.concurrency);
  let done = 0;
  const read = await Promise.all(
    slots.map((slot) =>
      limit(async () => {
        try {
          const event = await journal.read(slot.key);
          return event ? { slot, event } : { slot, error: 'vanished while recover read it' };
        } catch (e) {
          if (e instanceof JournalEntryError) return { slot, error: e.message };
          throw e;
        } finally {
          opts.progress?.(++done, slots.length);
        }
      }),
    ),
  );
  const opened = read.filter((r): r is { slot: JournalSlot; event: DomainEvent } => 'event' in r);
  if (slots.length && !opened.length)
    throw integrityError(`Wrong encryption key: none of the ${slots.length} journal entries in the storage opens with the configured key; nothing was written`);
  for (const r of read) if ('error' in r) problems.push({ key: r.slot.key, reason: r.error! });

  const byUid = new Map<string, { versions: Map<number, VersionEvent>; chunks: { slot: JournalSlot; event: EventOf<'BlocksRecorded'> }[] }>();
  const streamOf = (uid: string) => {
    let s = byUid.get(uid);
    if (!s) {
      s = { versions: new Map(), chunks: [] };
      byUid.set(uid, s);
    }
    return s;
  };
  const failedSlots = new Set(read.filter((r) => 'error' in r).map((r) => r.slot.key));
  const items: Item[] = [];
  for (const { slot, event } of opened) {
    if (slot.kind === 'index') {
      if (event.type === 'BlocksRekeyed') items.push({ slot, event, order: [event.at, 1, slot.key] });
      else problems.push({ key: slot.key, reason: `holds a ${event.type}, not a block-index event; refused` });
    } else if (!('uid' in event) || event.uid !== slot.uid) {
      problems.push({ key: slot.key, reason: `holds an event of another version; refused` });
    } else if (slot.kind === 'chunk') {
      if (event.type === 'BlocksRecorded' && event.chunk === slot.n) streamOf(slot.uid).chunks.push({ slot, event });
      else problems.push({ key: slot.key, reason: `holds a ${event.type} for another chunk; refused` });
    } else if (event.type === 'BlocksRecorded' || !isVersionEvent(event)) {
      problems.push({ key: slot.key, reason: `holds a ${event.type}, not a lifecycle event; refused` });
    } else streamOf(slot.uid).versions.set(slot.n, event);
  }
  // Make sure every version stream with a refused slot is seen, even if nothing of it opened.
  for (const key of failedSlots) {
    const slot = parseJournalKey(key);
    if (slot && slot.kind !== 'index') streamOf(slot.uid);
  }

  const versions: Version[] = [];
  for (const [uid, stream] of [...byUid.entries()].sort(([a], [b]) => cmp(a, b))) {
    // A stream is replayed up to its first gap or refused entry: later events depend on it.
    const last = Math.max(
      0,
      ...stream.versions.keys(),
      ...[...failedSlots]
        .map(parseJournalKey)
        .filter((s) => s?.kind === 'version' && s.uid === uid)
        .map((s) => (s as { n: number }).n),
    );
    let state: Version | undefined;
    let prev: Item | undefined;
    const run: Item[] = [];
    for (let seq = 1; seq <= last; seq++) {
      const event = stream.versions.get(seq);
      const key = `journal/${uid}/v${String(seq).padStart(10, '0')}`;
      if (!event || !startsRight(event, seq) || evolveVersion(state, event) === state) {
        if (!failedSlots.has(key))
          problems.push({ key, reason: !event ? 'missing (a gap in the version stream)' : `a ${event.type} cannot be event ${seq} of the version; refused` });
        for (let later = seq + 1; later <= last; later++)
          if (stream.versions.has(later))
            problems.push({
              key: `journal/${uid}/v${String(later).padStart(10, '0')}`,
              reason: `follows a refused or missing entry (seq ${seq}); not applied`,
            });
        break;
      }
      state = evolveVersion(state, event);
      const natural: Item['order'] = [event.at, 1, key];
      // Keep the stream's order even if a clock went backwards between two of its events.
      const order: Item['order'] = prev && compareOrder({ order: natural } as Item, prev) < 0 ? [prev.order[0], prev.order[1], key] : natural;
      prev = { slot: { kind: 'version', uid, n: seq, key }, event, order };
      run.push(prev);
    }
    if (!state) {
      for (const c of stream.chunks) problems.push({ key: c.slot.key, reason: 'its version has no verified start; not applied' });
      continue;
    }
    versions.push(state);
    items.push(...run);
    for (const c of stream.chunks) items.push({ slot: c.slot, event: c.event, order: chunkOrder(c.event, c.slot.key, run) });
  }
  items.sort(compareOrder);
  return { entries: slots.length, items, versions, problems };
}

/**
 * A chunk is recorded while its run is pending: after the start (or resume) before it and before
 * the commit (or failure, removal) after it, whatever the clocks of the agent and the api said.
 */
function chunkOrder(event: EventOf<'BlocksRecorded'>, key: string, run: Item[]): Item['order'] {
  const start =
    [...run]
      .reverse()
      .find((i) => (i.event.type === 'VersionStarted' || i.event.type === 'VersionImported' || i.event.type === 'VersionResumed') && i.event.at <= event.at) ??
    run[0]!;
  const end = run.find((i) => compareOrder(i, start) > 0 && ['VersionCommitted', 'VersionFailed', 'VersionRemoved'].includes(i.event.type));
  if (compareOrder({ order: [event.at, 1, key] } as Item, start) <= 0) return [start.order[0], start.order[1] + 0.5, key];
  if (end && compareOrder({ order: [event.at, 1, key] } as Item, end) >= 0) return [end.order[0], end.order[1] - 0.5, key];
  return [event.at, 1, key];
}

const isVersionEvent = (e: DomainEvent): e is VersionEvent =>
  !['BlocksRecorded', 'BlocksMarkedUnreferenced', 'BlocksReferenced', 'BlocksDeletionClaimed', 'BlocksDeleted', 'BlocksRekeyed'].includes(e.type);
const startsRight = (e: VersionEvent, seq: number) => (seq === 1) === (e.type === 'VersionStarted' || e.type === 'VersionImported');

export interface ReplayOptions {
  progress?: (done: number, total: number) => void;
  /**
   * Block-index events (rekeys) cannot tell whether they were applied: a resumed recover skips
   * those up to the last one it recorded as applied, and records each one it applies.
   */
  lastIndexEvent?: string | null;
  indexEventApplied?: (key: string) => Promise<void>;
}

/** Step 2: replays the plan into the store; events the store already holds are skipped. */
export async function replayPlan(
  store: MetadataStore,
  plan: RecoverPlan,
  opts: ReplayOptions = {},
): Promise<{ applied: number; skipped: number; indexEvents: number }> {
  let applied = 0;
  let skipped = 0;
  let indexEvents = 0;
  let indexDone = opts.lastIndexEvent ? plan.items.findIndex((i) => i.slot.key === opts.lastIndexEvent) : -1;
  for (const [n, item] of plan.items.entries()) {
    const { slot, event } = item;
    if (event.type === 'BlocksRekeyed') {
      if (n > indexDone) {
        await store.rekeyBlocks(event.blocks, event.at);
        await opts.indexEventApplied?.(slot.key);
        indexDone = n;
        indexEvents++;
      }
    } else if (await applyEvent(store, item)) applied++;
    else skipped++;
    opts.progress?.(n + 1, plan.items.length);
  }
  return { applied, skipped, indexEvents };
}

async function applyEvent(store: MetadataStore, item: Item): Promise<boolean> {
  const { slot, event } = item;
  if (event.type === 'BlocksRecorded') return store.recordChunk(event);
  if (slot.kind !== 'version') return false;
  const state = await store.getVersion(slot.uid);
  if ((state?.seq ?? 0) >= slot.n) return false;
  const next = evolveVersion(state, event)!;
  await store.appendVersionEvents(slot.n - 1, [event as VersionEvent], next);
  return true;
}

/** Step 3: the block index describes what is stored and what the recovered versions need. */
export async function reconcileIndex(
  store: MetadataStore,
  blocks: BlockStore,
  opts: { concurrency: number; now?: () => Date; log?: (line: string) => void },
): Promise<Pick<ReplayReport, 'indexed' | 'dropped' | 'missing'>> {
  const now = opts.now ?? (() => new Date());
  const stored = new Set<BlockId>();
  for await (const key of blocks.list('blocks/')) stored.add(key.slice(key.lastIndexOf('/') + 1));
  const needed = new Map<BlockId, string[]>();
  for (const v of (await store.listVersions()).filter(holdsBlocks)) {
    const ids = v.status === 'committed' ? await referencedIds(store, v) : await recordedIds(store, v, new Set());
    for (const id of ids) needed.set(id, [...(needed.get(id) ?? []), v.uid]);
  }
  const indexed = new Set<BlockId>();
  const ghosts: BlockId[] = [];
  for await (const page of store.scanBlocks())
    for (const e of page) {
      indexed.add(e.id);
      if (!stored.has(e.id) && !needed.has(e.id)) ghosts.push(e.id);
    }
  // A deleted block's entry goes the way cleanup's would have: marked, claimed, deleted.
  for (let i = 0; i < ghosts.length; i += 1000) {
    const page = ghosts.slice(i, i + 1000);
    const at = now().toISOString();
    await store.markUnreferenced(page, at);
    const claimed = await store.claimForDeletion(
      page.map((id) => ({ id, markedAt: at })),
      at,
    );
    await store.removeBlocks(claimed, at);
  }
  const missing: ReplayReport['missing'] = [];
  const toIndex: BlockId[] = [];
  for (const [id, uids] of needed) {
    if (!stored.has(id)) missing.push({ id, versions: uids });
    else if (!indexed.has(id)) toIndex.push(id);
  }
  const limit = pLimit(opts.concurrency);
  for (let i = 0; i < toIndex.length; i += 256) {
    const described = await Promise.all(
      toIndex.slice(i, i + 256).map((id) =>
        limit(async (): Promise<StoredBlock | null> => {
          const body = await blocks.get(blockKey(id));
          return body ? { id, storedSize: body.length, checksum: storedChecksum(body) } : null;
        }),
      ),
    );
    const found = described.filter((b): b is StoredBlock => b !== null);
    if (found.length) await store.touchBlocks(found, now().toISOString());
  }
  return { indexed: toIndex.length, dropped: ghosts.length, missing };
}
