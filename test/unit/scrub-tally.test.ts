import { describe, expect, it } from 'vitest';
import { ScrubTally } from '../../shared/domain/scrub.ts';

const idOf = (i: number) => i.toString(16).padStart(64, '0');

describe('ScrubTally (what a scrub found, each block once)', () => {
  it('keeps each block once, in the order first found, and a failure its first reason', () => {
    const tally = new ScrubTally();
    tally.verified(idOf(2));
    tally.failed(idOf(1), 'Blob not found');
    tally.verified(idOf(2));
    tally.failed(idOf(1), 'checksum differs');
    tally.verified(idOf(3));
    expect(tally.verifiedList).toEqual([idOf(2), idOf(3)]);
    expect(tally.failures).toEqual([{ id: idOf(1), reason: 'Blob not found' }]);
  });

  // 400 000 distinct blocks (a 1.6 TiB device), each found twice as a version maps it at two
  // positions: with a membership test over arrays (the old code) this is ~10^11 comparisons and
  // never finishes within the test timeout; with sets it is linear.
  it('tallies a scrub of 400 000 distinct blocks, each found twice', () => {
    const distinct = 400_000;
    const tally = new ScrubTally();
    for (let pass = 0; pass < 2; pass++)
      for (let i = 0; i < distinct; i++) {
        if (i % 100 === 7) tally.failed(idOf(i), `failure ${pass}`);
        else tally.verified(idOf(i));
      }
    const verified = tally.verifiedList;
    const failures = tally.failures;
    expect(verified).toHaveLength(distinct - distinct / 100);
    expect(failures).toHaveLength(distinct / 100);
    expect(new Set(verified).size).toBe(verified.length);
    expect(verified[0]).toBe(idOf(0));
    expect(verified.at(-1)).toBe(idOf(distinct - 1));
    expect(failures.every((f) => f.reason === 'failure 0')).toBe(true);
  });
});
