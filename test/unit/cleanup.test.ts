import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { planCleanup, holdsBlocks, isExpired, isStalePending } from '../../shared/domain/cleanup.ts';
import { runCleanup, type CleanupOptions } from '../../shared/app/cleanup.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { blockKey } from '../../shared/blocks/codec.ts';
import { ExitCode } from '../../shared/domain/errors.ts';
import type { BlockIndexEntry, Version } from '../../shared/domain/types.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend } from '../../agent/backend/backend.ts';
import { runBackup } from '../../agent/pipeline/backup.ts';
import type { EventOf, VersionEvent } from '../../shared/domain/events.ts';
import { CLEANUP_LOCK, EmbeddedBackend } from '../../agent/backend/embedded.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { MetadataStore } from '../../shared/ports/metadata-store.ts';
import { MASTER_KEY, makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

const NOW = new Date('2026-03-01T12:00:00.000Z');
const at = (secondsFromNow: number) => new Date(NOW.getTime() + secondsFromNow * 1000).toISOString();
const entry = (over: Partial<BlockIndexEntry> = {}): BlockIndexEntry => ({
  id: randomBytes(32).toString('hex'),
  storedSize: 100,
  checksum: '0'.repeat(64),
  createdAt: at(-86400),
  unreferencedSince: null,
  deleting: false,
  valid: true,
  ...over,
});

describe('planCleanup (pure)', () => {
  it('leaves a referenced, unmarked block alone', () => {
    const e = entry();
    expect(planCleanup([e], new Set([e.id]), null, NOW, 3600)).toEqual({ mark: [], unmark: [], claim: [], resumeDeletion: [] });
  });

  it('unmarks a referenced block that an earlier run marked', () => {
    const e = entry({ unreferencedSince: at(-7200) });
    expect(planCleanup([e], new Set([e.id]), null, NOW, 3600)).toEqual({ mark: [], unmark: [e.id], claim: [], resumeDeletion: [] });
  });

  it('marks a newly unreferenced block with the time, and does not claim it within the grace period', () => {
    const e = entry();
    expect(planCleanup([e], new Set(), null, NOW, 3600)).toEqual({ mark: [e.id], unmark: [], claim: [], resumeDeletion: [] });
  });

  it('with grace 0 and no backup in progress, marks and claims in the same run', () => {
    const e = entry();
    expect(planCleanup([e], new Set(), null, NOW, 0)).toEqual({
      mark: [e.id],
      unmark: [],
      claim: [{ id: e.id, markedAt: NOW.toISOString() }],
      resumeDeletion: [],
    });
  });

  it('claims a block marked at least the grace period ago, with the time it was marked', () => {
    const old = entry({ unreferencedSince: at(-3600) });
    const young = entry({ unreferencedSince: at(-3599) });
    const plan = planCleanup([old, young], new Set(), null, NOW, 3600);
    expect(plan.mark).toEqual([]);
    expect(plan.claim).toEqual([{ id: old.id, markedAt: at(-3600) }]);
  });

  it('claims only blocks marked strictly before the start of the oldest backup in progress', () => {
    const before = entry({ unreferencedSince: at(-7200) });
    const same = entry({ unreferencedSince: at(-5000) });
    const after = entry({ unreferencedSince: at(-4000) });
    const plan = planCleanup([before, same, after], new Set(), Date.parse(at(-5000)), NOW, 3600);
    expect(plan.claim.map((c) => c.id)).toEqual([before.id]);
    // A marked block that a pending backup may rely on is not claimed even with grace 0.
    const fresh = entry();
    expect(planCleanup([fresh], new Set(), Date.parse(at(-1)), NOW, 0).claim).toEqual([]);
  });

  it('resumes the deletion of blocks an earlier run claimed', () => {
    const claimed = entry({ unreferencedSince: at(-7200), deleting: true });
    expect(planCleanup([claimed], new Set(), Date.parse(at(-9000)), NOW, 3600)).toEqual({ mark: [], unmark: [], claim: [], resumeDeletion: [claimed.id] });
  });

  it('property: never claims a referenced block, a block inside the grace period, or one marked at/after a pending start', () => {
    const entryArb = fc.record({
      marked: fc.option(fc.integer({ min: -20_000, max: 0 }), { nil: null }),
      deleting: fc.boolean(),
      referenced: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.array(entryArb, { maxLength: 30 }),
        fc.option(fc.integer({ min: -20_000, max: 0 }), { nil: null }),
        fc.integer({ min: 0, max: 10_000 }),
        (specs, pending, grace) => {
          const entries = specs.map((s) => entry({ unreferencedSince: s.marked === null ? null : at(s.marked), deleting: s.deleting && s.marked !== null }));
          const referenced = new Set(entries.filter((_, i) => specs[i]!.referenced).map((e) => e.id));
          const pendingStart = pending === null ? null : Date.parse(at(pending));
          const plan = planCleanup(entries, referenced, pendingStart, NOW, grace);
          const byId = new Map(entries.map((e) => [e.id, e]));
          for (const c of plan.claim) {
            const e = byId.get(c.id)!;
            expect(referenced.has(c.id)).toBe(false);
            expect(e.deleting).toBe(false);
            const markedAt = Date.parse(c.markedAt);
            expect(markedAt).toBeLessThanOrEqual(NOW.getTime() - grace * 1000);
            if (pendingStart !== null) expect(markedAt).toBeLessThan(pendingStart);
            expect(c.markedAt).toBe(e.unreferencedSince ?? NOW.toISOString());
          }
          for (const id of plan.mark) expect(referenced.has(id) || byId.get(id)!.unreferencedSince !== null).toBe(false);
          for (const id of plan.unmark) expect(referenced.has(id) && byId.get(id)!.unreferencedSince !== null).toBe(true);
          // Every entry lands in at most one of mark/unmark/resume.
          const all = [...plan.mark, ...plan.unmark, ...plan.resumeDeletion];
          expect(new Set(all).size).toBe(all.length);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('version predicates of cleanup', () => {
  const v = (over: Partial<Version>): Version => ({
    uid: randomUUID(),
    name: 'n',
    snapshotName: '',
    date: at(-100),
    sizeBytes: 0,
    blockSize: 4096,
    blockCount: 0,
    chunkCount: 0,
    chunkEntries: 1024,
    recordedChunks: 0,
    baseUid: null,
    host: 'h',
    status: 'committed',
    valid: true,
    protected: false,
    tags: [],
    expire: null,
    stats: null,
    seq: 1,
    ...over,
  });
  it('committed and pending versions hold blocks; failed and removed ones do not', () => {
    expect(['committed', 'pending', 'failed', 'removed'].map((status) => holdsBlocks(v({ status: status as Version['status'] })))).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });
  it('a pending version past the maximum age is stale', () => {
    expect(isStalePending(v({ status: 'pending' }), NOW, 99)).toBe(true);
    expect(isStalePending(v({ status: 'pending' }), NOW, 100)).toBe(false);
    expect(isStalePending(v({ status: 'committed' }), NOW, 1)).toBe(false);
  });
  it('expired means committed, unprotected and past its expiry', () => {
    expect(isExpired(v({ expire: at(-1) }), NOW)).toBe(true);
    expect(isExpired(v({ expire: at(1) }), NOW)).toBe(false);
    expect(isExpired(v({ expire: at(-1), protected: true }), NOW)).toBe(false);
    expect(isExpired(v({ expire: at(-1), status: 'removed' }), NOW)).toBe(false);
    expect(isExpired(v({ expire: null }), NOW)).toBe(false);
  });
});

describe('runCleanup against SQLite and a block directory', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());
  const opts = (over: Partial<CleanupOptions> = {}): CleanupOptions => ({
    graceSeconds: 3600,
    force: false,
    policy: repo.backend.policy,
    concurrency: 4,
    ...over,
  });
  const inSeconds = (s: number) => () => new Date(Date.now() + s * 1000);

  it('after rm, the first run only marks; a run after the grace period deletes; shared blocks stay', async () => {
    repo = makeRepo();
    // a: blocks 1,2,3 (+ a zero block); b: blocks 3,4. Block 3 is shared.
    const a = await repo.backup(patternImage([1, 2, 0, 3]), 'a');
    const b = await repo.backup(patternImage([3, 4]), 'b');
    expect(await repo.storedBlocks()).toHaveLength(4);
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: false }, repo.backend.policy);

    const first = await runCleanup(repo.store, repo.backend.blocks, opts());
    expect(first).toMatchObject({ marked: 2, deleted: 0 });
    expect(await repo.storedBlocks()).toHaveLength(4);

    // Still inside the grace period: nothing is deleted, nothing is marked again.
    expect(await runCleanup(repo.store, repo.backend.blocks, opts({ now: inSeconds(3000) }))).toMatchObject({ marked: 0, deleted: 0 });
    const later = await runCleanup(repo.store, repo.backend.blocks, opts({ now: inSeconds(3700) }));
    expect(later.deleted).toBe(2);
    expect(later.deletedBytes).toBeGreaterThan(0);
    expect(await repo.storedBlocks()).toHaveLength(2);
    let indexed = 0;
    for await (const page of repo.store.scanBlocks()) indexed += page.length;
    expect(indexed).toBe(2);
    expect((await repo.restore(b)).equals(patternImage([3, 4]))).toBe(true);
  });

  it('a block referenced again before the grace period ends is unmarked and kept', async () => {
    repo = makeRepo();
    const a = await repo.backup(patternImage([1, 2]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    expect((await runCleanup(repo.store, repo.backend.blocks, opts())).marked).toBe(2);
    // A new backup needs block 2 again: the index lists it as marked, so the backup touches it (unmarks it).
    const c = await repo.backup(patternImage([2, 5]), 'c');
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ now: inSeconds(7200) }));
    expect(report.deleted).toBe(1);
    expect(await repo.storedBlocks()).toHaveLength(2);
    expect((await repo.restore(c)).equals(patternImage([2, 5]))).toBe(true);
  });

  it('cleanup --force deletes at once; after rm --force of the only version nothing is left', async () => {
    repo = makeRepo();
    const a = await repo.backup(patternImage([1, 2, 3, 0]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ force: true }));
    expect(report).toMatchObject({ marked: 3, deleted: 3 });
    expect(await repo.storedBlocks()).toEqual([]);
  });

  it('grace 0 deletes in one run even when the clock moves between marking and claiming', async () => {
    repo = makeRepo();
    const a = await repo.backup(patternImage([1, 2, 3]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    let t = Date.now() + 1000;
    const ticking = () => {
      t += 7;
      return new Date(t);
    };
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ force: true, now: ticking }));
    expect(report).toMatchObject({ marked: 3, deleted: 3 });
    expect(await repo.storedBlocks()).toEqual([]);
  });

  it('blocks recorded by a backup in progress are kept, and so are blocks marked after it started', async () => {
    repo = makeRepo();
    const a = await repo.backup(patternImage([1, 2]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    // A backup starts (pending) and has recorded nothing yet; it may rely on blocks 1 and 2.
    const pending = randomUUID();
    await executeVersionCommand(
      repo.store,
      {
        type: 'StartVersion',
        uid: pending,
        name: 'p',
        snapshotName: '',
        sizeBytes: 8192,
        blockSize: 4096,
        chunkEntries: 1024,
        baseUid: null,
        tags: [],
        expire: null,
        host: 'h',
      },
      repo.backend.policy,
    );
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ graceSeconds: 0 }));
    expect(report).toMatchObject({ marked: 2, deleted: 0 });
    expect(await repo.storedBlocks()).toHaveLength(2);
    // Forced cleanup refuses while it runs.
    await expect(runCleanup(repo.store, repo.backend.blocks, opts({ force: true }))).rejects.toMatchObject({ exitCode: ExitCode.locked });
    // Once it fails, the blocks go.
    await executeVersionCommand(repo.store, { type: 'FailVersion', uid: pending, reason: 'test' }, repo.backend.policy);
    expect((await runCleanup(repo.store, repo.backend.blocks, opts({ graceSeconds: 0 }))).deleted).toBe(2);
    expect(await repo.storedBlocks()).toEqual([]);
  });

  it('a backup in progress past the maximum age is failed, stops holding the cutoff, and its late commit is refused', async () => {
    repo = makeRepo({ maxBackupAgeSeconds: 600 });
    const a = await repo.backup(patternImage([1]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    const stale = randomUUID();
    await executeVersionCommand(
      repo.store,
      {
        type: 'StartVersion',
        uid: stale,
        name: 'p',
        snapshotName: '',
        sizeBytes: 0,
        blockSize: 4096,
        chunkEntries: 1024,
        baseUid: null,
        tags: [],
        expire: null,
        host: 'h',
      },
      repo.backend.policy,
    );
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ graceSeconds: 0, now: inSeconds(601) }));
    expect(report.failedStaleBackups).toEqual([stale]);
    expect(report.deleted).toBe(1);
    expect((await repo.store.getVersion(stale))?.status).toBe('failed');
    const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };
    await expect(executeVersionCommand(repo.store, { type: 'CommitVersion', uid: stale, stats }, repo.backend.policy)).rejects.toMatchObject({
      exitCode: ExitCode.refused,
    });
  });

  it('resumes a deletion that a crashed run claimed but did not finish', async () => {
    repo = makeRepo();
    const a = await repo.backup(patternImage([1, 2]), 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    // Simulate a run that marked and claimed, deleted one object, then crashed.
    const ids: string[] = [];
    for await (const page of repo.store.scanBlocks()) ids.push(...page.map((e) => e.id));
    const markedAt = new Date(Date.now() - 7200_000).toISOString();
    await repo.store.markUnreferenced(ids, markedAt);
    expect(
      await repo.store.claimForDeletion(
        ids.map((id) => ({ id, markedAt })),
        markedAt,
      ),
    ).toEqual(ids);
    await repo.backend.blocks.delete(blockKey(ids[0]!));
    const report = await runCleanup(repo.store, repo.backend.blocks, opts());
    expect(report.deleted).toBe(2);
    expect(await repo.storedBlocks()).toEqual([]);
    expect((await repo.store.getBlocks(ids)).size).toBe(0);
  });

  it('keeps a block a committed version references through an unchanged chunk of its base (sameAs)', async () => {
    repo = makeRepo();
    const image = patternImage([1, 2, 3]);
    const base = await repo.backup(image, 'vm');
    const incremental = await repo.backup(image, 'vm', { baseUid: base });
    expect((await repo.store.getChunk(incremental, 0))?.sameAs).toEqual({ uid: base, chunk: 0 });
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: base, force: true }, repo.backend.policy);
    const report = await runCleanup(repo.store, repo.backend.blocks, opts({ force: true }));
    expect(report.deleted).toBe(0);
    expect((await repo.restore(incremental)).equals(image)).toBe(true);
  });
});

