/**
 * export / import core (shared/app/transfer.ts) over the real SQLite store and a temp block
 * directory: the file's schema checks, the round trip into a second repository with the same key,
 * the version decider's ImportVersion, and what a failed import leaves behind.
 */
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { referencedIds } from '../../shared/app/block-map.ts';
import { checkExport, exportVersion, importVersion } from '../../shared/app/transfer.ts';
import { decideVersion, evolveVersion, type Policy } from '../../shared/domain/version.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { Version } from '../../shared/domain/types.ts';
import { dumpTables, makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

const BS = 4096;
const repos: TestRepo[] = [];
const repo = (o: Parameters<typeof makeRepo>[0] = {}) => {
  const r = makeRepo({ blockSize: BS, ...o });
  repos.push(r);
  return r;
};
afterEach(() => {
  for (const r of repos.splice(0)) r.close();
}, 60_000);

async function exportText(r: TestRepo, uid: string): Promise<string> {
  let text = '';
  for await (const piece of exportVersion(r.store, (await r.store.getVersion(uid))!)) text += piece;
  return text;
}
const linesOf = (text: string) =>
  async function* () {
    for (const l of text.split('\n')) yield l;
  };
const edit = (text: string, fn: (lines: Record<string, unknown>[]) => void) => {
  const lines = text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  fn(lines);
  return lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
};
async function exitCodeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof Backy2Error) return e.exitCode;
    throw e;
  }
  return 0;
}
/**
 * A second repository with the same key and a copy of the first one's block directory (without
 * its journal: a copy with the journal is the same repository, which `recover` rebuilds).
 */
function copyOf(source: TestRepo, o: Parameters<typeof makeRepo>[0] = {}): TestRepo {
  const target = repo(o);
  rmSync(target.dataPath, { recursive: true, force: true });
  cpSync(source.dataPath, target.dataPath, { recursive: true, filter: (src) => src !== join(source.dataPath, 'journal') });
  return target;
}

// 2.5 chunks of 1024 blocks: random-ish, sparse and repeated blocks, and a short tail.
const IMAGE = patternImage(
  Array.from({ length: 2600 }, (_, i) => (i % 11 === 3 ? 0 : i % 13 === 7 ? 5 : i + 1)),
  BS,
  777,
);

describe('import checks the whole file before changing anything', { timeout: 120_000 }, () => {
  it('accepts its own export and refuses every malformed variant with importFormat (23)', async () => {
    const a = repo();
    const uid = await a.backup(IMAGE, 'vm');
    const text = await exportText(a, uid);
    const ok = await checkExport(linesOf(text)());
    expect(ok).toMatchObject({ chunkCount: 3, blockCount: 2601, version: { uid, name: 'vm' } });

    const bad: Record<string, string> = {
      empty: '',
      notJson: 'hello\n',
      otherFormat: edit(text, (l) => (l[0]!['format'] = 'backy2 Version 2.12 metadata dump')),
      newerFormat: edit(text, (l) => (l[0]!['formatVersion'] = 2)),
      unknownHeaderField: edit(text, (l) => ((l[0]!['version'] as Record<string, unknown>)['extra'] = 1)),
      badUid: edit(text, (l) => ((l[0]!['version'] as Record<string, unknown>)['uid'] = 'not-a-uid')),
      truncated: text.split('\n').slice(0, 3).join('\n'),
      cutMidLine: text.slice(0, text.length - 40),
      chunkOutOfOrder: edit(text, (l) => ([l[1], l[2]] = [l[2]!, l[1]!])),
      chunkTooShort: edit(
        text,
        (l) =>
          (l[1]!['entries'] = Buffer.from(l[1]!['entries'] as string, 'base64')
            .subarray(36)
            .toString('base64')),
      ),
      wrongEntryLength: edit(text, (l) => {
        const packed = Buffer.from(l[1]!['entries'] as string, 'base64');
        packed.writeUInt32BE(100, 32);
        l[1]!['entries'] = packed.toString('base64');
      }),
      missingBlockLine: edit(text, (l) =>
        l.splice(
          l.findIndex((x) => x['kind'] === 'block'),
          1,
        ),
      ),
      duplicateBlockLine: edit(text, (l) => l.splice(-1, 0, l.find((x) => x['kind'] === 'block')!)),
      wrongEndCounts: edit(text, (l) => (l.at(-1)!['blocks'] = 1)),
      afterEnd: text + JSON.stringify({ kind: 'end', chunks: 3, blocks: 0 }) + '\n',
    };
    for (const [what, variant] of Object.entries(bad)) expect([what, await exitCodeOf(checkExport(linesOf(variant)()))]).toEqual([what, ExitCode.importFormat]);
  });
});

