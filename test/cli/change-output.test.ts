/**
 * Commands that change one version (protect, unprotect, add-tag, remove-tag, expire, rm) print
 * the changed version for scripts: --json as one `ls --json` object, -m as its `ls -m` row.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, Repo } from '../support/cli.ts';

const BS = 64 * 1024;

describe('-m and --json of the commands that change a version', { timeout: 90_000 }, () => {
  let repo: Repo;
  let uid: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 0 });
    makeImage(repo.path('img'), ['random', 'zero', 'random'], BS);
    uid = await repo.backup('img', 'vm', '-t', 'a');
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  const json = async (...args: string[]) => {
    const r = await repo.cliG(['--json'], ...args);
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };

  test('--json: the version after the change, as ls --json shows it', async () => {
    expect(await json('protect', uid)).toMatchObject({ uid, name: 'vm', protected: 1, valid: 1, tags: 'a' });
    expect(await json('add-tag', uid, 'b,c')).toMatchObject({ uid, tags: 'a,b,c' });
    expect(await json('remove-tag', uid, 'a')).toMatchObject({ uid, tags: 'b,c' });
    expect(await json('expire', uid, '2040-01-02')).toMatchObject({ uid, expire: '2040-01-02' });
    expect(await json('expire', uid, '')).toMatchObject({ uid, expire: '' });
    expect(await json('unprotect', uid)).toMatchObject({ uid, protected: 0 });
    const [listed] = await repo.ls('vm');
    expect(listed).toEqual(await json('add-tag', uid, 'c'));
  });

  test('-m: the ls -m row (with header unless -s); errors still exit non-zero with nothing on stdout', async () => {
    const r = await repo.cliG(['-m'], 'add-tag', uid, 'd');
    expect(r.code).toBe(0);
    const [header, row] = r.stdout.trimEnd().split('\n');
    expect(header).toBe('date|name|snapshot_name|size|size_bytes|uid|valid|protected|tags|expire');
    expect(row!.split('|')[5]).toBe(uid);
    expect(row!.split('|')[8]).toBe('b,c,d');
    const s = await repo.cliG(['-m', '-s'], 'protect', uid);
    expect(s.stdout.trimEnd().split('\n')).toHaveLength(1);
    const again = await repo.cliG(['--json'], 'protect', uid);
    expect(again.code).toBe(4);
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/already protected/);
    expect((await repo.cliG(['--json'], 'unprotect', '00000000')).code).toBe(3);
  });

  test('rm --json: the removed version', async () => {
    await repo.cli('unprotect', uid);
    expect(await json('rm', uid)).toMatchObject({ uid, name: 'vm' });
    expect(await repo.ls('vm')).toEqual([]);
  });
});
