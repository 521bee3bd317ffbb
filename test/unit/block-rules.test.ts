import { describe, expect, it } from 'vitest';
import { evolveBlockIndex, evolveEntry, isLive, newEntry, touchFinds } from '../../shared/domain/block-index.ts';
import { decideByContent, decideByIndex, outcomeOf } from '../../shared/domain/backup.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import type { BlockIndexEntry } from '../../shared/domain/types.ts';

const id = 'a'.repeat(64);
const block = { id, storedSize: 10, checksum: 'c'.repeat(64) };
const t0 = '2026-01-01T00:00:00.000Z';
const t1 = '2026-01-01T00:00:01.000Z';
const live: BlockIndexEntry = newEntry(block, t0);
const marked: BlockIndexEntry = { ...live, unreferencedSince: t0 };
const claimed: BlockIndexEntry = { ...marked, deleting: true };

describe('block-index rules (shared/domain/block-index.ts)', () => {
  it('a re-mark keeps the first mark', () => {
    expect(evolveEntry(marked, { kind: 'marked', id, at: t1 })?.unreferencedSince).toBe(t0);
  });
  it('a claim needs the mark it was planned with; a claimed entry is never marked, referenced or rekeyed', () => {
    expect(evolveEntry(marked, { kind: 'claimed', id, markedAt: t1 })).toEqual(marked);
    expect(evolveEntry(marked, { kind: 'claimed', id, markedAt: t0 })).toEqual(claimed);
    expect(evolveEntry(claimed, { kind: 'referenced', id })).toEqual(claimed);
    expect(evolveEntry(claimed, { kind: 'rekeyed', id, block: { ...block, storedSize: 99 } })).toEqual(claimed);
  });
  it('only a claimed entry is deleted; a new upload revives it', () => {
    expect(evolveEntry(marked, { kind: 'deleted', id })).toEqual(marked);
    expect(evolveEntry(claimed, { kind: 'deleted', id })).toBeUndefined();
    expect(evolveEntry(claimed, { kind: 'recorded', id, block, at: t1 })).toEqual(live);
  });
  it('the late record of a backup that is no longer in progress changes nothing', () => {
    const event: EventOf<'BlocksRecorded'> = { type: 'BlocksRecorded', v: 1, uid: 'u', chunk: 0, entries: null, sameAs: null, newBlocks: [block], at: t0 };
    expect(evolveBlockIndex(new Map(), event, false).size).toBe(0);
    expect(evolveBlockIndex(new Map(), event, true).get(id)).toEqual(live);
  });
  it('questions: isLive and what a touch finds', () => {
    expect([live, marked, claimed, { ...live, valid: false }, undefined].map(isLive)).toEqual([true, false, false, false, false]);
    expect([live, marked, claimed, undefined].map(touchFinds)).toEqual(['live', 'live', 'deleting', 'created']);
  });
});

describe('a backup block decision (shared/domain/backup.ts)', () => {
  it('asks the index only when content, this run and the base do not decide', () => {
    expect(decideByContent({ zero: true, seenThisRun: true, sameAsBase: true })).toBe('sparse');
    expect(decideByContent({ zero: false, seenThisRun: true, sameAsBase: true })).toBe('same as earlier');
    expect(decideByContent({ zero: false, seenThisRun: false, sameAsBase: true })).toBe('reuse base');
    expect(decideByContent({ zero: false, seenThisRun: false, sameAsBase: false })).toBe('ask the index');
  });
  it('dedups against live entries, replaces invalid copies, uploads otherwise', () => {
    expect(decideByIndex(live)).toBe('dedup');
    expect(decideByIndex({ ...live, valid: false })).toBe('replace invalid copy');
    expect(decideByIndex({ ...claimed, valid: false })).toBe('upload');
    expect(decideByIndex(marked)).toBe('upload');
    expect(decideByIndex(undefined)).toBe('upload');
  });
  it('counts an upload as written only if it stored a new object', () => {
    expect(outcomeOf('ask the index', true)).toBe('written');
    expect(outcomeOf('ask the index', false)).toBe('dedup');
    expect(outcomeOf('reuse base')).toBe('dedup');
    expect(outcomeOf('sparse')).toBe('sparse');
  });
});
