/**
 * export / import in cloud mode, through the real api function (ImportVersion, touch), SQS → ingest
 * (the chunks) and S3 (the block objects' heads, the manifest). One stack holds one repository, so
 * the round trip imports a copy: the export with a fresh uid, which the format allows (the uid is
 * the version's name, not part of any checksum).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CloudCli } from './cloud-cli.ts';

const BS = 65536;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The export's lines as objects, and back. */
const parse = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
const unparse = (lines: Record<string, unknown>[]) => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';

describe('cloud mode: export and import', () => {
  let cli: CloudCli;
  let image: Buffer;
  let uid: string;
  let exported: string;

  beforeAll(async () => {
    cli = new CloudCli([`block_size: ${BS}`, 'disallow_rm_when_younger_than_days: 0']);
    // 40 blocks: random, sparse and repeated ones, and a short last block.
    const blocks: Buffer[] = [];
    for (let i = 0; i < 40; i++) blocks.push(i % 9 === 4 ? Buffer.alloc(BS) : i % 6 === 5 ? blocks[1]! : randomBytes(BS));
    image = Buffer.concat([...blocks, randomBytes(1234)]);
    writeFileSync(cli.path('v.img'), image);
    uid = await cli.backup('-t', 'nightly,keep', 'file://v.img', `transfer-${randomBytes(3).toString('hex')}`);
    expect((await cli.run('protect', uid)).code).toBe(0);
    const r = await cli.run('export', uid, 'v.json');
    expect(r.code, r.stderr).toBe(0);
    exported = readFileSync(cli.path('v.json'), 'utf8');
  }, 600_000);

  it('exports the version self-contained; - writes the same bytes to stdout', async () => {
    const [header, ...rest] = parse(exported);
    expect(header).toMatchObject({
      format: 'backy2-serverless-export',
      formatVersion: 1,
      version: { uid, protected: true, valid: true, tags: ['keep', 'nightly'] },
    });
    expect(rest.at(-1)).toMatchObject({ kind: 'end', chunks: 1 });
    const stdout = await cli.run('export', uid, '-');
    expect(stdout.code, stdout.stderr).toBe(0);
    expect(stdout.stdout).toBe(exported);
  }, 120_000);

  it('refuses its own uid again (22), a malformed file (23) and a block object of another size (6), changing nothing', async () => {
    const before = await cli.json('ls');
    const again = await cli.run('import', 'v.json');
    expect(again.code, again.stderr).toBe(22);
    expect(again.stderr).toContain(`Version ${uid} already exists`);

    writeFileSync(cli.path('bad.json'), exported.slice(0, Math.floor(exported.length / 2)));
    const truncated = await cli.run('import', 'bad.json');
    expect(truncated.code, truncated.stderr).toBe(23);

    const lines = parse(exported);
    (lines[0]!['version'] as Record<string, unknown>)['uid'] = randomUUID();
    const block = lines.find((l) => l['kind'] === 'block')!;
    block['storedSize'] = (block['storedSize'] as number) + 1;
    writeFileSync(cli.path('other-size.json'), unparse(lines));
    const missing = await cli.run('import', 'other-size.json');
    expect(missing.code, missing.stderr).toBe(6);
    expect(missing.stderr).toMatch(/not in the block store/);

    expect(await cli.json('ls')).toEqual(before);
  }, 300_000);

  it('imports a copy under a fresh uid from stdin: same header, restores bit-exact, scrubs clean', async () => {
    const copy = randomUUID();
    const lines = parse(exported);
    (lines[0]!['version'] as Record<string, unknown>)['uid'] = copy;
    const run = cli.start('--json', 'import', '-');
    run.child.stdin!.end(unparse(lines));
    const r = await run.result;
    expect(r.code, r.stderr).toBe(0);
    const original = (await cli.json<Record<string, unknown>[]>('ls')).find((v) => v['uid'] === uid)!;
    expect(JSON.parse(r.stdout)).toEqual({ ...original, uid: copy });

    const restore = await cli.run('restore', copy, 'file://copy.img');
    expect(restore.code, restore.stderr).toBe(0);
    expect(sha(readFileSync(cli.path('copy.img')))).toBe(sha(image));
    const scrub = await cli.run('scrub', copy);
    expect(scrub.code, scrub.stderr).toBe(0);
    const ls = (await cli.json<Record<string, unknown>[]>('ls')).find((v) => v['uid'] === copy)!;
    expect(ls).toMatchObject({ valid: 1, protected: 1, tags: 'keep,nightly', date: original['date'] });
  }, 300_000);
});
