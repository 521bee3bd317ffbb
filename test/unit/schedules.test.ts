import { usageRefusal } from './helpers/refusal.ts';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config/config.ts';
import {
  BUILTIN_SCHEDULERS,
  EPOCH,
  dueSince,
  parseDuration,
  planDue,
  resolveSchedulers,
  scheduleTags,
  slaBreaches,
  type Scheduler,
} from '../../shared/domain/schedules.ts';
import type { Version } from '../../shared/domain/types.ts';

const NOW = new Date('2024-03-13T12:00:00Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const ago = (ms: number) => new Date(NOW.getTime() - ms);

let n = 0;
function version(date: Date, tags: string[], over: Partial<Version> = {}): Version {
  n++;
  return {
    uid: `u${n}`,
    name: 'vm1',
    snapshotName: '',
    date: date.toISOString(),
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
    tags,
    expire: null,
    stats: null,
    seq: 2,
    ...over,
  };
}

const daily: Scheduler = { name: 'daily', intervalSeconds: 86_400, keep: 3, slaSeconds: 6 * 3600 };
const hourly: Scheduler = { name: 'hourly', intervalSeconds: 3600, keep: 2, slaSeconds: 600 };

describe('scheduler config', () => {
  it('parses N s/m/h/d as backy2', () => {
    expect([parseDuration('30s'), parseDuration('5m'), parseDuration('6h'), parseDuration('7d'), parseDuration(' 2 d ')]).toEqual([
      30, 300, 21_600, 604_800, 172_800,
    ]);
    expect([parseDuration('1w'), parseDuration('h'), parseDuration('1.5h'), parseDuration('')]).toEqual([null, null, null, null]);
  });
  it('reads scheduler sections and [retention] from the config', () => {
    const c = parseConfig(
      '[daily]\ninterval: 1d\nkeep: 8\nsla: 6h\n[hourly]\ninterval: 1h\nkeep: 0\nsla: 0s\n[retention]\nvm1: latest3,days7\n*: latest7\n',
      'x.cfg',
    );
    expect(c.schedulers).toEqual([
      { name: 'daily', intervalSeconds: 86_400, keep: 8, slaSeconds: 21_600 },
      { name: 'hourly', intervalSeconds: 3600, keep: 0, slaSeconds: 0 },
    ]);
    expect(c.retention).toEqual({ vm1: 'latest3,days7', '*': 'latest7' });
    expect(parseConfig('', 'x.cfg')).toMatchObject({ schedulers: [], retention: {} });
  });
  it('a malformed scheduler or retention entry is one line naming the section and key', () => {
    expect(usageRefusal(() => parseConfig('[daily]\ninterval: 1w\nkeep: 8\nsla: 6h\n', 'x.cfg'))).toBe(
      'Malformed config x.cfg: [daily] interval: interval must be N followed by s, m, h or d (e.g. 6h), more than 0, got "1w"',
    );
    expect(usageRefusal(() => parseConfig('[daily]\ninterval: 0d\nkeep: 8\nsla: 6h\n', 'x.cfg'))).toMatch(/\[daily\] interval: .*more than 0/);
    expect(usageRefusal(() => parseConfig('[daily]\ninterval: 1d\nsla: 6h\n', 'x.cfg'))).toMatch(/^Malformed config x\.cfg: \[daily\] keep: keep is missing/);
    expect(usageRefusal(() => parseConfig('[weekly]\ninterval: 7d\nkeep: -1\nsla: 1d\n', 'x.cfg'))).toMatch(/\[weekly\] keep: keep must be an integer >= 0/);
    expect(usageRefusal(() => parseConfig('[weekly]\ninterval: 7d\nkeep: 2\n', 'x.cfg'))).toMatch(/\[weekly\] sla: sla is missing/);
    expect(usageRefusal(() => parseConfig('[retention]\nvm1: latest3,days\n', 'x.cfg'))).toMatch(
      /^Malformed config x\.cfg: \[retention\] vm1: Invalid retention rules "latest3,days"/,
    );
  });
  it('-s picks configured sections first, then the built-in daily/weekly/monthly; an unknown name is a usage error', () => {
    expect(resolveSchedulers(undefined, []).map((s) => s.name)).toEqual(['daily', 'weekly', 'monthly']);
    expect(resolveSchedulers(undefined, [daily])[0]).toBe(daily);
    expect(resolveSchedulers(undefined, [daily])[1]).toBe(BUILTIN_SCHEDULERS['weekly']);
    expect(resolveSchedulers('hourly, daily', [hourly])).toEqual([hourly, BUILTIN_SCHEDULERS['daily']]);
    expect(usageRefusal(() => resolveSchedulers('yearly', [daily]))).toMatch(/Unknown scheduler "yearly": the config has no \[yearly\] section/);
  });
});

describe('due', () => {
  it('never backed up: due since 1970; keep 0: never due', () => {
    expect(dueSince('vm1', daily, [], NOW)).toEqual(EPOCH);
    expect(dueSince('vm1', { ...daily, keep: 0 }, [], NOW)).toBeNull();
  });
  it('due once now > last + interval − sla; counts b_<name> and plain <name> tags of valid committed versions of that name', () => {
    // interval 1d, sla 6h: a version 17 h old → not due; 19 h old → due since 1 h ago.
    expect(dueSince('vm1', daily, [version(ago(17 * HOUR), ['b_daily'])], NOW)).toBeNull();
    expect(dueSince('vm1', daily, [version(ago(19 * HOUR), ['b_daily'])], NOW)).toEqual(ago(HOUR));
    expect(dueSince('vm1', daily, [version(ago(19 * HOUR), ['daily']), version(ago(2 * HOUR), ['daily'])], NOW)).toBeNull();
    for (const other of [
      version(ago(HOUR), ['b_weekly']),
      version(ago(HOUR), ['b_daily'], { name: 'vm2' }),
      version(ago(HOUR), ['b_daily'], { valid: false }),
      version(ago(HOUR), ['b_daily'], { status: 'removed' }),
      version(ago(HOUR), ['b_daily'], { status: 'pending', valid: false }),
    ])
      expect(dueSince('vm1', daily, [other], NOW)).toEqual(EPOCH);
  });
  it('one row per due name: its due schedulers, expiry now + (keep+1)·interval of the longest, due_since the earliest; sorted by due_since', () => {
    const versions = [
      version(ago(20 * HOUR), ['b_daily', 'b_hourly'], { name: 'vm1' }),
      version(ago(30 * 60_000), ['b_hourly'], { name: 'vm1' }),
      version(ago(2 * DAY), ['b_daily', 'b_hourly'], { name: 'vm2' }),
      version(ago(HOUR), ['b_daily', 'b_hourly'], { name: 'vm3' }),
    ];
    const rows = planDue(['vm1', 'vm2', 'vm3', 'new'], [daily, hourly], versions, NOW);
    expect(rows.map((r) => [r.name, r.schedulers, r.dueSince.toISOString(), r.expireDate.toISOString()])).toEqual([
      ['new', ['daily', 'hourly'], EPOCH.toISOString(), new Date(NOW.getTime() + 4 * DAY).toISOString()],
      ['vm2', ['daily', 'hourly'], ago(2 * DAY - 50 * 60_000).toISOString(), new Date(NOW.getTime() + 4 * DAY).toISOString()],
      ['vm1', ['daily'], ago(2 * HOUR).toISOString(), new Date(NOW.getTime() + 4 * DAY).toISOString()],
      ['vm3', ['hourly'], ago(10 * 60_000).toISOString(), new Date(NOW.getTime() + 3 * HOUR).toISOString()],
    ]);
  });
});

describe('sla', () => {
  const at = (hoursAgo: number[]) => hoursAgo.map((h) => version(ago(h * HOUR), ['b_daily']));
  it('no breach for versions a day apart, within keep', () => {
    expect(slaBreaches('vm1', daily, at([50, 26, 2]), NOW)).toEqual([]);
  });
  it('too few, too many (more than keep + 2)', () => {
    expect(slaBreaches('vm1', daily, at([2]), NOW)).toEqual(['daily: Too few backups. Found 1, should be 3.']);
    const many = slaBreaches('vm1', { ...daily, keep: 1 }, at([74, 50, 26, 2]), NOW);
    expect(many[0]).toBe('daily: Too many backups. Found 4, should be 1.');
  });
  it('latest too old, gap outside interval ± sla, oldest beyond keep·interval + sla + 1 day', () => {
    const vs = at([150, 98, 60, 31]);
    const b = slaBreaches('vm1', daily, vs, NOW);
    expect(b).toContain(`daily: Latest backup is too old. Version ${vs[3]!.uid} has date 2024-03-12 05:00:00, new backup due since 2024-03-13 11:00:00.`);
    expect(b).toContain(
      `daily: Version ${vs[1]!.uid} is not in SLA range. It was created at 2024-03-09 10:00:00 and should be between 2024-03-08 00:00:00 and 2024-03-08 12:00:00.`,
    );
    expect(b).toContain(
      `daily: Version ${vs[2]!.uid} is not in SLA range. It was created at 2024-03-11 00:00:00 and should be between 2024-03-10 04:00:00 and 2024-03-10 16:00:00.`,
    );
    expect(b).toContain(
      `daily: Backup too old. Found version_uid ${vs[0]!.uid} with backup date 2024-03-07 06:00:00. Oldest allowed date is 2024-03-09 06:00:00.`,
    );
    expect(b).toHaveLength(4); // the 03-12 version is 29 h after the previous one: within 24 h ± 6 h
  });
});

describe('scheduleTags (backup without -t)', () => {
  it('without scheduler sections: backy2 rule, all three on a first backup', () => {
    expect(scheduleTags('vm1', [], NOW, [])).toEqual(['b_daily', 'b_weekly', 'b_monthly']);
    expect(scheduleTags('vm1', [version(ago(HOUR), ['b_daily', 'b_weekly', 'b_monthly'])], NOW, [])).toEqual([]);
  });
  it('with scheduler sections: b_<name> of each configured scheduler that is due', () => {
    expect(scheduleTags('vm1', [], NOW, [hourly, daily])).toEqual(['b_hourly', 'b_daily']);
    const versions = [version(ago(20 * HOUR), ['b_daily']), version(ago(30 * 60_000), ['b_hourly'])];
    expect(scheduleTags('vm1', versions, NOW, [hourly, daily])).toEqual(['b_daily']);
    expect(scheduleTags('vm1', versions, new Date(NOW.getTime() + 25 * 60_000), [hourly, daily])).toEqual(['b_hourly', 'b_daily']);
    expect(scheduleTags('vm1', [], NOW, [{ ...daily, keep: 0 }])).toEqual([]);
  });
});