describe('runCleanup: a backup that starts while a cleanup runs', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());

  /** The store, with `hook` run once just before cleanup's first markUnreferenced (after it listed versions and references). */
  function beforeFirstMark(store: MetadataStore, hook: () => Promise<void>): MetadataStore {
    let fired = false;
    return new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        if (prop !== 'markUnreferenced') return value.bind(target);
        return async (...args: unknown[]) => {
          if (!fired) {
            fired = true;
            await hook();
          }
          return value.apply(target, args);
        };
      },
    });
  }

  for (const [what, force] of [
    ['grace 0', false],
    ['--force', true],
  ] as const) {
    it(`${what}: a block the new backup deduplicated against is not deleted under it`, async () => {
      repo = makeRepo({ graceSeconds: 0 });
      const image = patternImage([1, 2]);
      const a = await repo.backup(image, 'a');
      await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
      // Cleanup has listed the versions (a is removed, nothing pending) and computed the references;
      // now a backup of the same data starts, finds blocks 1 and 2 live in the index and reuses them.
      let d = '';
      const store = beforeFirstMark(repo.store, async () => {
        d = await repo.backup(image, 'd');
      });
      await runCleanup(store, repo.backend.blocks, { graceSeconds: 0, force, policy: repo.backend.policy, concurrency: 2 });
      expect((await repo.store.getVersion(d))?.status).toBe('committed');
      expect((await repo.restore(d)).equals(image)).toBe(true);
    });
  }
});

