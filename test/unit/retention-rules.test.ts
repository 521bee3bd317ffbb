import { usageRefusal } from './helpers/refusal.ts';
import { describe, expect, it } from 'vitest';
import {
  parseRetentionPolicyText,
  parseRules,
  planRetention,
  retentionPolicyFromJson,
  rulesFor,
  type RetentionDecision,
} from '../../shared/domain/retention-rules.ts';
import type { Version } from '../../shared/domain/types.ts';

/** Wednesday 13 March 2024, 12:30 UTC. */
const NOW = new Date('2024-03-13T12:30:00Z');

let n = 0;
function version(date: string, over: Partial<Version> = {}): Version {
  n++;
  return {
    uid: `v${String(n).padStart(3, '0')}-${date}`,
    name: 'vm1',
    snapshotName: '',
    date: new Date(date).toISOString(),
    sizeBytes: 4096,
    blockSize: 4096,
    blockCount: 1,
    chunkCount: 1,
    chunkEntries: 1024,
    recordedChunks: 1,
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
}

const kept = (ds: RetentionDecision[]) => ds.filter((d) => d.keep).map((d) => d.version.date.slice(0, 16));
const removed = (ds: RetentionDecision[]) => ds.filter((d) => !d.keep).map((d) => d.version.date.slice(0, 16));

describe('parseRules', () => {
  it('reads Benji rules in any order', () => {
    expect(parseRules('days7,latest3')).toEqual({ latest: 3, days: 7 });
    expect(parseRules('latest1,hours24,days7,weeks4,months12,years5')).toEqual({ latest: 1, hours: 24, days: 7, weeks: 4, months: 12, years: 5 });
  });
  it('refuses malformed rules with one line saying what is wrong', () => {
    expect(usageRefusal(() => parseRules(''))).toMatch(/empty element/);
    expect(usageRefusal(() => parseRules('latest3,'))).toMatch(/empty element/);
    expect(usageRefusal(() => parseRules('days'))).toMatch(/"days" is not a category followed by a count/);
    expect(usageRefusal(() => parseRules('minutes5'))).toMatch(/unknown category "minutes"/);
    expect(usageRefusal(() => parseRules('days0'))).toMatch(/count of days must be at least 1/);
    expect(usageRefusal(() => parseRules('days3,days4'))).toMatch(/days appears twice/);
  });
});

describe('planRetention (now = Wed 2024-03-13 12:30 UTC)', () => {
  it('latestN keeps the N newest; the rest are older than every rule', () => {
    const vs = ['2024-03-09T10:00Z', '2024-03-10T10:00Z', '2024-03-11T10:00Z', '2024-03-12T10:00Z', '2024-03-13T10:00Z'].map((d) => version(d));
    const plan = planRetention(vs, { latest: 2 }, NOW);
    expect(kept(plan)).toEqual(['2024-03-12T10:00', '2024-03-13T10:00']);
    expect(removed(plan)).toEqual(['2024-03-09T10:00', '2024-03-10T10:00', '2024-03-11T10:00']);
    expect(plan.find((d) => !d.keep)!.reason).toBe('older than every rule');
  });

  it('daysN: calendar days back from today (0 = today), the oldest of each day stays', () => {
    const vs = [
      '2024-03-13T10:00Z', // today, newer → goes
      '2024-03-13T01:00Z', // today, oldest → stays
      '2024-03-12T23:59Z', // yesterday (days 1), though only 12.5 hours ago
      '2024-03-10T18:00Z', // days 3, newer → goes
      '2024-03-10T06:00Z', // days 3, oldest → stays
      '2024-03-06T00:00Z', // days 7 → stays (the count includes 7)
      '2024-03-05T23:59Z', // days 8 → goes
    ].map((d) => version(d));
    const plan = planRetention(vs, { days: 7 }, NOW);
    expect(kept(plan)).toEqual(['2024-03-06T00:00', '2024-03-10T06:00', '2024-03-12T23:59', '2024-03-13T01:00']);
    expect(removed(plan)).toEqual(['2024-03-05T23:59', '2024-03-10T18:00', '2024-03-13T10:00']);
    const why = Object.fromEntries(plan.map((d) => [d.version.date.slice(0, 16), d.reason]));
    expect(why['2024-03-10T18:00']).toBe('a newer one in days bucket 3');
    expect(why['2024-03-10T06:00']).toBe('oldest in days bucket 3');
    expect(why['2024-03-05T23:59']).toBe('older than every rule');
  });

  it('weeksN: weeks start on Monday 00:00 UTC', () => {
    const vs = [
      '2024-03-11T00:30Z', // Monday of this week: weeks 0
      '2024-03-10T23:30Z', // Sunday before: weeks 1, newer → goes
      '2024-03-09T08:00Z', // Saturday: weeks 1, oldest → stays
      '2024-03-04T00:00Z', // Monday a week before: weeks 1 as well, older still → stays instead
      '2024-03-03T23:59Z', // Sunday: weeks 2 → stays
      '2024-02-25T12:00Z', // weeks 3 → beyond weeks2
    ].map((d) => version(d));
    const plan = planRetention(vs, { weeks: 2 }, NOW);
    expect(kept(plan)).toEqual(['2024-03-03T23:59', '2024-03-04T00:00', '2024-03-11T00:30']);
    expect(removed(plan)).toEqual(['2024-02-25T12:00', '2024-03-09T08:00', '2024-03-10T23:30']);
  });

  it('monthsN and yearsN: calendar months and years', () => {
    const vs = [
      '2024-03-01T00:00Z',
      '2024-02-29T23:00Z',
      '2024-02-01T00:00Z',
      '2023-12-31T23:00Z',
      '2023-01-15T00:00Z',
      '2022-06-01T00:00Z',
      '2021-12-31T00:00Z',
    ].map((d) => version(d));
    const plan = planRetention(vs, { months: 2, years: 2 }, NOW);
    // months: Mar (0) keeps 03-01; Feb (1) keeps 02-01, drops 02-29; Dec 2023 is months 3 → years 1 with Jan 2023,
    // the older (01-15) stays; 2022 is years 2; 2021 is beyond.
    expect(kept(plan)).toEqual(['2022-06-01T00:00', '2023-01-15T00:00', '2024-02-01T00:00', '2024-03-01T00:00']);
    expect(removed(plan)).toEqual(['2021-12-31T00:00', '2023-12-31T23:00', '2024-02-29T23:00']);
  });

  it('categories apply in order hours, days, …: the first whose count covers a version takes it', () => {
    const vs = ['2024-03-13T12:10Z', '2024-03-13T11:50Z', '2024-03-13T10:45Z', '2024-03-13T08:00Z', '2024-03-13T03:00Z', '2024-03-12T09:00Z'].map((d) =>
      version(d),
    );
    const plan = planRetention(vs, { latest: 1, hours: 2, days: 1 }, NOW);
    // 12:10 latest; 11:50 hours 1; 10:45 hours 2; 08:00 and 03:00 fall in days 0 (03:00 oldest); 03-12 days 1.
    expect(kept(plan)).toEqual(['2024-03-12T09:00', '2024-03-13T03:00', '2024-03-13T10:45', '2024-03-13T11:50', '2024-03-13T12:10']);
    expect(removed(plan)).toEqual(['2024-03-13T08:00']);
    expect(plan.find((d) => d.version.date.startsWith('2024-03-13T12:10'))!.reason).toBe('latest1');
  });

  it('protected versions stay and do not count; invalid ones are left alone; pending, failed and removed ones take no part', () => {
    const vs = [
      version('2024-03-13T12:00Z', { protected: true }),
      version('2024-03-13T11:00Z', { valid: false }),
      version('2024-03-13T10:00Z', { status: 'pending', valid: false }),
      version('2024-03-13T09:30Z', { status: 'failed', valid: false }),
      version('2024-03-13T09:15Z', { status: 'removed' }),
      version('2024-03-13T09:00Z'),
      version('2024-03-12T09:00Z'),
    ];
    const plan = planRetention(vs, { latest: 1 }, NOW);
    expect(plan.map((d) => [d.version.date.slice(11, 16), d.keep, d.reason])).toEqual([
      ['09:00', false, 'older than every rule'],
      ['09:00', true, 'latest1'],
      ['11:00', true, 'invalid: left alone'],
      ['12:00', true, 'protected'],
    ]);
    expect(plan[0]!.version.date.slice(0, 10)).toBe('2024-03-12');
  });

  it('a version dated after now stays (clock skew errs on the safe side)', () => {
    const plan = planRetention([version('2024-03-14T00:00Z'), version('2024-03-01T00:00Z')], { days: 1 }, NOW);
    expect(plan.map((d) => [d.version.date.slice(0, 10), d.keep, d.reason])).toEqual([
      ['2024-03-01', false, 'older than every rule'],
      ['2024-03-14', true, 'dated in the future'],
    ]);
  });

  it('keeps at least one version of every bucket, whatever the input order', () => {
    const dates = Array.from({ length: 40 }, (_, i) => new Date(NOW.getTime() - i * 7 * 3_600_000).toISOString());
    const forward = planRetention(
      dates.map((d) => version(d)),
      { days: 5 },
      NOW,
    );
    const backward = planRetention(
      [...dates].reverse().map((d) => version(d)),
      { days: 5 },
      NOW,
    );
    expect(kept(forward)).toEqual(kept(backward));
    expect(kept(forward).map((d) => d.slice(0, 10))).toEqual(['2024-03-08', '2024-03-09', '2024-03-10', '2024-03-11', '2024-03-12', '2024-03-13']);
  });
});

describe('per-name policy', () => {
  it('a name has its own entry, else *, else none; INI keys are lower-cased', () => {
    const policy = parseRetentionPolicyText('vm1: latest3,days7; *: latest7\nweb: weeks4', 'retention');
    expect(policy).toEqual({ vm1: 'latest3,days7', '*': 'latest7', web: 'weeks4' });
    expect(rulesFor(policy, 'vm1')).toEqual({ latest: 3, days: 7 });
    expect(rulesFor(policy, 'other')).toEqual({ latest: 7 });
    expect(rulesFor({ vm1: 'latest1' }, 'VM1')).toEqual({ latest: 1 });
    expect(rulesFor({ vm1: 'latest1' }, 'other')).toBeNull();
  });
  it('is validated where it is read', () => {
    expect(usageRefusal(() => parseRetentionPolicyText('vm1: latest3,dayz7', 'context retention'))).toMatch(
      /^context retention vm1: Invalid retention rules "latest3,dayz7": unknown category "dayz"/,
    );
    expect(usageRefusal(() => parseRetentionPolicyText('vm1 latest3', 'context retention'))).toMatch(/expected "name: rules"/);
    expect(retentionPolicyFromJson(undefined)).toEqual({});
    expect(retentionPolicyFromJson('{"vm1":"days7, latest2"}')).toEqual({ vm1: 'latest2,days7' });
    expect(usageRefusal(() => retentionPolicyFromJson('["latest1"]'))).toMatch(/JSON object/);
  });
});