describe('export → import round trip', { timeout: 120_000 }, () => {
  it('re-creates the version in a repository with the same key: header, block index entries, restore bit-exact, replayable', async () => {
    const a = repo();
    const first = await a.backup(IMAGE, 'vm', { tags: ['daily'] });
    const changed = Buffer.from(IMAGE);
    changed.fill(9, 5 * BS, 6 * BS);
    // An incremental backup: its unchanged chunks 1 and 2 are sameAs references the export follows.
    const uid = await a.backup(changed, 'vm', { baseUid: first, tags: ['b_weekly', 'daily'], expire: '2031-01-02T00:00:00.000Z' });
    expect((await a.store.getChunk(uid, 1))?.sameAs).toEqual({ uid: first, chunk: 1 });
    await a.backend.catalog.execute({ type: 'ProtectVersion', uid });
    const text = await exportText(a, uid);

    const b = copyOf(a);
    const imported = await importVersion(b.backend, linesOf(text));
    const original = (await a.store.getVersion(uid))!;
    const pick = (v: Version) => ({ ...v, seq: 0, startedAt: undefined, recordedChunks: 0 });
    expect(pick(imported)).toEqual(pick(original));
    expect(imported.startedAt).not.toBe(original.date);
    expect((await b.restore(uid)).equals(changed)).toBe(true);
    // Every referenced block is in B's index with A's stored size and checksum (key-less scrub works).
    const ids = await referenced(a, uid);
    const [inA, inB] = await Promise.all([a.store.getBlocks(ids), b.store.getBlocks(ids)]);
    expect(inB.size).toBe(ids.length);
    for (const id of ids)
      expect({ size: inB.get(id)!.storedSize, sum: inB.get(id)!.checksum }).toEqual({ size: inA.get(id)!.storedSize, sum: inA.get(id)!.checksum });

    const before = dumpTables(b.store, ['versions', 'map_chunks', 'blocks']);
    b.store.rebuildProjections();
    expect(dumpTables(b.store, ['versions', 'map_chunks', 'blocks'])).toEqual(before);

    // Exporting the imported version gives the same file.
    expect(await exportText(b, uid)).toBe(text);
    expect(await exitCodeOf(importVersion(b.backend, linesOf(text)))).toBe(ExitCode.importExists);
  });

  it('an old date is kept and not refused as a stale backup: the run started at the import', async () => {
    const a = repo();
    const uid = await a.backup(IMAGE.subarray(0, 40 * BS), 'vm');
    const old = '2020-01-02T03:04:05.000Z';
    const text = edit(await exportText(a, uid), (l) => ((l[0]!['version'] as Record<string, unknown>)['date'] = old));
    const b = copyOf(a, { maxBackupAgeSeconds: 60 });
    await a.backend.catalog.execute({ type: 'RemoveVersion', uid, force: true });
    const v = await importVersion(b.backend, linesOf(text));
    expect(v).toMatchObject({ status: 'committed', valid: true, date: old });
  });

  it('a missing block object refuses the import and changes nothing', async () => {
    const a = repo();
    const uid = await a.backup(IMAGE.subarray(0, 40 * BS), 'vm');
    const text = await exportText(a, uid);
    const b = copyOf(a);
    const some = (await b.storedBlocks())[3]!;
    rmSync(join(b.dataPath, 'blocks', some.slice(0, 2), some.slice(2, 4), some));
    const empty = dumpTables(b.store, ['events', 'versions', 'map_chunks', 'blocks']);
    expect(await exitCodeOf(importVersion(b.backend, linesOf(text)))).toBe(ExitCode.storage);
    expect(dumpTables(b.store, ['events', 'versions', 'map_chunks', 'blocks'])).toEqual(empty);
  });

  it('a failure midway leaves a failed version (cleanup treats it as a failed backup), never a committed one', async () => {
    const a = repo();
    const uid = await a.backup(IMAGE, 'vm');
    const text = await exportText(a, uid);
    const b = copyOf(a);
    const inner = b.backend.catalog;
    let records = 0;
    const flaky: Catalog = {
      reader: inner.reader,
      execute: (cmd) => inner.execute(cmd),
      touch: (blocks) => inner.touch(blocks),
      awaitRecorded: (u, n) => inner.awaitRecorded(u, n),
      close: () => inner.close(),
      record: async (event) => {
        if (++records === 2) throw new Error('connection lost');
        return inner.record(event);
      },
    };
    await expect(importVersion({ catalog: flaky, blocks: b.backend.blocks, codec: b.backend.codec }, linesOf(text))).rejects.toThrow(/connection lost/);
    expect(await b.store.getVersion(uid)).toMatchObject({ status: 'failed', valid: false });
    expect(await exitCodeOf(importVersion(b.backend, linesOf(text)))).toBe(ExitCode.importExists);
    // Its blocks are referenced by nothing else here: cleanup reclaims them, as after a failed backup.
    const report = await b.backend.cleanup(true, () => {});
    expect(report.deleted).toBe((await referenced(a, uid)).length);
    expect(await b.storedBlocks()).toEqual([]);
  });
});

