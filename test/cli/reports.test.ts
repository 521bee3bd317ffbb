/**
 * stats, du and diff-meta end to end (embedded mode): real backups of crafted images whose dedup
 * structure is known, and the numbers each report must show for them.
 */
import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, makeImage, parseTable, Repo } from '../support/cli.ts';

const BS = 256 * 1024;
const TAIL = 1000;

describe('stats, du, diff-meta over known images', { timeout: 120_000 }, () => {
  let repo: Repo;
  let v1: string;
  let v2: string;
  /** Stored object size of a block, by its content. */
  const stored = async (uid: string, idx: number) => statSync(repo.blockPath((await repo.blockIdsOf(uid))[idx]!)).size;

  beforeAll(async () => {
    repo = await Repo.create({ blockSize: BS, minAgeDays: 0 });
    // one.img: S1 S1 0 S2 TEXT S3(1000 bytes)   two.img: S1 S4 0 S2 0 S5 S6
    // References: S1 3 (one ×2, two), S2 2, TEXT 1, S3 1, S4 1, S5 1, S6 1.
    makeImage(repo.path('one.img'), [1, 1, 'zero', 2, 'text'], BS, { spec: 3, bytes: TAIL });
    makeImage(repo.path('two.img'), [1, 4, 'zero', 2, 'zero', 5, 6], BS);
    v1 = await repo.backup(repo.path('one.img'), 'one');
    v2 = await repo.backup(repo.path('two.img'), 'two');
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove(), HOOK_TIMEOUT);

  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await repo.cliG(['--json'], ...args);
    expect(r.code, r.output).toBe(0);
    return JSON.parse(r.stdout) as T;
  };

  test('stats: one row per backup run with the counts of each run', async () => {
    const rows = await json<Record<string, number | string>[]>('stats');
    expect(rows.map((r) => r['uid'])).toEqual([v1, v2]);
    const written1 = (await stored(v1, 0)) + (await stored(v1, 3)) + (await stored(v1, 4)) + (await stored(v1, 5));
    expect(rows[0]).toMatchObject({
      name: 'one',
      'size bytes': 5 * BS + TAIL,
      'size blocks': 6,
      'bytes read': 5 * BS + TAIL,
      'blocks read': 6,
      'bytes written': written1,
      'blocks written': 4,
      'bytes dedup': BS, // the second S1
      'blocks dedup': 1,
      'bytes sparse': BS,
      'blocks sparse': 1,
    });
    expect(rows[1]).toMatchObject({
      'size blocks': 7,
      'blocks read': 7,
      'blocks written': 3,
      'bytes dedup': 2 * BS,
      'blocks dedup': 2,
      'bytes sparse': 2 * BS,
      'blocks sparse': 2,
    });
    expect(typeof rows[0]!['duration (s)']).toBe('number');
    expect(Object.keys(rows[0]!)).toEqual([
      'date',
      'uid',
      'name',
      'size bytes',
      'size blocks',
      'bytes read',
      'blocks read',
      'bytes written',
      'blocks written',
      'bytes dedup',
      'blocks dedup',
      'bytes sparse',
      'blocks sparse',
      'duration (s)',
    ]);
  });

  test('stats -m -f, -s, -l, -r and UID', async () => {
    const m = await repo.cliG(['-m'], 'stats', '-f', 'uid,blocks written,bytes sparse');
    expect(m.stdout).toBe(`uid|blocks written|bytes sparse\n${v1}|4|${BS}\n${v2}|3|${2 * BS}\n`);
    const newest = await repo.cliG(['-m', '-s'], 'stats', '-l', '1', '-f', 'uid');
    expect(newest.stdout).toBe(`${v2}\n`);
    const one = await repo.cliG(['-m', '-s'], 'stats', v1, '-f', 'uid,name');
    expect(one.stdout).toBe(`${v1}|one\n`);
    const human = await repo.cliG(['-m', '-s', '-r'], 'stats', v1, '-f', 'size bytes,size blocks,bytes sparse');
    expect(human.stdout).toBe(`1.3 MiB|6|256.0 KiB\n`);
    const table = parseTable((await repo.cli('stats', '-f', 'name,blocks dedup')).stdout);
    expect(table).toEqual([
      ['name', 'blocks dedup'],
      ['one', '1'],
      ['two', '2'],
    ]);
  });

  test('du UID: backy2 figures, and the same over the stored (compressed, encrypted) bytes', async () => {
    const [row] = await json<Record<string, number | string>[]>('du', v1);
    const [text, s3] = [await stored(v1, 4), await stored(v1, 5)];
    expect(row).toMatchObject({
      Real: 4 * BS + TAIL, // S1 ×2, S2, TEXT, S3
      Null: BS,
      'Dedup Own': 0,
      'Dedup Others': 3 * BS, // S1 (both references) and S2 are in two.img too
      Individual: BS + TAIL, // TEXT, S3
      'Est. Space': Math.round(BS / 3 + BS / 2 + BS + TAIL),
      'Est. Space freed': BS + TAIL,
      'Stored Est. Space freed': text + s3,
      uid: v1,
      name: 'one',
    });
    // The text block compresses: what is stored is much less than what it holds.
    expect(text).toBeLessThan(BS / 4);
  });

  test('du without UID: one row per version; -m -f; -r humanizes every byte column', async () => {
    const m = await repo.cliG(['-m'], 'du', '-f', 'uid,Real,Null,Dedup Others,Individual,Est. Space freed');
    expect(m.stdout).toBe(
      `uid|Real|Null|Dedup Others|Individual|Est. Space freed\n${v1}|${4 * BS + TAIL}|${BS}|${3 * BS}|${BS + TAIL}|${BS + TAIL}\n${v2}|${5 * BS}|${2 * BS}|${2 * BS}|${3 * BS}|${3 * BS}\n`,
    );
    const human = await repo.cliG(['-m', '-s', '-r'], 'du', v2, '-f', 'Real,Null,Dedup Own,name');
    expect(human.stdout).toBe('1.3 MiB|512.0 KiB|0 B|two\n');
  });

  test('diff-meta: SAME / DIFF / NEW RIGHT per block, also for versions of different lengths', async () => {
    const m = await repo.cliG(['-m'], 'diff-meta', v1, v2);
    expect(m.code, m.output).toBe(0);
    expect(m.stdout).toBe('status|idx\nSAME|0\nDIFF|1\nSAME|2\nSAME|3\nDIFF|4\nDIFF|5\nNEW RIGHT|6\n');
    const swapped = await repo.cliG(['-m', '-s'], 'diff-meta', v2, v1, '-f', 'idx,status');
    expect(swapped.stdout.trim().split('\n').slice(-2)).toEqual(['5|DIFF', '6|NEW LEFT']);
    const ids = await repo.blockIdsOf(v1);
    const withIds = await json<{ status: string; idx: number; left: string; right: string }[]>('diff-meta', v1, v2, '-f', 'status,idx,left,right');
    expect(withIds[0]).toEqual({ status: 'SAME', idx: 0, left: ids[0], right: ids[0] });
    expect(withIds[2]).toMatchObject({ left: 'sparse', right: 'sparse' });
    expect(withIds[6]).toMatchObject({ status: 'NEW RIGHT', left: '' });
    const table = parseTable((await repo.cli('diff-meta', v1, v2)).stdout);
    expect(table[0]).toEqual(['status', 'idx']);
    expect(table.slice(1).map((r) => r.join(' '))).toEqual(['SAME 0', 'DIFF 1', 'SAME 2', 'SAME 3', 'DIFF 4', 'DIFF 5', 'NEW RIGHT 6']);
  });

  test('bad input: unknown field → exit 1 naming it; unknown uid → exit 3; bad limit → exit 1', async () => {
    for (const args of [
      ['stats', '-f', 'uid,nope'],
      ['du', '-f', 'Real,nope'],
      ['diff-meta', v1, v2, '-f', 'nope'],
    ]) {
      const r = await repo.cli(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain('Unknown field(s) nope');
    }
    for (const args of [
      ['stats', '00000000-0000-0000-0000-000000000000'],
      ['du', 'deadbeef-0000'],
      ['diff-meta', v1, 'deadbeef-0000'],
    ]) {
      const r = await repo.cli(...args);
      expect(r.code, args.join(' ')).toBe(3);
      expect(r.stderr).toMatch(/Version \S+ not found/);
    }
    const limit = await repo.cli('stats', '-l', 'many');
    expect(limit.code).toBe(1);
    expect(limit.stderr).toContain('Invalid limit "many"');
  });

  test('Est. Space freed is what rm + cleanup free; the removed version keeps its stats row', async () => {
    const [before] = await json<Record<string, number>[]>('du', v2);
    const dataBytes = () => repo.blockFiles().reduce((sum, f) => sum + statSync(repo.path('repo', 'data', f)).size, 0);
    const bytesBefore = dataBytes();
    expect((await repo.cli('rm', v2)).code).toBe(0);
    const cleanup = await repo.cli('cleanup', '-f');
    expect(cleanup.code, cleanup.output).toBe(0);
    // S4, S5, S6 were only in two.img: exactly their stored bytes are gone.
    expect(bytesBefore - dataBytes()).toBe(before!['Stored Est. Space freed']);
    expect(before!['Est. Space freed']).toBe(3 * BS);

    expect((await json<{ uid: string }[]>('stats')).map((r) => r.uid)).toEqual([v1, v2]);
    expect((await json<{ uid: string }[]>('stats', v2)).map((r) => r.uid)).toEqual([v2]);
    expect((await repo.cli('du', v2)).code).toBe(3);
    // one.img alone: S1 twice is Dedup Own now, and everything it holds would be freed.
    const [after] = await json<Record<string, number>[]>('du');
    expect(after).toMatchObject({
      'Dedup Own': BS,
      'Dedup Others': 0,
      Individual: 2 * BS + TAIL,
      'Est. Space freed': 3 * BS + TAIL,
      'Stored Est. Space freed': dataBytes(),
    });
  });
});

describe('diff-meta over multi-chunk maps', { timeout: 120_000 }, () => {
  const SMALL = 4096;
  let repo: Repo;
  let left: string;
  let right: string;
  beforeAll(async () => {
    repo = await Repo.create({ blockSize: SMALL });
    // 2500 blocks (3 map chunks of 1024) against 2600: blocks 100, 1500 and 2400 changed, 100 more at the end.
    const specs = Array.from({ length: 2500 }, (_, i) => 1000 + i);
    makeImage(repo.path('l.img'), specs, SMALL);
    const changed = [...specs, ...Array.from({ length: 100 }, (_, i) => 5000 + i)];
    for (const i of [100, 1500, 2400]) changed[i] = 9000 + i;
    makeImage(repo.path('r.img'), changed, SMALL);
    left = await repo.backup(repo.path('l.img'), 'l');
    right = await repo.backup(repo.path('r.img'), 'r', '-f', left);
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove(), HOOK_TIMEOUT);

  test('every block is listed; the table stays aligned across batches', async () => {
    const m = await repo.cliG(['-m', '-s'], 'diff-meta', left, right);
    const lines = m.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2600);
    expect(lines.filter((l) => l.startsWith('DIFF|')).map((l) => l.split('|')[1])).toEqual(['100', '1500', '2400']);
    expect(lines.filter((l) => l.startsWith('NEW RIGHT|'))).toHaveLength(100);
    expect(lines[2599]).toBe('NEW RIGHT|2599');

    const table = (await repo.cli('diff-meta', left, right)).stdout.trimEnd().split('\n');
    expect(table).toHaveLength(2601);
    expect(new Set(table.map((l) => l.length)).size).toBe(1);
    expect(table[2601 - 1]).toBe('| NEW RIGHT | 2599 |');

    const all = JSON.parse((await repo.cliG(['--json'], 'diff-meta', left, right)).stdout) as { status: string; idx: number }[];
    expect(all.map((r) => r.idx)).toEqual(Array.from({ length: 2600 }, (_, i) => i));
    expect(all.filter((r) => r.status === 'SAME')).toHaveLength(2497);
  });

  test('a version differs from itself nowhere', async () => {
    const m = await repo.cliG(['-m', '-s'], 'diff-meta', right, right);
    const statuses = m.stdout
      .trimEnd()
      .split('\n')
      .map((l) => l.split('|')[0]);
    expect(statuses).toHaveLength(2600);
    expect(new Set(statuses)).toEqual(new Set(['SAME']));
  });
});