describe('runCleanup: block records that arrive after their backup was removed', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());

  /** A backend whose block-map records are held until released (a slow queue, or a slow chunk). */
  function holdingBackend(): { backend: Backend; held: EventOf<'BlocksRecorded'>[]; release: () => Promise<void> } {
    const inner = repo.backend.catalog;
    const held: EventOf<'BlocksRecorded'>[] = [];
    let released = false;
    const catalog: Catalog = {
      reader: inner.reader,
      execute: (cmd) => inner.execute(cmd),
      record: async (event) => {
        held.push(event);
      },
      awaitRecorded: async (uid, chunkCount) => {
        while (!released) await sleep(5);
        await inner.awaitRecorded(uid, chunkCount);
      },
      touch: (blocks) => inner.touch(blocks),
      close: async () => {},
    };
    const backend: Backend = {
      ...repo.backend,
      kind: 'embedded',
      config: repo.backend.config,
      policy: repo.backend.policy,
      blocks: repo.backend.blocks,
      codec: repo.backend.codec,
      catalog,
      cleanup: (f, l) => repo.backend.cleanup(f, l),
      close: async () => {},
    };
    return {
      backend,
      held,
      release: async () => {
        for (const e of held) await inner.record(e);
        released = true;
      },
    };
  }

  it('a resumed deletion does not delete a block a backup in progress uploaded again', async () => {
    repo = makeRepo();
    const image = patternImage([1, 2]);
    const a = await repo.backup(image, 'a');
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid: a, force: true }, repo.backend.policy);
    // A cleanup marked and claimed both blocks and deleted their objects, then crashed before
    // removing the index entries (or is still running, while a second cleanup starts).
    const ids: string[] = [];
    for await (const page of repo.store.scanBlocks()) ids.push(...page.map((e) => e.id));
    const markedAt = new Date(Date.now() - 7200_000).toISOString();
    await repo.store.markUnreferenced(ids, markedAt);
    await repo.store.claimForDeletion(
      ids.map((id) => ({ id, markedAt })),
      markedAt,
    );
    for (const id of ids) await repo.backend.blocks.delete(blockKey(id));
    // A backup of the same data uploads the blocks anew; its record is not yet projected.
    const { backend, held, release } = holdingBackend();
    const path = repo.image('d.img', image);
    const d = runBackup(backend, { sourceUrl: `file://${path}`, name: 'd', snapshotName: '', tags: [], expire: null, baseUid: null }, repo.log, false);
    while (!held.length) await sleep(5);
    expect(await repo.storedBlocks()).toHaveLength(2);
    // The next cleanup resumes the claimed deletions.
    await runCleanup(repo.store, repo.backend.blocks, { graceSeconds: 3600, force: false, policy: repo.backend.policy, concurrency: 2 });
    await release();
    const { version } = await d;
    expect((await repo.restore(version.uid)).equals(image)).toBe(true);
  });

  it('a late record of a removed backup does not make its (deleted) blocks look live to later backups', async () => {
    repo = makeRepo({ graceSeconds: 0 });
    const image = patternImage([1, 2, 3]);
    const { backend, held, release } = holdingBackend();
    const path = repo.image('d.img', image);
    const d = runBackup(backend, { sourceUrl: `file://${path}`, name: 'd', snapshotName: '', tags: [], expire: null, baseUid: null }, repo.log, false);
    while (!held.length) await sleep(5);
    // The backup has uploaded its blocks; its record is still on its way. It is removed, and a
    // cleanup -f deletes the objects no index entry knows (they are garbage now).
    const uid = held[0]!.uid;
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid, force: true }, repo.backend.policy);
    await repo.backend.cleanup(true, () => {});
    expect(await repo.storedBlocks()).toEqual([]);
    await release();
    await expect(d).rejects.toMatchObject({ exitCode: ExitCode.refused });
    // A later backup of the same data must not deduplicate against blocks that are gone.
    const e = await repo.backup(image, 'e');
    expect((await repo.restore(e)).equals(image)).toBe(true);
  });
});