describe('a file that changes while it is imported', { timeout: 120_000 }, () => {
  it('fails the version (23) instead of committing what was not checked', async () => {
    const a = repo();
    const uid = await a.backup(IMAGE.subarray(0, 40 * BS), 'vm');
    const text = await exportText(a, uid);
    const changed = edit(text, (l) => ((l[0]!['version'] as Record<string, unknown>)['name'] = 'other'));
    const b = copyOf(a);
    let reads = 0;
    const open = () => linesOf(++reads >= 3 ? changed : text)();
    expect(await exitCodeOf(importVersion(b.backend, open))).toBe(ExitCode.importFormat);
    expect(await b.store.getVersion(uid)).toMatchObject({ status: 'failed', name: 'vm' });
  });
});

describe('ImportVersion decisions', () => {
  const policy: Policy = { minAgeDaysForRm: 0, maxBackupAgeSeconds: 60 };
  const now = new Date('2026-06-01T00:00:00.000Z');
  const cmd = {
    type: 'ImportVersion' as const,
    uid: '7a1c4a8e-7b8a-4b61-9d0e-2f4d7f9a0c11',
    name: 'vm',
    snapshotName: 's',
    date: '2024-01-01T00:00:00.000Z',
    sizeBytes: 10_000,
    blockSize: 4096,
    chunkEntries: 1024,
    baseUid: null,
    tags: ['b', 'a'],
    expire: null,
    host: 'elsewhere',
  };
  it('starts a pending version with the original date, run started now; refuses an existing uid, even removed, with 22', () => {
    const events = decideVersion(cmd, undefined, { now, policy });
    expect(events).toEqual([{ ...cmd, type: 'VersionImported', v: 1, at: now.toISOString() }]);
    const v = events.reduce<Version | undefined>(evolveVersion, undefined)!;
    expect(v).toMatchObject({ status: 'pending', date: cmd.date, startedAt: now.toISOString(), blockCount: 3, chunkCount: 1, tags: ['a', 'b'] });
    for (const status of ['pending', 'committed', 'failed', 'removed'] as const) {
      const err = (() => {
        try {
          decideVersion(cmd, { ...v, status }, { now, policy });
        } catch (e) {
          return e as Backy2Error;
        }
      })();
      expect(err?.exitCode).toBe(ExitCode.importExists);
    }
  });
});

async function referenced(r: TestRepo, uid: string): Promise<string[]> {
  return [...(await referencedIds(r.store, (await r.store.getVersion(uid))!))];
}
