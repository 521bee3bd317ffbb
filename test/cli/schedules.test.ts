/**
 * Schedulers and retention end to end (embedded): automatic tags from the configured schedulers,
 * due, sla (exit 21 on a breach), enforce (--dry-run, protected versions, rm's minimum age,
 * rules from [retention]). Real backups are made now, so only what does not depend on the clock
 * is checked here; the date arithmetic is in test/unit/schedules.test.ts and retention-rules.test.ts.
 */
import { appendFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, Repo } from '../support/cli.ts';

const BS = 64 * 1024;
const SCHEDULERS = [
  '',
  '[hourly]',
  'interval: 1h',
  'keep: 3',
  'sla: 5m',
  '',
  '[daily]',
  'interval: 1d',
  'keep: 8',
  'sla: 6h',
  '',
  '[single]',
  'interval: 1d',
  'keep: 1',
  'sla: 1h',
  '',
];
const RETENTION = ['[retention]', 'vm-policy: latest2', ''];

const tagsOf = (stderr: string) => /New version: \S+ \(Tags: \[([^\]]*)\]\)/.exec(stderr)?.[1];

describe('schedules and retention (embedded)', { timeout: 120_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 0 });
    appendFileSync(repo.configPath, [...SCHEDULERS, ...RETENTION].join('\n'));
    makeImage(repo.path('img'), ['random', 'zero', 'text'], BS);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('a first backup gets b_<scheduler> for each configured scheduler; the next one, right after, none', async () => {
    const first = await repo.cli('backup', 'file://img', 'auto');
    expect(first.code, first.output).toBe(0);
    expect(tagsOf(first.stderr)).toBe('b_daily,b_hourly,b_single'); // tags are kept sorted
    const second = await repo.cli('backup', 'file://img', 'auto');
    expect(second.code, second.output).toBe(0);
    expect(tagsOf(second.stderr)).toBe('');
  });

  test('due: a name never backed up is due since 1970 for every scheduler; right after a backup it is not due', async () => {
    const never = await repo.cliG(['-m'], 'due', 'never', '-s', 'hourly,daily');
    expect(never.code, never.output).toBe(0);
    const lines = never.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('name|schedulers|expire_date|due_since');
    const [name, schedulers, expire, since] = lines[1]!.split('|');
    expect([name, schedulers, since]).toEqual(['never', 'hourly,daily', '1970-01-01 00:00:00']);
    // now + (keep + 1) · interval of the longest: 9 days for daily.
    expect(Math.abs(Date.parse(expire!.replace(' ', 'T') + 'Z') - (Date.now() + 9 * 86_400_000))).toBeLessThan(600_000);

    await repo.backup('img', 'fresh', '-t', 'b_hourly,daily');
    const fresh = await repo.cliG(['-m', '-s'], 'due', 'fresh', '-s', 'hourly,daily');
    expect(fresh.code, fresh.output).toBe(0);
    expect(fresh.stdout).toBe('');
    // Only the schedulers it was not tagged for are due.
    const weekly = await repo.cliG(['--json'], 'due', 'fresh', '-s', 'hourly,daily,weekly');
    expect(JSON.parse(weekly.stdout)).toEqual([expect.objectContaining({ name: 'fresh', schedulers: 'weekly', due_since: '1970-01-01 00:00:00' })]);
  });

  test('due without NAME lists every name with a version; without -s it uses daily,weekly,monthly', async () => {
    await repo.backup('img', 'listed', '-t', 'x');
    const r = await repo.cliG(['--json'], 'due');
    expect(r.code, r.output).toBe(0);
    const rows = JSON.parse(r.stdout) as { name: string; schedulers: string }[];
    expect(rows.find((row) => row.name === 'listed')?.schedulers).toBe('daily,weekly,monthly');
    expect(rows.some((row) => row.name === 'never')).toBe(false);
  });

  test('an unknown scheduler is exit 1 with one line', async () => {
    const r = await repo.cli('due', '-s', 'yearly');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Unknown scheduler "yearly": the config has no \[yearly\] section/);
  });

  test('sla: a breach is listed and exits 21; no breach exits 0 with no rows', async () => {
    await repo.backup('img', 'sla-vm', '-t', 'b_hourly,single');
    const breach = await repo.cliG(['-m', '-s'], 'sla', 'sla-vm', '-s', 'hourly');
    expect(breach.code, breach.output).toBe(21);
    expect(breach.stdout).toBe('sla-vm|hourly: Too few backups. Found 1, should be 3.\n');
    expect(breach.stderr).toMatch(/1 SLA breach$/m);
    const fine = await repo.cliG(['-m', '-s'], 'sla', 'sla-vm', '-s', 'single');
    expect(fine.code, fine.output).toBe(0);
    expect(fine.stdout).toBe('');
  });

  test('enforce --dry-run lists the versions the rules would remove and removes nothing', async () => {
    const uids = [await repo.backup('img', 'vm-dry', '-t', 'x'), await repo.backup('img', 'vm-dry', '-t', 'x'), await repo.backup('img', 'vm-dry', '-t', 'x')];
    const r = await repo.cliG(['--json'], 'enforce', 'vm-dry', 'latest1', '--dry-run');
    expect(r.code, r.output).toBe(0);
    const rows = JSON.parse(r.stdout) as { uid: string; action: string; reason: string }[];
    expect(rows.map((row) => [row.uid, row.action, row.reason])).toEqual([
      [uids[0], 'would remove', 'older than every rule'],
      [uids[1], 'would remove', 'older than every rule'],
    ]);
    expect((await repo.ls('vm-dry')).map((v) => v.uid)).toEqual(uids);
  });

  test('enforce removes every version but the newest for latest1; a protected one stays and is named', async () => {
    const uids = [await repo.backup('img', 'vm-e', '-t', 'x'), await repo.backup('img', 'vm-e', '-t', 'x'), await repo.backup('img', 'vm-e', '-t', 'x')];
    expect((await repo.cli('protect', uids[0]!)).code).toBe(0);
    const r = await repo.cliG(['-m'], 'enforce', 'vm-e', 'latest1');
    expect(r.code, r.output).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('date|name|size_bytes|uid|action|reason');
    expect(lines.slice(1).map((l) => l.split('|').slice(1))).toEqual([['vm-e', String(3 * BS), uids[1], 'removed', 'older than every rule']]);
    expect((await repo.ls('vm-e')).map((v) => v.uid)).toEqual([uids[0], uids[2]]);
    const human = await repo.cli('enforce', 'vm-e', 'latest1');
    expect(human.code).toBe(0);
    expect(human.stderr).toContain(`Version ${uids[0]} is protected; kept.`);
    expect(human.stdout).toMatch(/^\| +date +\| +name +\|/);
    expect(human.stdout.trimEnd().split('\n')).toHaveLength(1); // header only: nothing left to remove
  });

  test('enforce NAME without RULES takes the [retention] entry; bad rules or none are exit 1', async () => {
    const uids = [
      await repo.backup('img', 'vm-policy', '-t', 'x'),
      await repo.backup('img', 'vm-policy', '-t', 'x'),
      await repo.backup('img', 'vm-policy', '-t', 'x'),
    ];
    const r = await repo.cliG(['-m', '-s'], 'enforce', 'vm-policy');
    expect(r.code, r.output).toBe(0);
    expect(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split('|')[3]),
    ).toEqual([uids[0]]);
    expect((await repo.ls('vm-policy')).map((v) => v.uid)).toEqual(uids.slice(1));

    const bad = await repo.cli('enforce', 'vm-policy', 'latest2,dayz3');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Invalid retention rules "latest2,dayz3": unknown category "dayz"/);
    const none = await repo.cli('enforce', 'vm-other');
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/No retention rules for vm-other/);
    expect((await repo.ls('vm-policy')).map((v) => v.uid)).toEqual(uids.slice(1));
  });

  test('enforce with the minimum age in force: too young versions are refused, listed as such, and stay', async () => {
    const strict = repo.writeConfig('strict.cfg', { blockSize: BS, minAgeDays: 6 });
    const uids = [await repo.backup('img', 'vm-young', '-t', 'x'), await repo.backup('img', 'vm-young', '-t', 'x')];
    const r = await repo.run('--json', '-c', strict, 'enforce', 'vm-young', 'latest1');
    expect(r.code, r.output).toBe(0);
    const rows = JSON.parse(r.stdout) as { uid: string; action: string; reason: string }[];
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ uid: uids[0], action: 'refused' });
    expect(rows[0]!.reason).toMatch(/too young/);
    expect((await repo.ls('vm-young')).map((v) => v.uid)).toEqual(uids);
  });
});