describe('embedded cleanup locking', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());

  it('one cleanup at a time: a second one while the first runs is refused as locked (8)', async () => {
    repo = makeRepo();
    await repo.backup(patternImage([1, 2]), 'a');
    const first = repo.backend.cleanup(false, () => {});
    await expect(repo.backend.cleanup(true, () => {})).rejects.toMatchObject({
      exitCode: ExitCode.locked,
      message: expect.stringMatching(/locked by backy2 cleanup/),
    });
    await first;
    // Both locks are released afterwards.
    await expect(repo.backend.cleanup(true, () => {})).resolves.toMatchObject({ deleted: 0 });
    expect(repo.store.lockHolder('cleanup')).toBeUndefined();
    expect(repo.store.lockHolder('cleanup-force')).toBeUndefined();
  });
});

describe('embedded cleanup --force and a backup starting at that moment', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());

  it('a backup whose start lands just after cleanup -f took the lock waits for it before it looks anything up or uploads', async () => {
    repo = makeRepo();
    // cleanup -f takes its lock between the backup's check of the lock and the append of VersionStarted.
    let tookLock = false;
    const store = new Proxy(repo.store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        if (prop !== 'appendVersionEvents') return value.bind(target);
        return async (expectedSeq: number, events: VersionEvent[], next: Version) => {
          if (!tookLock && events[0]?.type === 'VersionStarted') {
            tookLock = true;
            target.acquireLock(CLEANUP_LOCK, 'backy2 cleanup --force (test)');
          }
          return target.appendVersionEvents(expectedSeq, events, next);
        };
      },
    });
    const backend = new EmbeddedBackend(repo.backend.config, { sqlitePath: repo.sqlitePath, dataPath: repo.dataPath }, store, MASTER_KEY);
    const image = patternImage([1, 2, 3]);
    const path = repo.image('d.img', image);
    let finished = false;
    const d = runBackup(backend, { sourceUrl: `file://${path}`, name: 'd', snapshotName: '', tags: [], expire: null, baseUid: null }, repo.log, false).finally(
      () => {
        finished = true;
      },
    );
    await sleep(1500);
    // The cleanup may not have seen the new version: the backup must not have stored anything yet.
    expect(tookLock).toBe(true);
    expect(finished).toBe(false);
    expect(await repo.storedBlocks()).toEqual([]);
    repo.store.releaseLock(CLEANUP_LOCK);
    const { version } = await d;
    expect((await repo.restore(version.uid)).equals(image)).toBe(true);
    await backend.codec.close();
  }, 20_000);
});
