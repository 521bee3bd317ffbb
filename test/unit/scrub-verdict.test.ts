/**
 * A scrub's verdict names only the blocks it makes valid again, not every block it verified: its
 * ScrubCompleted event and its journal entry stay small whatever the size of the version, and a
 * block found invalid earlier and fine now is still made valid again. Real SQLite store, real
 * block directory, the real scrub pipeline.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runScrub } from '../../agent/pipeline/scrub.ts';
import { blockKey } from '../../shared/blocks/codec.ts';
import { journalKeys } from '../../shared/app/journal.ts';
import { blocksToRevalidate } from '../../shared/domain/scrub.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import { makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

const BLOCKS = 200;

describe('scrub verdicts', () => {
  let repo: TestRepo | undefined;
  afterEach(() => {
    repo?.close();
    repo = undefined;
  });

  it('blocksToRevalidate keeps the verified blocks the index holds invalid', () => {
    const index = new Map([
      ['a', { valid: true }],
      ['b', { valid: false }],
    ]);
    expect(blocksToRevalidate(['a', 'b', 'c'], index)).toEqual(['b']);
  });

  it('names no block for a clean scrub, the failed block when one fails, and that block again when it is fine again', async () => {
    repo = makeRepo();
    const r = repo;
    const uid = await r.backup(patternImage(Array.from({ length: BLOCKS }, (_, i) => i + 1)), 'vm');
    const ids: string[] = [];
    for await (const page of r.store.scanBlocks()) ids.push(...page.map((e) => e.id));
    expect(ids).toHaveLength(BLOCKS);

    const scrubbed = async () => {
      const outcome = await runScrub(r.backend, { uid, percent: 100, sourceUrl: null }, r.log, false);
      const v = (await r.store.getVersion(uid))!;
      const event = JSON.parse(
        (r.store.db.prepare("SELECT data FROM events WHERE type = 'ScrubCompleted' ORDER BY pos DESC LIMIT 1").get() as { data: string }).data,
      ) as EventOf<'ScrubCompleted'>;
      const entryBytes = statSync(join(r.dataPath, journalKeys.version(uid, v.seq))).size;
      return { outcome, v, event, entryBytes };
    };

    const clean = await scrubbed();
    expect(clean.outcome.checked).toBe(BLOCKS);
    expect(clean.event).toMatchObject({ verified: [], failed: [], complete: true });
    expect(clean.v.valid).toBe(true);
    // Naming the 200 verified blocks took ~13 KB; the journal entry no longer grows with them.
    expect(clean.entryBytes).toBeLessThan(400);

    const bad = ids[17]!;
    const path = join(r.dataPath, blockKey(bad));
    const original = readFileSync(path);
    const corrupt = Buffer.from(original);
    corrupt.writeUInt8(corrupt.readUInt8(corrupt.length - 5) ^ 0xff, corrupt.length - 5);
    writeFileSync(path, corrupt);
    const failed = await scrubbed();
    expect(failed.event.verified).toEqual([]);
    expect(failed.event.failed.map((f) => f.id)).toEqual([bad]);
    expect(failed.v.valid).toBe(false);
    expect((await r.store.getBlocks([bad])).get(bad)?.valid).toBe(false);

    writeFileSync(path, original);
    const healed = await scrubbed();
    expect(healed.event).toMatchObject({ verified: [bad], failed: [] });
    expect(healed.v.valid).toBe(true);
    expect((await r.store.getBlocks([bad])).get(bad)?.valid).toBe(true);
    expect((await r.restore(uid)).equals(patternImage(Array.from({ length: BLOCKS }, (_, i) => i + 1)))).toBe(true);
  });
});
