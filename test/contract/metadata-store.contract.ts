import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { admits, evolveEntry, touchChange, touchFinds, type BlockIndexChange } from '../../shared/domain/block-index.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';
import type { EventOf, VersionEvent } from '../../shared/domain/events.ts';
import { decideVersion, evolveVersion, type VersionCommand } from '../../shared/domain/version.ts';
import type { BlockIndexEntry, StoredBlock, Version } from '../../shared/domain/types.ts';
import { ConcurrencyError, type MetadataStore } from '../../shared/ports/metadata-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';

/**
 * One contract, run against every MetadataStore (SQLite in the unit tests, DynamoDB against the
 * emulator in the integration tests), as restic runs one suite against every backend.
 */
export const policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86_400 };
export const id = () => randomBytes(32).toString('hex');
const stored = (blockId: string) => ({ id: blockId, storedSize: 100, checksum: randomBytes(32).toString('hex') });

export function start(uid: string, blocks: number, chunkEntries = 2): VersionCommand {
  return {
    type: 'StartVersion',
    uid,
    name: 'vm1',
    snapshotName: '',
    sizeBytes: blocks * 4096,
    blockSize: 4096,
    chunkEntries,
    baseUid: null,
    tags: [],
    expire: null,
    host: 'h',
  };
}

export function chunkRecord(uid: string, chunk: number, ids: string[], newIds: string[] = ids): EventOf<'BlocksRecorded'> {
  return {
    type: 'BlocksRecorded',
    v: 1,
    uid,
    chunk,
    entries: packChunk(ids.map((blockId, i) => ({ idx: chunk * 2 + i, id: blockId, length: 4096 }))).toString('base64'),
    sameAs: null,
    newBlocks: newIds.map(stored),
    at: new Date().toISOString(),
  };
}

/** Random block-index events on a few ids, at a few instants (so marks collide), with a few object variants. */
const blockIndexOps = (() => {
  const ids = fc.uniqueArray(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 3 });
  const t = fc.integer({ min: 0, max: 3 });
  const variant = fc.integer({ min: 0, max: 2 });
  return fc.array(
    fc.oneof(
      fc.record({ op: fc.constant('record' as const), ids, variant, byPending: fc.boolean(), t }),
      fc.record({ op: fc.constant('mark' as const), ids, t }),
      fc.record({ op: fc.constant('unmark' as const), ids, t }),
      fc.record({
        op: fc.constant('claim' as const),
        marks: fc.uniqueArray(fc.record({ id: fc.integer({ min: 0, max: 2 }), t }), { selector: (m) => m.id, minLength: 1, maxLength: 3 }),
        t,
      }),
      fc.record({ op: fc.constant('remove' as const), ids, t }),
      fc.record({ op: fc.constant('rekey' as const), ids, variant, t }),
      fc.record({ op: fc.constant('touch' as const), ids, variant, t }),
      fc.record({
        op: fc.constant('scrub' as const),
        verified: fc.uniqueArray(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }),
        failed: fc.uniqueArray(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }),
      }),
    ),
    { minLength: 1, maxLength: 16 },
  );
})();
type BlockIndexOp = typeof blockIndexOps extends fc.Arbitrary<(infer O)[]> ? O : never;

const instantOf = (t: number) => `2026-01-01T00:00:0${t}.000Z`;
const variantOf = (blockId: string, variant: number): StoredBlock => ({
  id: blockId,
  storedSize: 100 + variant,
  checksum: createHash('sha256').update(`${blockId}/${variant}`).digest('hex'),
});

/** The pure rules as a model: applies changes, answering what the store must answer. */
class IndexModel {
  readonly entries = new Map<string, BlockIndexEntry>();
  apply(change: BlockIndexChange): boolean {
    const before = this.entries.get(change.id);
    const ok = admits(before, change);
    const after = evolveEntry(before, change);
    if (after) this.entries.set(change.id, after);
    else this.entries.delete(change.id);
    return ok;
  }
}

export interface ContractOptions {
  /** Runs of the block-index property (each a few dozen store calls). */
  propertyRuns?: number;
}

