import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import pLimit from 'p-limit';
import type { Backend } from '../../agent/backend/backend.ts';
import { runBackup } from '../../agent/pipeline/backup.ts';
import { referencedIds } from '../../shared/app/block-map.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import type { VersionCommand } from '../../shared/domain/version.ts';
import type { BlockId, StoredBlock, Version } from '../../shared/domain/types.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { MetadataStore, TouchResult } from '../../shared/ports/metadata-store.ts';
import { EmbeddedBackend } from '../../agent/backend/embedded.ts';
import { MASTER_KEY, makeRepo, patternBlock, type TestRepo } from './helpers/repo.ts';

/**
 * The DESIGN's garbage-collection invariant, tested at random: backups (full and incremental),
 * rm and cleanup with grace 0 run concurrently against a real SQLite store and block directory;
 * every metadata call is delayed by a random amount, so their steps interleave; block-map records
 * travel asynchronously (as through SQS), delayed, reordered and sometimes delivered twice.
 * Afterwards every committed, non-removed version must restore bit-exact, before and after a
 * final cleanup. GC_RUNS=200 runs more scenarios (default 15); GC_DEBUG=1 prints what happened.
 */

/** A deterministic PRNG, so a failing run can be replayed from fast-check's seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** The MetadataStore port's methods; everything else of the SQLite store (locks, db) passes through. */
const PORT_METHODS = new Set([
  'appendVersionEvents',
  'recordChunk',
  'markUnreferenced',
  'unmark',
  'claimForDeletion',
  'removeBlocks',
  'touchBlocks',
  'getVersion',
  'listVersions',
  'getChunk',
  'getBlocks',
]);

/** The store, with every port call delayed by 0..maxMs before and after (a slow network between the steps of a run). */
function delayed<T extends MetadataStore>(store: T, rand: () => number, maxMs: number): T {
  const pause = () => sleep(Math.floor(rand() * (maxMs + 1)));
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      if (typeof prop !== 'string' || !PORT_METHODS.has(prop)) return value.bind(target);
      return async (...args: unknown[]) => {
        await pause();
        const result = await value.apply(target, args);
        await pause();
        return result;
      };
    },
  });
}

/** A catalog whose block records are delivered asynchronously: delayed, reordered, sometimes twice. */
class ChaosCatalog implements Catalog {
  readonly reader: MetadataStore;
  private readonly inner: Catalog;
  private readonly rand: () => number;
  private readonly deliveries = new Set<Promise<void>>();
  duplicates = 0;

  constructor(inner: Catalog, store: MetadataStore, rand: () => number) {
    this.inner = inner;
    this.reader = delayed(store, rand, 2);
    this.rand = rand;
  }

  async execute(cmd: VersionCommand): Promise<Version> {
    await sleep(Math.floor(this.rand() * 3));
    return this.inner.execute(cmd);
  }

  async record(event: EventOf<'BlocksRecorded'>): Promise<void> {
    const copies = this.rand() < 0.3 ? 2 : 1;
    if (copies === 2) this.duplicates++;
    for (let i = 0; i < copies; i++) {
      const delivery = sleep(Math.floor(this.rand() * 25)).then(async () => {
        await this.inner.record(structuredClone(event));
      });
      this.deliveries.add(delivery);
      void delivery.finally(() => this.deliveries.delete(delivery));
    }
  }

  async awaitRecorded(uid: string, chunkCount: number): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      const v = await this.inner.reader.getVersion(uid);
      if (v && v.recordedChunks >= chunkCount) return;
      await sleep(2);
    }
    throw new Error(`chunks of ${uid} never arrived`);
  }

  async touch(blocks: StoredBlock[]): Promise<Map<BlockId, TouchResult>> {
    await sleep(Math.floor(this.rand() * 3));
    return this.inner.touch(blocks);
  }

  async flush(): Promise<void> {
    while (this.deliveries.size) await Promise.all([...this.deliveries]);
  }

  async close(): Promise<void> {}
}

type Op =
  | { kind: 'backup'; name: 'a' | 'b' | 'c'; runs: { pattern: number; length: number }[]; tail: number; incremental: boolean }
  | { kind: 'rm'; pick: number }
  | { kind: 'cleanup'; force: boolean };

