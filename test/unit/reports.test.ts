/**
 * The report commands' computations (stats, du, diff-meta) over hand-built block maps, with the
 * answers worked out by hand in the comments. The reader is an in-memory MetadataReader, so the
 * tests exercise chunking, `sameAs` chunk references, pending versions' recorded chunks, and
 * removed/failed versions exactly as the real stores present them.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { countReferences, diffBlockMaps, duReport, resolveDiffPair, statsReport } from '../../shared/app/reports.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';
import { ExitCode } from '../../shared/domain/errors.ts';
import { addBlockUsage, diffStatus, emptyUsage, lastBlockOutcome, selectStats, statsRowOf, type StatsRow } from '../../shared/domain/reports.ts';
import type { BlockIndexEntry, Version, VersionStats } from '../../shared/domain/types.ts';
import type { MetadataReader } from '../../shared/ports/catalog.ts';
import type { StoredChunk } from '../../shared/ports/metadata-store.ts';

const BS = 100;
/** Block ids by letter: 'A' → '4141…' (64 hex chars). */
const id = (letter: string) => letter.charCodeAt(0).toString(16).repeat(32);
const letterOf = (blockId: string) => String.fromCharCode(parseInt(blockId.slice(0, 2), 16));
const STORED: Record<string, number> = { A: 50, B: 60, C: 30, D: 70, E: 80, F: 90, G: 10, H: 20 };

type Cell = string | null | [string | null, number]; // letter, null = sparse, or [letter|null, length]

class FakeReader implements MetadataReader {
  readonly versions = new Map<string, Version>();
  readonly chunks = new Map<string, StoredChunk>();
  readonly blocks = new Map<string, BlockIndexEntry>();
  chunkReads = 0;

  constructor(createdAt = '2026-01-01T00:00:00.000Z') {
    for (const [letter, storedSize] of Object.entries(STORED))
      this.blocks.set(id(letter), { id: id(letter), storedSize, checksum: '0'.repeat(64), createdAt, unreferencedSince: null, deleting: false, valid: true });
  }

  /** Adds a version whose map is `cells`, stored `chunkEntries` per chunk; `recorded` limits the chunks stored (a backup in progress). */
  add(cells: Cell[], over: Partial<Version> & { chunkEntries?: number; recorded?: number } = {}): Version {
    const chunkEntries = over.chunkEntries ?? 2;
    const entries = cells.map((c, idx) => {
      const [letter, length] = Array.isArray(c) ? c : [c, BS];
      return { idx, id: letter === null ? null : id(letter), length };
    });
    const sizeBytes = entries.reduce((s, e) => s + e.length, 0);
    const chunkCount = Math.ceil(cells.length / chunkEntries);
    const v: Version = {
      uid: randomUUID(),
      name: 'vm',
      snapshotName: '',
      date: '2026-02-01T00:00:00.000Z',
      sizeBytes,
      blockSize: BS,
      blockCount: cells.length,
      chunkCount,
      chunkEntries,
      recordedChunks: chunkCount,
      baseUid: null,
      host: 'h',
      status: 'committed',
      valid: true,
      protected: false,
      tags: [],
      expire: null,
      stats: null,
      seq: 2,
      ...over,
    };
    const recorded = over.recorded ?? chunkCount;
    for (let c = 0; c < recorded; c++)
      this.chunks.set(`${v.uid}/${c}`, { entries: packChunk(entries.slice(c * chunkEntries, (c + 1) * chunkEntries)), sameAs: null });
    this.versions.set(v.uid, v);
    return v;
  }

  async getVersion(uid: string) {
    return this.versions.get(uid);
  }
  async listVersions() {
    return [...this.versions.values()];
  }
  async getChunk(uid: string, chunk: number) {
    this.chunkReads++;
    return this.chunks.get(`${uid}/${chunk}`);
  }
  async getBlocks(ids: string[]) {
    return new Map(ids.filter((i) => this.blocks.has(i)).map((i) => [i, this.blocks.get(i)!]));
  }
  async *scanBlocks() {
    yield [...this.blocks.values()];
  }
}

const stats = (over: Partial<VersionStats> = {}): VersionStats => ({
  bytesRead: 0,
  bytesWritten: 0,
  blocksWritten: 0,
  blocksDedup: 0,
  blocksSparse: 0,
  durationSeconds: 1,
  ...over,
});