export function metadataStoreContract(name: string, makeStore: () => Promise<MetadataStore>, options: ContractOptions = {}): void {
  describe(`MetadataStore contract: ${name}`, () => {
    it('block-index events applied through the store give the entries the pure rules give (shared/domain/block-index.ts)', async () => {
      const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
      await fc.assert(
        fc.asyncProperty(blockIndexOps, async (ops) => {
          const store = await makeStore();
          const pool = [id(), id(), id()];
          // A backup in progress (its uploads count), a failed one (they do not), a committed one to scrub.
          const [pending, failed, scrubbed] = [randomUUID(), randomUUID(), randomUUID()];
          await executeVersionCommand(store, start(pending, 1000, 1), policy);
          await executeVersionCommand(store, start(failed, 1000, 1), policy);
          await executeVersionCommand(store, { type: 'FailVersion', uid: failed, reason: 'test' }, policy);
          await executeVersionCommand(store, start(scrubbed, 0), policy);
          await executeVersionCommand(store, { type: 'CommitVersion', uid: scrubbed, stats }, policy);
          const model = new IndexModel();
          const chunks = new Map<string, number>();
          const run = async (o: BlockIndexOp) => {
            const ids = 'ids' in o ? o.ids.map((i) => pool[i]!) : [];
            const at = 't' in o ? instantOf(o.t) : instantOf(0);
            switch (o.op) {
              case 'record': {
                const uid = o.byPending ? pending : failed;
                const chunk = chunks.get(uid) ?? 0;
                chunks.set(uid, chunk + 1);
                const blocks = ids.map((x) => variantOf(x, o.variant));
                await store.recordChunk({ ...chunkRecord(uid, chunk, ids, []), newBlocks: blocks, at });
                if (o.byPending) for (const block of blocks) model.apply({ kind: 'recorded', id: block.id, block, at });
                return;
              }
              case 'mark':
                await store.markUnreferenced(ids, at);
                for (const x of ids) model.apply({ kind: 'marked', id: x, at });
                return;
              case 'unmark':
                await store.unmark(ids, at);
                for (const x of ids) model.apply({ kind: 'referenced', id: x });
                return;
              case 'claim': {
                const marks = o.marks.map((m) => ({ id: pool[m.id]!, markedAt: instantOf(m.t) }));
                const claimed = await store.claimForDeletion(marks, at);
                const expected = marks.filter((m) => model.apply({ kind: 'claimed', id: m.id, markedAt: m.markedAt })).map((m) => m.id);
                expect(claimed, 'claimed ids').toEqual(expected);
                return;
              }
              case 'remove':
                await store.removeBlocks(ids, at);
                for (const x of ids) model.apply({ kind: 'deleted', id: x });
                return;
              case 'rekey': {
                const blocks = ids.map((x) => variantOf(x, o.variant));
                await store.rekeyBlocks(blocks, at);
                for (const block of blocks) model.apply({ kind: 'rekeyed', id: block.id, block });
                return;
              }
              case 'touch': {
                const blocks = ids.map((x) => variantOf(x, o.variant));
                const found = await store.touchBlocks(blocks, at);
                const expected = new Map(blocks.map((b) => [b.id, touchFinds(model.entries.get(b.id))]));
                expect(found, 'what the touch found').toEqual(expected);
                for (const block of blocks) {
                  const change = touchChange(expected.get(block.id)!, block, at);
                  if (change) model.apply(change);
                }
                return;
              }
              case 'scrub': {
                const [verified, failedIds] = [o.verified.map((i) => pool[i]!), o.failed.map((i) => pool[i]!)];
                await executeVersionCommand(
                  store,
                  { type: 'RecordScrub', uid: scrubbed, verified, failed: failedIds.map((x) => ({ id: x, reason: 'test' })), complete: true },
                  policy,
                );
                for (const x of verified) model.apply({ kind: 'verified', id: x });
                for (const x of failedIds) model.apply({ kind: 'invalidated', id: x });
                return;
              }
            }
          };
          for (const [step, o] of ops.entries()) {
            await run(o);
            const actual = Object.fromEntries([...(await store.getBlocks(pool))].sort(([a], [b]) => a.localeCompare(b)));
            const expected = Object.fromEntries([...model.entries].sort(([a], [b]) => a.localeCompare(b)));
            expect(actual, `index after step ${step} (${o.op})`).toEqual(expected);
          }
        }),
        { numRuns: options.propertyRuns ?? 100 },
      );
    }, 600_000);

    it('appends lifecycle events with optimistic concurrency', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      const started = await executeVersionCommand(store, start(uid, 4), policy);
      expect(started.status).toBe('pending');
      expect((await store.getVersion(uid))?.seq).toBe(1);
      // A writer that decided against the old state loses.
      const events = decideVersion({ type: 'ProtectVersion', uid }, started, { now: new Date(), policy }) as VersionEvent[];
      const next = events.reduce<Version | undefined>(evolveVersion, started)!;
      await store.appendVersionEvents(1, events, next);
      await expect(store.appendVersionEvents(1, events, next)).rejects.toBeInstanceOf(ConcurrencyError);
      expect((await store.getVersion(uid))?.protected).toBe(true);
    });

    it('records chunks idempotently and in any order; commit waits for all of them', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 4), policy);
      const [a, b, c, d] = [id(), id(), id(), id()];
      const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
      expect(await store.recordChunk(chunkRecord(uid, 1, [c!, d!]))).toBe(true);
      await expect(executeVersionCommand(store, { type: 'CommitVersion', uid, stats }, policy)).rejects.toMatchObject({ exitCode: 4 });
      expect(await store.recordChunk(chunkRecord(uid, 1, [c!, d!]))).toBe(false);
      expect(await store.recordChunk(chunkRecord(uid, 0, [a!, b!]))).toBe(true);
      expect(await store.recordChunk(chunkRecord(uid, 0, [a!, b!]))).toBe(false);
      expect((await store.getVersion(uid))?.recordedChunks).toBe(2);
      const committed = await executeVersionCommand(store, { type: 'CommitVersion', uid, stats }, policy);
      expect(committed.status).toBe('committed');
      const chunk = await store.getChunk(uid, 1);
      expect(chunk?.entries?.length).toBe(72);
      expect((await store.getBlocks([a!, d!])).size).toBe(2);
    });

    it('records a chunk with more new blocks than one index transaction holds, reviving a claimed entry and clearing a mark', async () => {
      const store = await makeStore();
      const first = randomUUID();
      await executeVersionCommand(store, start(first, 2), policy);
      const [claimed, marked] = [id(), id()];
      await store.recordChunk(chunkRecord(first, 0, [claimed!, marked!]));
      const t1 = '2026-01-01T00:00:00.000Z';
      await store.markUnreferenced([claimed!, marked!], t1);
      expect(await store.claimForDeletion([{ id: claimed!, markedAt: t1 }], t1)).toEqual([claimed]);
      // A backup in progress uploads both again among 248 other new blocks: every entry is live.
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 250, 250), policy);
      const ids = [claimed!, ...Array.from({ length: 248 }, id), marked!];
      expect(await store.recordChunk(chunkRecord(uid, 0, ids))).toBe(true);
      const index = await store.getBlocks(ids);
      expect(index.size).toBe(250);
      for (const blockId of ids) expect(index.get(blockId)).toMatchObject({ unreferencedSince: null, deleting: false, valid: true });
      expect((await store.getVersion(uid))?.recordedChunks).toBe(1);
    });

    it('a chunk recorded while a cleanup claims and removes some of its blocks: every block of the chunk stays indexed and live', async () => {
      const store = await makeStore();
      const t1 = '2026-01-01T00:00:00.000Z';
      for (let round = 0; round < 3; round++) {
        // 120 blocks of an old backup, all marked, half of them already claimed by a cleanup.
        const old = randomUUID();
        await executeVersionCommand(store, start(old, 120, 120), policy);
        const reused = Array.from({ length: 120 }, id);
        await store.recordChunk(chunkRecord(old, 0, reused));
        await store.markUnreferenced(reused, t1);
        const [early, late] = [reused.slice(0, 60), reused.slice(60)];
        expect(
          await store.claimForDeletion(
            early.map((x) => ({ id: x, markedAt: t1 })),
            t1,
          ),
        ).toEqual(early);
        // A backup in progress uploads them all anew (with 130 others) while the cleanup claims the rest and removes what it claimed.
        const uid = randomUUID();
        await executeVersionCommand(store, start(uid, 250, 250), policy);
        const ids = [...reused, ...Array.from({ length: 130 }, id)];
        const cleanup = async () => {
          const claimed = await store.claimForDeletion(
            late.map((x) => ({ id: x, markedAt: t1 })),
            t1,
          );
          await store.removeBlocks([...early, ...claimed], t1);
        };
        const [recorded] = await Promise.all([store.recordChunk(chunkRecord(uid, 0, ids)), cleanup()]);
        expect(recorded).toBe(true);
        const index = await store.getBlocks(ids);
        expect(index.size, `round ${round}: entries of the recorded chunk`).toBe(250);
        for (const blockId of ids) expect(index.get(blockId), `round ${round}`).toMatchObject({ unreferencedSince: null, deleting: false, valid: true });
        expect((await store.getVersion(uid))?.recordedChunks).toBe(1);
      }
    });

    it('two backups recording the same new blocks at once both count them, and a duplicate delivery afterwards changes nothing', async () => {
      const store = await makeStore();
      const shared = Array.from({ length: 150 }, id);
      const [a, b] = [randomUUID(), randomUUID()];
      await executeVersionCommand(store, start(a, 200, 200), policy);
      await executeVersionCommand(store, start(b, 200, 200), policy);
      // Each names the shared blocks as stored once (the other host's If-None-Match upload of one would have failed).
      const sharedBlocks = shared.map(stored);
      const recordOf = (uid: string, ids: string[]) => ({ ...chunkRecord(uid, 0, ids), newBlocks: [...sharedBlocks, ...ids.slice(150).map(stored)] });
      const [recordA, recordB] = [recordOf(a, [...shared, ...Array.from({ length: 50 }, id)]), recordOf(b, [...shared, ...Array.from({ length: 50 }, id)])];
      expect(await Promise.all([store.recordChunk(recordA), store.recordChunk(recordB)])).toEqual([true, true]);
      const all = [...new Set([...recordA.newBlocks, ...recordB.newBlocks].map((block) => block.id))];
      const before = await store.getBlocks(all);
      expect(before.size).toBe(250);
      for (const blockId of all) expect(before.get(blockId)).toMatchObject({ unreferencedSince: null, deleting: false, valid: true });
      expect(await store.recordChunk(recordA)).toBe(false);
      expect(await store.getBlocks(all)).toEqual(before);
      expect((await store.getVersion(a))?.recordedChunks).toBe(1);
      expect((await store.getVersion(b))?.recordedChunks).toBe(1);
    });

    it('marks, unmarks, claims (only if still marked at that time) and removes index entries', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 2), policy);
      const [a, b] = [id(), id()];
      await store.recordChunk(chunkRecord(uid, 0, [a!, b!]));
      const t1 = '2026-01-01T00:00:00.000Z';
      await store.markUnreferenced([a!, b!], t1);
      expect((await store.getBlocks([a!])).get(a!)?.unreferencedSince).toBe(t1);
      await store.unmark([b!], t1);
      expect((await store.getBlocks([b!])).get(b!)?.unreferencedSince).toBeNull();
      // b is no longer marked at t1, a is: only a can be claimed.
      const claimed = await store.claimForDeletion(
        [
          { id: a!, markedAt: t1 },
          { id: b!, markedAt: t1 },
        ],
        t1,
      );
      expect(claimed).toEqual([a]);
      expect((await store.getBlocks([a!])).get(a!)?.deleting).toBe(true);
      // A touch of a block being deleted says so; of a live one, unmarks; of an unknown one, creates it.
      const c = id();
      const touched = await store.touchBlocks([stored(a!), stored(b!), stored(c)], t1);
      expect(Object.fromEntries(touched)).toEqual({ [a!]: 'deleting', [b!]: 'live', [c]: 'created' });
      await store.removeBlocks([a!], t1);
      expect((await store.getBlocks([a!])).has(a!)).toBe(false);
      // removeBlocks leaves entries that are not claimed alone.
      await store.removeBlocks([b!], t1);
      expect((await store.getBlocks([b!])).has(b!)).toBe(true);
    });

    it('a new upload revives an entry claimed for deletion', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 2), policy);
      const a = id();
      const t1 = '2026-01-01T00:00:00.000Z';
      await store.touchBlocks([stored(a)], t1);
      await store.markUnreferenced([a], t1);
      expect(await store.claimForDeletion([{ id: a, markedAt: t1 }], t1)).toEqual([a]);
      await store.recordChunk(chunkRecord(uid, 0, [a, id()]));
      const entry = (await store.getBlocks([a])).get(a);
      expect(entry?.deleting).toBe(false);
      expect(entry?.unreferencedSince).toBeNull();
      await store.removeBlocks([a], t1);
      expect((await store.getBlocks([a])).has(a)).toBe(true);
    });

    it('a scrub verdict sets block validity and version validity', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 2), policy);
      const [a, b] = [id(), id()];
      await store.recordChunk(chunkRecord(uid, 0, [a!, b!]));
      const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
      await executeVersionCommand(store, { type: 'CommitVersion', uid, stats }, policy);
      await executeVersionCommand(store, { type: 'RecordScrub', uid, verified: [a!], failed: [{ id: b!, reason: 'Blob not found' }], complete: true }, policy);
      expect((await store.getVersion(uid))?.valid).toBe(false);
      expect((await store.getBlocks([b!])).get(b!)?.valid).toBe(false);
      await executeVersionCommand(store, { type: 'RecordScrub', uid, verified: [a!, b!], failed: [], complete: true }, policy);
      expect((await store.getVersion(uid))?.valid).toBe(true);
      expect((await store.getBlocks([b!])).get(b!)?.valid).toBe(true);
    });

    it('rekeyBlocks sets size and checksum of live and marked entries, leaves claimed and unknown ones alone, and is logged', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 2), policy);
      const [a, b, c, unknown] = [id(), id(), id(), id()];
      await store.recordChunk(chunkRecord(uid, 0, [a!, b!]));
      await store.touchBlocks([stored(c!)], '2026-01-01T00:00:00.000Z');
      const t1 = '2026-01-01T00:00:00.000Z';
      await store.markUnreferenced([b!, c!], t1);
      expect(await store.claimForDeletion([{ id: c!, markedAt: t1 }], t1)).toEqual([c]);
      const claimedBefore = (await store.getBlocks([c!])).get(c!)!;
      const fresh = [a!, b!, c!, unknown!].map((x) => ({ id: x, storedSize: 4242, checksum: randomBytes(32).toString('hex') }));
      await store.rekeyBlocks(fresh, '2026-01-02T00:00:00.000Z');
      const after = await store.getBlocks([a!, b!, c!, unknown!]);
      expect(after.get(a!)).toMatchObject({ storedSize: 4242, checksum: fresh[0]!.checksum, deleting: false, unreferencedSince: null });
      expect(after.get(b!)).toMatchObject({ storedSize: 4242, checksum: fresh[1]!.checksum, unreferencedSince: t1 });
      expect(after.get(c!)).toMatchObject({ storedSize: claimedBefore.storedSize, checksum: claimedBefore.checksum, deleting: true });
      expect(after.has(unknown!)).toBe(false);
      const rekeyed: string[][] = [];
      for await (const e of store.readAllEvents()) if (e.type === 'BlocksRekeyed') rekeyed.push(e.blocks.map((x) => x.id));
      expect(rekeyed).toContainEqual([a, b, c, unknown]);
      await store.rekeyBlocks([], t1);
    });

    it('lists versions and scans the block index', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      await executeVersionCommand(store, start(uid, 2), policy);
      const [a, b] = [id(), id()];
      await store.recordChunk(chunkRecord(uid, 0, [a!, b!]));
      expect((await store.listVersions()).map((v) => v.uid)).toContain(uid);
      const seen = new Set<string>();
      for await (const page of store.scanBlocks()) for (const e of page) seen.add(e.id);
      expect(seen.has(a!) && seen.has(b!)).toBe(true);
      const types: string[] = [];
      for await (const e of store.readAllEvents()) if ('uid' in e && e.uid === uid) types.push(e.type);
      expect(types.sort()).toEqual(['BlocksRecorded', 'VersionStarted']);
    });

    it('keeps served-version leases per (uid, holder): put renews, drop removes only its own', async () => {
      const store = await makeStore();
      const uid = randomUUID();
      const mine = async () => (await store.listLeases()).filter((l) => l.uid === uid).sort((x, y) => x.holder.localeCompare(y.holder));
      await store.putLease({ uid, holder: 'nbd a', expiresAt: '2030-01-01T00:00:00.000Z' });
      await store.putLease({ uid, holder: 'nbd b', expiresAt: '2030-01-01T00:00:00.000Z' });
      await store.putLease({ uid, holder: 'nbd a', expiresAt: '2031-01-01T00:00:00.000Z' });
      expect(await mine()).toEqual([
        { uid, holder: 'nbd a', expiresAt: '2031-01-01T00:00:00.000Z' },
        { uid, holder: 'nbd b', expiresAt: '2030-01-01T00:00:00.000Z' },
      ]);
      await store.dropLease(uid, 'nbd a');
      expect((await mine()).map((l) => l.holder)).toEqual(['nbd b']);
      await store.dropLease(uid, 'nbd b');
      expect(await mine()).toEqual([]);
    });
  });
}
