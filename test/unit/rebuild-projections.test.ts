import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { runCleanup } from '../../shared/app/cleanup.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import type { VersionCommand } from '../../shared/domain/version.ts';
import { dumpTables, makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

/** The event log is the source of truth: dropping the projections and replaying it gives identical tables. */
const PROJECTIONS = ['versions', 'map_chunks', 'blocks'];

describe('SqliteMetadataStore.rebuildProjections', () => {
  let repo: TestRepo | undefined;
  afterEach(() => {
    repo?.close();
    repo = undefined;
  });

  it('rebuilds identical projections after a realistic history', async () => {
    repo = makeRepo({ graceSeconds: 0 });
    const r = repo;
    const policy = r.backend.policy;
    const a = await r.backup(patternImage([1, 2, 0, 3]), 'vm1');
    const b = await r.backup(patternImage([1, 2, 0, 3]), 'vm1', { baseUid: a }); // sameAs chunk
    const c = await r.backup(patternImage([1, 4, 5], 4096, 100), 'vm1', { baseUid: b });
    await r.backup(patternImage([6, 7]), 'vm2');
    await executeVersionCommand(r.store, { type: 'ProtectVersion', uid: c }, policy);
    await executeVersionCommand(r.store, { type: 'AddTags', uid: c, tags: ['keep', 'monthly'] }, policy);
    await executeVersionCommand(r.store, { type: 'RemoveTags', uid: c, tags: ['monthly'] }, policy);
    await executeVersionCommand(r.store, { type: 'SetExpiry', uid: b, expire: '2027-01-01T00:00:00.000Z' }, policy);
    const ids: string[] = [];
    for await (const page of r.store.scanBlocks()) ids.push(...page.map((e) => e.id));
    await executeVersionCommand(
      r.store,
      { type: 'RecordScrub', uid: b, verified: ids.slice(1), failed: [{ id: ids[0]!, reason: 'Blob not found' }], complete: true },
      policy,
    );
    const failed = randomUUID();
    await executeVersionCommand(
      r.store,
      {
        type: 'StartVersion',
        uid: failed,
        name: 'vm3',
        snapshotName: '',
        sizeBytes: 4096,
        blockSize: 4096,
        chunkEntries: 1024,
        baseUid: null,
        tags: [],
        expire: null,
        host: 'h',
      },
      policy,
    );
    await executeVersionCommand(r.store, { type: 'FailVersion', uid: failed, reason: 'source shrank' }, policy);
    await executeVersionCommand(r.store, { type: 'RemoveVersion', uid: a, force: true }, policy);
    await r.store.touchBlocks([{ id: randomBytes(32).toString('hex'), storedSize: 10, checksum: '0'.repeat(64) }], new Date().toISOString());
    const report = await runCleanup(r.store, r.backend.blocks, { graceSeconds: 0, force: false, policy, concurrency: 2 });
    expect(report.deleted).toBeGreaterThan(0);

    const before = dumpTables(r.store, PROJECTIONS);
    expect(before['versions']!.length).toBe(5);
    r.store.rebuildProjections();
    expect(dumpTables(r.store, PROJECTIONS)).toEqual(before);
    // And the rebuilt store still serves restores.
    expect((await r.restore(c)).equals(patternImage([1, 4, 5], 4096, 100))).toBe(true);
  });

  it('property: any sequence of store operations replays to identical projections', async () => {
    type Step =
      | { kind: 'start'; v: number }
      | { kind: 'record'; v: number; chunk: number; blocks: number[] }
      | { kind: 'cmd'; v: number; cmd: 'commit' | 'fail' | 'rm' | 'protect' | 'unprotect' | 'tag' | 'scrubBad' | 'scrubGood' }
      | { kind: 'mark' | 'unmark' | 'claim' | 'remove' | 'touch'; blocks: number[] };
    const blocksArb = fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 3 });
    const stepArb: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constant('start' as const), v: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ kind: fc.constant('record' as const), v: fc.integer({ min: 0, max: 2 }), chunk: fc.integer({ min: 0, max: 1 }), blocks: blocksArb }),
      fc.record({
        kind: fc.constant('cmd' as const),
        v: fc.integer({ min: 0, max: 2 }),
        cmd: fc.constantFrom(
          'commit' as const,
          'fail' as const,
          'rm' as const,
          'protect' as const,
          'unprotect' as const,
          'tag' as const,
          'scrubBad' as const,
          'scrubGood' as const,
        ),
      }),
      fc.record({ kind: fc.constantFrom('mark' as const, 'unmark' as const, 'claim' as const, 'remove' as const, 'touch' as const), blocks: blocksArb }),
    );
    const blockIds = Array.from({ length: 8 }, (_, i) => (i + 1).toString(16).padStart(2, '0').repeat(32));
    const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 0 };

    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { maxLength: 40 }), async (steps) => {
        repo?.close();
        repo = makeRepo();
        const store = repo.store;
        const policy = { minAgeDaysForRm: 0, maxBackupAgeSeconds: 86_400 };
        const uids = [randomUUID(), randomUUID(), randomUUID()];
        const marks = new Map<string, string>();
        let clock = Date.parse('2026-03-01T00:00:00.000Z');
        const tick = () => {
          clock += 1000;
          return new Date(clock).toISOString();
        };
        for (const step of steps) {
          const at = tick();
          const ids = step.kind === 'start' || step.kind === 'cmd' ? [] : [...new Set(step.blocks.map((b) => blockIds[b]!))];
          if (step.kind === 'start') {
            const cmd: VersionCommand = {
              type: 'StartVersion',
              uid: uids[step.v]!,
              name: 'n',
              snapshotName: '',
              sizeBytes: 4 * 4096,
              blockSize: 4096,
              chunkEntries: 2,
              baseUid: null,
              tags: ['t'],
              expire: null,
              host: 'h',
            };
            await executeVersionCommand(store, cmd, policy, () => new Date(at)).catch(() => {});
          } else if (step.kind === 'record') {
            if (!(await store.getVersion(uids[step.v]!))) continue;
            const entryIds = [ids[0]!, ids[1] ?? null];
            const event: EventOf<'BlocksRecorded'> = {
              type: 'BlocksRecorded',
              v: 1,
              uid: uids[step.v]!,
              chunk: step.chunk,
              entries: packChunk(entryIds.map((id, i) => ({ idx: step.chunk * 2 + i, id, length: 4096 }))).toString('base64'),
              sameAs: null,
              newBlocks: ids.map((id) => ({ id, storedSize: 100 + step.chunk, checksum: id })),
              at,
            };
            await store.recordChunk(event);
          } else if (step.kind === 'cmd') {
            const uid = uids[step.v]!;
            const cmd: VersionCommand =
              step.cmd === 'commit'
                ? { type: 'CommitVersion', uid, stats }
                : step.cmd === 'fail'
                  ? { type: 'FailVersion', uid, reason: 'x' }
                  : step.cmd === 'rm'
                    ? { type: 'RemoveVersion', uid, force: true }
                    : step.cmd === 'protect'
                      ? { type: 'ProtectVersion', uid }
                      : step.cmd === 'unprotect'
                        ? { type: 'UnprotectVersion', uid }
                        : step.cmd === 'tag'
                          ? { type: 'AddTags', uid, tags: ['x'] }
                          : step.cmd === 'scrubBad'
                            ? { type: 'RecordScrub', uid, verified: [], failed: [{ id: blockIds[0]!, reason: 'bad' }], complete: true }
                            : { type: 'RecordScrub', uid, verified: [blockIds[0]!], failed: [], complete: true };
            await executeVersionCommand(store, cmd, policy, () => new Date(at)).catch(() => {});
          } else if (step.kind === 'mark') {
            await store.markUnreferenced(ids, at);
            for (const id of ids) marks.set(id, at);
          } else if (step.kind === 'unmark') {
            await store.unmark(ids, at);
          } else if (step.kind === 'claim') {
            await store.claimForDeletion(
              ids.map((id) => ({ id, markedAt: marks.get(id) ?? at })),
              at,
            );
          } else if (step.kind === 'remove') {
            await store.removeBlocks(ids, at);
          } else {
            await store.touchBlocks(
              ids.map((id) => ({ id, storedSize: 7, checksum: id })),
              at,
            );
          }
        }
        const before = dumpTables(store, PROJECTIONS);
        store.rebuildProjections();
        expect(dumpTables(store, PROJECTIONS)).toEqual(before);
      }),
      { numRuns: 60 },
    );
  });
});