const BLOCK = 4096;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('backup' as const),
      name: fc.constantFrom('a' as const, 'b' as const, 'c' as const),
      // Runs of repeated block patterns from a small pool (0 = zeros), so versions share blocks;
      // a long run now and then makes a version span several block-map chunks (1024 entries each).
      runs: fc.array(
        fc.record({
          pattern: fc.integer({ min: 0, max: 30 }),
          length: fc.oneof({ weight: 12, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.integer({ min: 500, max: 1100 }) }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      tail: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: BLOCK - 1 })),
      incremental: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('rm' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('cleanup' as const), force: fc.boolean() }) },
);

function imageOf(op: Extract<Op, { kind: 'backup' }>): Buffer {
  const parts: Buffer[] = [];
  for (const run of op.runs) {
    const block = patternBlock(run.pattern, BLOCK);
    for (let i = 0; i < run.length; i++) parts.push(block);
  }
  if (op.tail) parts.push(patternBlock(op.runs[0]!.pattern + 100, BLOCK).subarray(0, op.tail));
  return Buffer.concat(parts);
}

/** Failures a backup may meet in this chaos, each for a reason the rules give. */
function expectedBackupFailure(e: unknown): boolean {
  if (!(e instanceof Backy2Error)) return false;
  // Removed (rm --force) while in progress: its commit is refused. A base removed meanwhile: not found.
  if (e.exitCode === ExitCode.refused && /is removed; its commit is refused|is invalid/.test(e.message)) return true;
  if (e.exitCode === ExitCode.notFound && /Base version .* not found|not found/.test(e.message)) return true;
  // Waited for cleanup --force's lock.
  if (e.exitCode === ExitCode.locked) return true;
  return false;
}

async function runScenario(repo: TestRepo, ops: Op[], seed: number): Promise<{ committed: Map<string, Buffer>; stats: Record<string, number> }> {
  const rand = prng(seed);
  // The same embedded backend (locks included), over a store whose every call is delayed.
  const slow = new EmbeddedBackend(repo.backend.config, { sqlitePath: repo.sqlitePath, dataPath: repo.dataPath }, delayed(repo.store, rand, 3), MASTER_KEY);
  const catalog = new ChaosCatalog(slow.catalog, repo.store, rand);
  const backend: Backend = {
    kind: 'embedded',
    config: slow.config,
    policy: slow.policy,
    catalog,
    blocks: slow.blocks,
    codec: repo.backend.codec, // one codec (and its worker threads) per repository
    cleanup: (force, log) => slow.cleanup(force, log),
    close: async () => {},
  };
  const images = new Map<string, Buffer>();
  const stats = { backups: 0, backupFailures: 0, removed: 0, cleanups: 0, deleted: 0, cleanupRefusals: 0, duplicates: 0 };
  const limit = pLimit(3);

  await Promise.all(
    ops.map((op, i) =>
      limit(async () => {
        await sleep(Math.floor(rand() * 10));
        if (op.kind === 'backup') {
          const image = imageOf(op);
          const path = repo.image(`op-${i}.img`, image);
          let baseUid: string | null = null;
          if (op.incremental) {
            const bases = (await repo.store.listVersions()).filter((v) => v.name === op.name && v.status === 'committed');
            baseUid = bases.length ? bases[Math.floor(rand() * bases.length)]!.uid : null;
          }
          try {
            const { version } = await runBackup(
              backend,
              { sourceUrl: `file://${path}`, name: op.name, snapshotName: '', tags: [], expire: null, baseUid },
              repo.log,
              false,
            );
            images.set(version.uid, image);
            stats.backups++;
          } catch (e) {
            if (!expectedBackupFailure(e)) throw e;
            stats.backupFailures++;
          }
        } else if (op.kind === 'rm') {
          const candidates = (await repo.store.listVersions()).filter((v) => v.status !== 'removed');
          if (!candidates.length) return;
          const victim = candidates[op.pick % candidates.length]!;
          // Force: pending backups can be removed too (their commit is then refused).
          await executeVersionCommand(delayed(repo.store, rand, 3), { type: 'RemoveVersion', uid: victim.uid, force: true }, repo.backend.policy).catch(
            (e: Backy2Error) => {
              if (e.exitCode !== ExitCode.notFound) throw e;
            },
          );
          stats.removed++;
        } else {
          try {
            // grace 0 (cleanup_grace_seconds: 0), or --force
            const report = await backend.cleanup(op.force, () => {});
            stats.cleanups++;
            stats.deleted += report.deleted;
          } catch (e) {
            // cleanup --force refuses while a backup is in progress; any cleanup while another runs.
            if (!(e instanceof Backy2Error) || e.exitCode !== ExitCode.locked) throw e;
            stats.cleanupRefusals++;
          }
        }
      }),
    ),
  );
  await catalog.flush();
  await slow.codec.close();
  stats.duplicates = catalog.duplicates;
  const committed = new Map<string, Buffer>();
  for (const v of await repo.store.listVersions()) {
    if (v.status !== 'committed') continue;
    expect(images.has(v.uid), `committed version ${v.uid} was not reported as backed up`).toBe(true);
    committed.set(v.uid, images.get(v.uid)!);
  }
  return { committed, stats };
}

