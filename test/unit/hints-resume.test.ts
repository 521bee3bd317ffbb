import { describe, expect, it } from 'vitest';
import { BlockPlan, parseHints, planHintedBlocks, sanityCheckSample } from '../../shared/domain/hints.ts';
import { decideVersion, evolveVersion, type Policy } from '../../shared/domain/version.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { DomainEvent } from '../../shared/domain/events.ts';
import type { Version } from '../../shared/domain/types.ts';

const BS = 4096;
const { fromBase, read, zero } = BlockPlan;

describe('rbd diff hints', () => {
  it("parses rbd's string booleans and JSON booleans", () => {
    expect(parseHints('[{"offset":0,"length":4096,"exists":"true"},{"offset":8192,"length":1,"exists":false}]', 'h')).toEqual([
      { offset: 0, length: 4096, exists: true },
      { offset: 8192, length: 1, exists: false },
    ]);
  });

  it('refuses what is not rbd diff output, naming the entry (exit 1)', () => {
    const code = (text: string) => {
      try {
        parseHints(text, 'h.json');
        return 0;
      } catch (e) {
        return (e as Backy2Error).exitCode;
      }
    };
    expect(code('nope')).toBe(ExitCode.usage);
    expect(code('{"offset":0}')).toBe(ExitCode.usage);
    expect(code('[{"offset":0,"length":1,"exists":"yes"}]')).toBe(ExitCode.usage);
    expect(() => parseHints('[{"offset":1.5,"length":1,"exists":true}]', 'h.json')).toThrow(/h.json: entry 0.offset/);
  });

  it('plans read for blocks an existing range touches, zero for blocks fully discarded, base for the rest', () => {
    const plan = planHintedBlocks(
      [
        { offset: BS + 10, length: 1, exists: true }, // touches block 1
        { offset: 3 * BS, length: 2 * BS, exists: false }, // blocks 3 and 4 fully discarded
        { offset: 6 * BS + 1, length: BS, exists: false }, // blocks 6 and 7 partly discarded: read
        { offset: 4 * BS, length: 1, exists: true }, // and block 4 written again afterwards: read wins
      ],
      10 * BS,
      BS,
    );
    expect([...plan]).toEqual([fromBase, read, fromBase, zero, read, fromBase, read, read, fromBase, fromBase]);
  });

  it('a discarded range covering the short last block makes it sparse; past the end is exit 5', () => {
    expect([...planHintedBlocks([{ offset: BS, length: 100, exists: false }], BS + 100, BS)]).toEqual([fromBase, zero]);
    expect(() => planHintedBlocks([{ offset: BS, length: 101, exists: true }], BS + 100, BS)).toThrow(
      expect.objectContaining({ exitCode: ExitCode.sourceMismatch }),
    );
    expect([...planHintedBlocks([{ offset: 5 * BS, length: 0, exists: true }], BS, BS)]).toEqual([fromBase]); // empty ranges are ignored
  });

  it('samples max(10, 0.1 %) of the unhinted blocks, only unhinted ones, without repeats', () => {
    const plan = new Uint8Array(20_000);
    plan.fill(read, 0, 5000);
    const sample = sanityCheckSample(plan, () => 0.5);
    expect(sample).toHaveLength(15);
    expect(new Set(sample).size).toBe(15);
    expect(sample.every((i) => i >= 5000)).toBe(true);
    expect(sanityCheckSample(Uint8Array.from([read, fromBase, zero, fromBase]))).toEqual([1, 3]);
  });
});

describe('ResumeVersion (backup -c)', () => {
  const UID = '0190a2b4-1c2d-7e3f-8a4b-5c6d7e8f9a0b';
  const T0 = new Date('2026-03-01T12:00:00.000Z');
  const policy: Policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 3600 };
  const history: DomainEvent[] = [
    {
      type: 'VersionStarted',
      v: 1,
      uid: UID,
      name: 'vm1',
      snapshotName: '',
      sizeBytes: 5 * BS,
      blockSize: BS,
      chunkEntries: 2,
      baseUid: null,
      tags: [],
      expire: null,
      host: 'h1',
      at: T0.toISOString(),
    },
  ];
  const fold = (events: DomainEvent[]) => events.reduce<Version | undefined>(evolveVersion, undefined)!;
  const resume = { type: 'ResumeVersion' as const, uid: UID, sizeBytes: 5 * BS, blockSize: BS, host: 'h2' };
  const at = (ms: number) => ({ now: new Date(T0.getTime() + ms), policy });

  it('a failed version becomes pending again; its run starts anew, so a late commit is judged from the resume', () => {
    const failed = fold([...history, { type: 'VersionFailed', v: 1, uid: UID, reason: 'EIO', at: T0.toISOString() }]);
    const events = decideVersion(resume, failed, at(2 * 3600_000));
    expect(events).toEqual([{ type: 'VersionResumed', v: 1, uid: UID, host: 'h2', at: new Date(T0.getTime() + 2 * 3600_000).toISOString() }]);
    const resumed = events.reduce<Version | undefined>(evolveVersion, failed)!;
    expect(resumed).toMatchObject({ status: 'pending', valid: false, host: 'h2', date: T0.toISOString(), startedAt: events[0]!.at });
    // Without the resume the commit would be 2 h late; after it, the age counts from the resume.
    const recorded = { ...resumed, recordedChunks: resumed.chunkCount };
    const stats = { bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksDedup: 0, blocksSparse: 0, durationSeconds: 1 };
    expect(decideVersion({ type: 'CommitVersion', uid: UID, stats }, recorded, at(2 * 3600_000 + 60_000))[0]!.type).toBe('VersionCommitted');
    expect(() => decideVersion({ type: 'CommitVersion', uid: UID, stats }, { ...recorded, startedAt: undefined }, at(2 * 3600_000 + 60_000))).toThrow(
      /started more than/,
    );
  });

  it('refuses a committed version (4), another source size (5), another block size (4), a removed one (3)', () => {
    const code = (v: Version, cmd = resume) => {
      try {
        decideVersion(cmd, v, at(1000));
        return 0;
      } catch (e) {
        return (e as Backy2Error).exitCode;
      }
    };
    const pending = fold(history);
    expect(code(pending)).toBe(0);
    expect(code({ ...pending, status: 'committed', valid: true })).toBe(ExitCode.refused);
    expect(code(pending, { ...resume, sizeBytes: 6 * BS })).toBe(ExitCode.sourceMismatch);
    expect(code(pending, { ...resume, blockSize: 2 * BS })).toBe(ExitCode.refused);
    expect(code({ ...pending, status: 'removed' })).toBe(ExitCode.notFound);
  });
});
