/**
 * The block format stays readable: a repository written by the code of 2026-12-01 before the
 * codec and restore pipeline changed (test/unit/fixtures/format-v1, made by its make.ts and
 * committed) restores bit-exact with today's code, with and without -s, and scrubs clean.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HOOK_TIMEOUT, Repo } from '../support/cli.ts';
import { FIXTURE_BLOCK_SIZE, FIXTURE_KEY, fixtureImage } from '../unit/fixtures/format-v1/image.ts';

const FIXTURE = fileURLToPath(new URL('../unit/fixtures/format-v1/', import.meta.url));
const versions = JSON.parse(readFileSync(`${FIXTURE}versions.json`, 'utf8')) as { v1: string; v2: string };

describe('a repository in the format of 2026-12-01', { timeout: 60_000 }, () => {
  let repo: Repo;
  beforeAll(() => {
    repo = new Repo({ blockSize: FIXTURE_BLOCK_SIZE, key: FIXTURE_KEY });
    cpSync(`${FIXTURE}repo`, repo.repoDir, { recursive: true });
  }, HOOK_TIMEOUT);
  afterAll(() => repo.remove());

  test.each([
    ['v1', 1],
    ['v2', 2],
  ] as const)('version %s restores bit-exact', async (name, image) => {
    const r = await repo.cli('restore', versions[name], `file://${name}.img`);
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path(`${name}.img`)).equals(fixtureImage(image))).toBe(true);
  });

  test('restore -s -f over random bytes is bit-exact too', async () => {
    writeFileSync(repo.path('dirty.img'), Buffer.alloc(fixtureImage(2).length, 0x5a));
    const r = await repo.cli('restore', '-s', '-f', versions.v2, 'file://dirty.img');
    expect(r.code, r.output).toBe(0);
    expect(readFileSync(repo.path('dirty.img')).equals(fixtureImage(2))).toBe(true);
  });

  test('a full scrub finds every old block intact', async () => {
    const r = await repo.cli('scrub', versions.v1);
    expect(r.code, r.output).toBe(0);
  });
});