async function expectAllRestore(repo: TestRepo, committed: Map<string, Buffer>, when: string): Promise<void> {
  for (const [uid, image] of committed) {
    let restored: Buffer;
    try {
      restored = await repo.restore(uid);
    } catch (e) {
      // GC_DEBUG=1: print the version lifecycle and every event naming the missing block.
      if (process.env['GC_DEBUG']) {
        const missing = /Block ([0-9a-f]{64})/.exec((e as Error).message)?.[1];
        const rows = repo.store.db.prepare('SELECT pos, stream, type, data FROM events ORDER BY pos').all() as {
          pos: number;
          stream: string;
          type: string;
          data: string;
        }[];
        for (const r of rows) {
          const d = JSON.parse(r.data);
          const mentions = missing && r.data.includes(missing);
          if (mentions || r.stream.startsWith('version-'))
            console.log(r.pos, r.stream.slice(0, 16), r.type, d.at, mentions ? 'MENTIONS' : '', r.type === 'BlocksRecorded' ? `chunk ${d.chunk}` : '');
        }
      }
      throw new Error(`${when}: committed version ${uid} no longer restores: ${(e as Error).message}`);
    }
    expect(restored.equals(image), `${when}: version ${uid} restored different bytes`).toBe(true);
  }
}

describe('GC invariant: no block of a committed version or a backup in progress is ever deleted', () => {
  let repo: TestRepo | undefined;
  afterEach(() => {
    repo?.close();
    repo = undefined;
  });

  it('holds under concurrent backups, rm, cleanup (grace 0) and delayed, reordered, duplicated block records', async () => {
    const totals: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 4, maxLength: 14 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (ops, seed) => {
        repo?.close();
        repo = makeRepo({ graceSeconds: 0, minAgeDaysForRm: 0 });
        const { committed, stats } = await runScenario(repo, ops, seed);
        if (process.env['GC_DEBUG']) console.log(JSON.stringify(stats));
        for (const [k, v] of Object.entries(stats)) totals[k] = (totals[k] ?? 0) + v;
        await expectAllRestore(repo, committed, 'after the run');
        // A last cleanup with nothing in progress must not take anything a committed version needs.
        // (cleanup -f: with the repository lock, it also deletes objects no index entry knows.)
        totals['deleted'] = (totals['deleted'] ?? 0) + (await repo.backend.cleanup(true, () => {})).deleted;
        await expectAllRestore(repo, committed, 'after a final cleanup');
        // ...and it leaves no block that no version needs.
        const needed = new Set<string>();
        for (const v of await repo.store.listVersions()) if (v.status === 'committed') await referencedIds(repo.store, v, needed);
        expect((await repo.storedBlocks()).filter((id) => !needed.has(id))).toEqual([]);
      }),
      // A fixed seed (GC_SEED to vary it) keeps the op sequences reproducible; timing still varies.
      { numRuns: Number(process.env['GC_RUNS'] ?? 15), seed: Number(process.env['GC_SEED'] ?? 20261128), endOnFailure: true },
    );
    // The scenarios did exercise what they claim to.
    expect(totals['backups']).toBeGreaterThan(0);
    expect(totals['deleted']).toBeGreaterThan(0);
    expect(totals['duplicates']).toBeGreaterThan(0);
    expect(totals['removed']).toBeGreaterThan(0);
  }, 600_000);
});