describe('addBlockUsage: one distinct block, as backy2 sql.py du', () => {
  it('a block only this version uses once is Individual and freed', () => {
    const u = emptyUsage();
    addBlockUsage(u, 100, 1, 1);
    expect(u).toEqual({ real: 100, null: 0, dedupOwn: 0, dedupOthers: 0, individual: 100, estSpace: 100, estSpaceFreed: 100 });
  });
  it('used 3 times here only: Dedup Own counts all but one reference, nothing Individual, all freed', () => {
    const u = emptyUsage();
    addBlockUsage(u, 100, 3, 3);
    expect(u).toEqual({ real: 300, null: 0, dedupOwn: 200, dedupOthers: 0, individual: 0, estSpace: 100 / 3, estSpaceFreed: 100 });
  });
  it('also used elsewhere: every reference here is Dedup Others, nothing freed; Est. Space is size / all references', () => {
    const u = emptyUsage();
    addBlockUsage(u, 100, 2, 5);
    expect(u).toEqual({ real: 200, null: 0, dedupOwn: 0, dedupOthers: 200, individual: 0, estSpace: 20, estSpaceFreed: 0 });
  });
});

describe('du over hand-built block maps', () => {
  // Holders (committed + in progress): V1, V2, P. Removed R and failed X hold nothing.
  //   V1 = A A _ B C(40)     V2 = A D D _ E     P (in progress, chunk 0 of 2 recorded) = E F | (G H not recorded)
  //   R (removed) = C G      X (failed) = B H
  // References everywhere: A 3 (V1 ×2, V2), B 1, C 1, D 2, E 2 (V2, P), F 1; G and H none.
  const setup = () => {
    const r = new FakeReader();
    const v1 = r.add(['A', 'A', null, 'B', ['C', 40]], { name: 'v1', date: '2026-02-01T00:00:00.000Z' });
    const v2 = r.add(['A', 'D', 'D', null, 'E'], { name: 'v2', date: '2026-02-02T00:00:00.000Z' });
    const p = r.add(['E', 'F', 'G', 'H'], { name: 'p', status: 'pending', valid: false, recorded: 1 });
    const removed = r.add(['C', 'G'], { name: 'r', status: 'removed' });
    const failed = r.add(['B', 'H'], { name: 'x', status: 'failed', valid: false });
    return { r, v1, v2, p, removed, failed };
  };

  it('counts references over committed versions and the recorded chunks of backups in progress only', async () => {
    const { r, v1, v2, p } = setup();
    const refs = await countReferences(r, [v1, v2, p]);
    expect(Object.fromEntries([...refs].map(([k, n]) => [letterOf(k), n]))).toEqual({ A: 3, B: 1, C: 1, D: 2, E: 2, F: 1 });
  });

  it('V1: Real 340, Null 100, Dedup Others 200 (A twice), Individual 140 (B, C), Est. Space 100/3+100+40, freed 140', async () => {
    const { r, v1 } = setup();
    const [row] = await duReport(r, v1.uid);
    expect(row!.uid).toBe(v1.uid);
    expect(row!.plain).toEqual({ real: 340, null: 100, dedupOwn: 0, dedupOthers: 200, individual: 140, estSpace: 100 / 3 + 140, estSpaceFreed: 140 });
    // Stored sizes A 50, B 60, C 30: Real 50·2+60+30, Others 100, Individual 90, Est. 50/3+90, freed 90.
    expect(row!.stored).toEqual({ real: 190, null: 0, dedupOwn: 0, dedupOthers: 100, individual: 90, estSpace: 50 / 3 + 90, estSpaceFreed: 90 });
  });

  it('V2: D twice is Dedup Own 100; E shared with the backup in progress is Dedup Others and not freed', async () => {
    const { r, v2 } = setup();
    const [row] = await duReport(r, v2.uid);
    // A (others) 100 + E (others: P) 100 = 200; D own 2 → Dedup Own 100; Est. 100/3 + 100/2 + 100/2; freed: D only.
    expect(row!.plain).toEqual({ real: 400, null: 100, dedupOwn: 100, dedupOthers: 200, individual: 0, estSpace: 100 / 3 + 100, estSpaceFreed: 100 });
    // Stored A 50, D 70, E 80: Real 50+140+80, Own 70, Others 130, Est. 50/3 + 35 + 40, freed 70.
    expect(row!.stored).toEqual({ real: 270, null: 0, dedupOwn: 70, dedupOthers: 130, individual: 0, estSpace: 50 / 3 + 75, estSpaceFreed: 70 });
  });

  it('without a uid: one row per committed version, the same figures as one by one', async () => {
    const { r, v1, v2 } = setup();
    const rows = await duReport(r);
    expect(rows.map((x) => x.uid)).toEqual([v1.uid, v2.uid]);
    expect(rows[0]).toEqual((await duReport(r, v1.uid))[0]);
    expect(rows[1]).toEqual((await duReport(r, v2.uid))[0]);
  });

  it('after V2 is removed, its D is gone and A, E are counted without it', async () => {
    const { r, v1, v2 } = setup();
    r.versions.set(v2.uid, { ...v2, status: 'removed' });
    const [row] = await duReport(r, v1.uid);
    // A now only in V1 (twice): Dedup Own 100, freed 100 more; Est. A 100/2.
    expect(row!.plain).toEqual({ real: 340, null: 100, dedupOwn: 100, dedupOthers: 0, individual: 140, estSpace: 50 + 140, estSpaceFreed: 240 });
  });

  it('follows sameAs chunk references', async () => {
    const { r, v1 } = setup();
    const copy = r.add(['A', 'A', null, 'B', ['C', 40]], { name: 'v3' });
    r.chunks.set(`${copy.uid}/0`, { entries: null, sameAs: { uid: v1.uid, chunk: 0 } });
    const [row] = await duReport(r, v1.uid);
    // Every block of V1 is now in V3 as well: all Dedup Others, nothing freed.
    expect(row!.plain).toMatchObject({ dedupOthers: 340, individual: 0, estSpaceFreed: 0 });
  });

  it('refuses a backup in progress (exit 4) and does not find removed or unknown versions (exit 3)', async () => {
    const { r, p, removed } = setup();
    await expect(duReport(r, p.uid)).rejects.toMatchObject({ exitCode: ExitCode.refused });
    await expect(duReport(r, removed.uid)).rejects.toMatchObject({ exitCode: ExitCode.notFound });
    await expect(duReport(r, randomUUID())).rejects.toMatchObject({ exitCode: ExitCode.notFound });
  });
});

