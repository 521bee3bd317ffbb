/**
 * backup's output and options (-m, progress lines, automatic tags, -t, -e), and the commands
 * that change a version afterwards (protect/unprotect, add-tag/remove-tag, expire).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, flag, lastLine, makeImage, Repo } from '../support/cli.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BS = 256 * 1024;

describe('backup output and options', { timeout: 90_000 }, () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS });
    makeImage(repo.path('ten.img'), ['random', 'random', 'zero', 'random', 'text', 'random', 'random', 'zero', 'random', 'random'], BS);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test('-m: the uid alone on stdout, its last line; nothing but errors on stderr', async () => {
    const r = await repo.cliG(['-m'], 'backup', 'file://ten.img', 'machine');
    expect(r.code, r.output).toBe(0);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(lastLine(r.stdout)).toMatch(UUID);
    expect(r.stderr).toBe('');
    const rows = await repo.ls('machine');
    expect(rows.map((v) => v.uid)).toEqual([lastLine(r.stdout)]);
  });

  test('without a terminal: "Backed up N/M blocks (x%)" log lines, then "New version: <uid> (Tags: [...])"; automatic tags', async () => {
    const r = await repo.cli('backup', 'file://ten.img', 'progress');
    expect(r.code, r.output).toBe(0);
    const progress = r.stderr.split('\n').filter((l) => l.includes('Backed up'));
    expect(progress.map((l) => l.trim())).toEqual(Array.from({ length: 10 }, (_, i) => `INFO: Backed up ${i + 1}/10 blocks (${((i + 1) * 10).toFixed(1)}%)`));
    expect(r.stderr).not.toMatch(/\x1b\[/); // no progress bar escape codes
    const m = /INFO: New version: (\S+) \(Tags: \[([^\]]*)\]\)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(m![1]).toMatch(UUID);
    expect(m![2]!.split(',').sort()).toEqual(['b_daily', 'b_monthly', 'b_weekly']);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toMatch(/INFO: Backy complete\./);
    const row = (await repo.version(m![1]!))!;
    expect(row.tags.split(',').sort()).toEqual(['b_daily', 'b_monthly', 'b_weekly']);

    // A second backup of the same name on the same day gets no automatic tags (as backy2).
    const again = await repo.cli('backup', 'file://ten.img', 'progress');
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/New version: \S+ \(Tags: \[\]\)/);
  });

  test('-t sets the tags instead of the automatic ones', async () => {
    const r = await repo.cli('backup', 'file://ten.img', 'tagged', '-t', 'gold, silver');
    expect(r.code, r.output).toBe(0);
    const uid = /New version: (\S+) \(Tags: \[([^\]]*)\]\)/.exec(r.stderr)!;
    expect(uid[2]!.split(',').sort()).toEqual(['gold', 'silver']);
    expect((await repo.version(uid[1]!))!.tags).toBe('gold,silver');
    expect((await repo.ls('-t', 'gold')).map((v) => v.uid)).toEqual([uid[1]]);
    expect(await repo.ls('-t', 'b_daily', 'tagged')).toEqual([]);
  });

  test('-e sets the expiry date; a malformed date is exit 1 and creates no version', async () => {
    const day = await repo.backup('ten.img', 'expiring', '-e', '2031-02-03');
    expect((await repo.version(day))!.expire).toBe('2031-02-03');
    const time = await repo.backup('ten.img', 'expiring', '-e', '2031-02-03 04:05:06');
    expect((await repo.version(time))!.expire).toBe('2031-02-03 04:05:06');
    expect(await repo.ls('-e')).toEqual([]); // neither has expired

    const before = (await repo.ls()).length;
    const bads = ['2031-13-01', '2031-02-30', 'tomorrow', '03.02.2031', '2031-02-03 25:00:00'];
    const results = await Promise.all(bads.map((bad) => repo.cli('backup', 'file://ten.img', 'expiring', '-e', bad)));
    results.forEach((r, i) => {
      expect(r.code, `-e ${bads[i]}: ${r.output}`).toBe(1);
      expect(r.stderr).toContain(`Invalid expire date "${bads[i]}"`);
    });
    expect((await repo.ls()).length).toBe(before);
  });

  test('protect: rm -f is refused (exit 4); unprotect: rm works', async () => {
    const uid = await repo.backup('ten.img', 'protected');
    const p = await repo.cli('protect', uid);
    expect(p.code, p.output).toBe(0);
    expect(flag((await repo.version(uid))!.protected)).toBe(1);
    expect((await repo.cli('protect', uid)).code).toBe(4); // already protected

    const rm = await repo.cli('rm', '-f', uid);
    expect(rm.code).toBe(4);
    expect(rm.stderr).toMatch(/protected/);
    expect(await repo.version(uid)).toBeDefined();

    expect((await repo.cli('unprotect', uid)).code).toBe(0);
    expect(flag((await repo.version(uid))!.protected)).toBe(0);
    const rm2 = await repo.cli('rm', '-f', uid);
    expect(rm2.code, rm2.output).toBe(0);
    expect(await repo.version(uid)).toBeUndefined();
  });

  test('add-tag / remove-tag / expire change what ls shows', async () => {
    const uid = await repo.backup('ten.img', 'retag', '-t', 'one');
    expect((await repo.cli('add-tag', uid, 'two,three')).code).toBe(0);
    expect((await repo.version(uid))!.tags).toBe('one,three,two');
    expect((await repo.ls('-t', 'two')).map((v) => v.uid)).toEqual([uid]);
    expect((await repo.cli('remove-tag', uid, 'one,two')).code).toBe(0);
    expect((await repo.version(uid))!.tags).toBe('three');
    expect(await repo.ls('-t', 'two')).toEqual([]);

    expect((await repo.cli('expire', uid, '2001-01-01')).code).toBe(0);
    expect((await repo.version(uid))!.expire).toBe('2001-01-01');
    expect((await repo.ls('-e')).map((v) => v.uid)).toEqual([uid]);
    const bad = await repo.cli('expire', uid, '01/01/2001');
    expect(bad.code).toBe(1);
    expect((await repo.version(uid))!.expire).toBe('2001-01-01');
    expect((await repo.cli('expire', uid, '')).code).toBe(0);
    expect((await repo.version(uid))!.expire).toBe('');
    expect(await repo.ls('-e')).toEqual([]);
  });
});
