/**
 * The commands that change a version (protect, unprotect, add-tag, remove-tag, expire, rm) and
 * `ls -e` in cloud mode: through the api function, as events in DynamoDB, printed as in embedded mode.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CloudCli } from './cloud-cli.ts';

describe('cloud mode: protect, tags, expire, rm', () => {
  let cli: CloudCli;
  beforeAll(() => {
    cli = new CloudCli(['block_size: 65536', 'disallow_rm_when_younger_than_days: 0']);
    writeFileSync(cli.path('v.img'), randomBytes(3 * 65536));
  });

  it('change, refuse and list exactly as in embedded mode', async () => {
    const name = `cmds-${randomBytes(3).toString('hex')}`;
    const uid = await cli.backup('-t', 'a', 'file://v.img', name);
    expect(await cli.json('protect', uid)).toMatchObject({ uid, name, protected: 1, valid: 1 });
    const twice = await cli.run('protect', uid);
    expect(twice.code).toBe(4);
    expect(twice.stderr).toMatch(/already protected/);
    const rm = await cli.run('rm', uid);
    expect(rm.code).toBe(4);
    expect(rm.stderr).toMatch(/protected/);

    expect(await cli.json('add-tag', uid, 'b,c')).toMatchObject({ tags: 'a,b,c' });
    expect(await cli.json('remove-tag', uid, 'a,zz')).toMatchObject({ tags: 'b,c' });
    expect(await cli.json('expire', uid, '2001-02-03')).toMatchObject({ expire: '2001-02-03' });
    const expired = await cli.json<{ uid: string }[]>('ls', '-e', name);
    expect(expired.map((v) => v.uid)).toEqual([uid]);
    expect(await cli.json('expire', uid, '')).toMatchObject({ expire: '' });
    expect(await cli.json<unknown[]>('ls', '-e', name)).toEqual([]);
    const bad = await cli.run('expire', uid, '2001-13-45');
    expect(bad.code).toBe(1);

    expect(await cli.json('unprotect', uid)).toMatchObject({ protected: 0 });
    expect((await cli.run('unprotect', uid)).code).toBe(4);
    // In cloud mode the age rule is the stack's (the api function decides), not the host config's.
    const young = await cli.run('--json', 'rm', uid);
    expect(young.code).toBe(4);
    expect(young.stdout).toBe('');
    expect(young.stderr).toMatch(/too young/);
    expect((await cli.json<{ uid: string }[]>('ls', name)).map((v) => v.uid)).toEqual([uid]);
    expect((await cli.run('protect', '00000000-0000-4000-8000-000000000000')).code).toBe(3);
  });
});