describe('stats rows', () => {
  it('derives blocks read and the dedup/sparse bytes; a short last block counts at its length', () => {
    const r = new FakeReader();
    // 5 blocks, the last 40 bytes: 3 written (B, C, and A), 1 dedup (the second A), 1 sparse.
    const v = r.add(['A', 'A', null, 'B', ['C', 40]], {
      stats: stats({ bytesRead: 440, bytesWritten: 140, blocksWritten: 3, blocksDedup: 1, blocksSparse: 1, durationSeconds: 2.4 }),
    });
    const row = statsRowOf(v, 'written')!;
    expect(row).toMatchObject({
      sizeBytes: 440,
      sizeBlocks: 5,
      bytesRead: 440,
      blocksRead: 5,
      bytesWritten: 140,
      blocksWritten: 3,
      bytesDedup: 100,
      blocksDedup: 1,
      bytesSparse: 100,
      blocksSparse: 1,
    });
    expect(statsRowOf(v, 'dedup')).toMatchObject({ bytesDedup: 40, bytesSparse: 100 });
    expect(statsRowOf(v, 'sparse')).toMatchObject({ bytesDedup: 100, bytesSparse: 40 });
    expect(statsRowOf({ ...v, stats: null }, null)).toBeNull();
  });

  it('decides what the run did with a short last block', () => {
    const r = new FakeReader();
    const v = r.add(['A', ['B', 40]], { stats: stats({ blocksWritten: 1, blocksDedup: 1 }) });
    expect(lastBlockOutcome(v, true, undefined)).toBe('sparse');
    expect(lastBlockOutcome(v, false, true)).toBe('written');
    expect(lastBlockOutcome(v, false, false)).toBe('dedup');
    expect(lastBlockOutcome(v, false, undefined)).toBe('written'); // no base: a first backup wrote it
    expect(lastBlockOutcome({ ...v, baseUid: randomUUID() }, false, undefined)).toBe('dedup');
    expect(lastBlockOutcome({ ...v, stats: stats({ blocksWritten: 0, blocksDedup: 2 }) }, false, true)).toBe('dedup');
    expect(lastBlockOutcome({ ...v, stats: stats({ blocksWritten: 2, blocksDedup: 0 }) }, false, false)).toBe('written');
    const full = r.add(['A', 'B'], { stats: stats({ blocksWritten: 1, blocksDedup: 1 }) });
    expect(lastBlockOutcome(full, true, undefined)).toBeNull();
  });

  it('statsReport: committed and removed versions have rows, pending and failed none; oldest first; -l keeps the newest', async () => {
    const r = new FakeReader('2026-02-03T00:00:00.000Z'); // index entries created during v3's run
    const day = (d: number) => `2026-02-0${d}T00:00:00.000Z`;
    const v1 = r.add(['A'], { date: day(2), stats: stats({ bytesRead: 100, blocksWritten: 1 }) });
    const v2 = r.add(['A'], { date: day(1), status: 'removed', stats: stats({ bytesRead: 100, blocksDedup: 1 }) });
    r.add(['B'], { date: day(4), status: 'pending', valid: false });
    r.add(['H'], { date: day(5), status: 'failed', valid: false });
    const v3 = r.add(['A', null, ['C', 40]], { date: day(3), stats: stats({ bytesRead: 240, blocksWritten: 1, blocksDedup: 1, blocksSparse: 1 }) });
    const all = await statsReport(r);
    expect(all.map((s) => s.uid)).toEqual([v2.uid, v1.uid, v3.uid]);
    // v3: C (short, created in the run) was written; A dedup'd: dedup bytes are a full block.
    expect(all[2]).toMatchObject({ blocksRead: 3, bytesDedup: 100, bytesSparse: 100 });
    expect((await statsReport(r, { limit: 2 })).map((s) => s.uid)).toEqual([v1.uid, v3.uid]);
    expect(await statsReport(r, { limit: 0 })).toEqual([]);
    // A removed version is found by its full uid (its stats row outlives it) …
    expect((await statsReport(r, { uid: v2.uid })).map((s) => s.uid)).toEqual([v2.uid]);
    // … an unknown one is not.
    await expect(statsReport(r, { uid: randomUUID() })).rejects.toMatchObject({ exitCode: ExitCode.notFound });
  });

  it('selectStats sorts by date and keeps the newest N', () => {
    const row = (date: string) => ({ date, uid: date }) as StatsRow;
    expect(selectStats([row('b'), row('c'), row('a')], 2).map((s) => s.date)).toEqual(['b', 'c']);
  });
});

describe('diff-meta', () => {
  it('diffStatus: same id (or both sparse and equally long) is SAME, else DIFF; one side only is NEW LEFT/RIGHT', () => {
    const e = (letter: string | null, length = BS) => ({ idx: 0, id: letter === null ? null : id(letter), length });
    expect(diffStatus(e('A'), e('A'))).toBe('SAME');
    expect(diffStatus(e(null), e(null))).toBe('SAME');
    expect(diffStatus(e(null), e(null, 40))).toBe('DIFF');
    expect(diffStatus(e('A'), e(null))).toBe('DIFF');
    expect(diffStatus(e('A'), e('B'))).toBe('DIFF');
    expect(diffStatus(e('A'), undefined)).toBe('NEW LEFT');
    expect(diffStatus(undefined, e('A'))).toBe('NEW RIGHT');
  });

  it('compares maps of different lengths and chunk sizes, batch by batch', async () => {
    const r = new FakeReader();
    const left = r.add(['A', 'A', null, 'B', ['C', 40]], { chunkEntries: 2 });
    const right = r.add(['A', 'B', null, 'B', 'C', 'D', null], { chunkEntries: 3 });
    const batches: string[][] = [];
    for await (const rows of diffBlockMaps(r, left, right, 2)) batches.push(rows.map((x) => `${x.idx}:${x.status}`));
    expect(batches).toEqual([['0:SAME', '1:DIFF'], ['2:SAME', '3:SAME'], ['4:DIFF', '5:NEW RIGHT'], ['6:NEW RIGHT']]);
    const swapped: string[] = [];
    for await (const rows of diffBlockMaps(r, right, left, 4)) swapped.push(...rows.map((x) => x.status));
    expect(swapped).toEqual(['SAME', 'DIFF', 'SAME', 'SAME', 'DIFF', 'NEW LEFT', 'NEW LEFT']);
  });

  it('reads the maps chunk by chunk, never ahead of the batch being printed', async () => {
    const r = new FakeReader();
    const cells = Array.from({ length: 40 }, (_, i) => (i % 3 ? 'A' : null));
    const left = r.add(cells, { chunkEntries: 4 });
    const right = r.add(cells, { chunkEntries: 4 });
    const it = diffBlockMaps(r, left, right, 4)[Symbol.asyncIterator]();
    r.chunkReads = 0;
    const first = await it.next();
    expect(first.value.map((x: { status: string }) => x.status)).toEqual(['SAME', 'SAME', 'SAME', 'SAME']);
    expect(r.chunkReads).toBe(2); // one chunk of each side, not all 10 of each
  });

  it('resolveDiffPair: a backup in progress is refused (4), an unknown uid is not found (3)', async () => {
    const r = new FakeReader();
    const v = r.add(['A']);
    const p = r.add(['A'], { status: 'pending', valid: false });
    await expect(resolveDiffPair(r, v.uid, p.uid)).rejects.toMatchObject({ exitCode: ExitCode.refused });
    await expect(resolveDiffPair(r, v.uid, randomUUID())).rejects.toMatchObject({ exitCode: ExitCode.notFound });
    await expect(resolveDiffPair(r, v.uid, v.uid)).resolves.toHaveLength(2);
  });
});
