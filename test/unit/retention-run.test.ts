import { mkdtempSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { ingestBlockRecord } from '../../shared/app/ingest.ts';
import { enforceRetention, runRetention } from '../../shared/app/retention.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';

/** The retention function's core (expired versions + the per-name policy) without Lambda, on the SQLite store. */
const policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86_400 };
const NOW = new Date('2024-03-13T12:00:00Z');
const DAY = 86_400_000;
const newStore = () => SqliteMetadataStore.init(join(mkdtempSync(join(tmpdir(), 'backy2-retention-')), 'meta.sqlite'));
const stats = { bytesRead: 4096, bytesWritten: 100, blocksWritten: 1, blocksDedup: 0, blocksSparse: 0, durationSeconds: 1 };

/** A committed version of `name` made `daysAgo` days before NOW (its events carry that date). */
async function backupMade(store: SqliteMetadataStore, name: string, daysAgo: number, expire: string | null = null): Promise<string> {
  const uid = randomUUID();
  const at = new Date(NOW.getTime() - daysAgo * DAY);
  const then = () => at;
  await executeVersionCommand(
    store,
    { type: 'StartVersion', uid, name, snapshotName: '', sizeBytes: 4096, blockSize: 4096, chunkEntries: 1024, baseUid: null, tags: [], expire, host: 'h' },
    policy,
    then,
  );
  const entries = packChunk([{ idx: 0, id: randomBytes(32).toString('hex'), length: 4096 }]).toString('base64');
  await ingestBlockRecord(JSON.stringify({ type: 'BlocksRecorded', v: 1, uid, chunk: 0, entries, sameAs: null, newBlocks: [], at: at.toISOString() }), store);
  await executeVersionCommand(store, { type: 'CommitVersion', uid, stats }, policy, then);
  return uid;
}

const statusOf = async (store: SqliteMetadataStore, uid: string) => (await store.getVersion(uid))?.status;

describe('runRetention with a per-name policy', () => {
  it('applies each name its own rules (else *), never forced: too young ones are refused and stay; protected ones stay', async () => {
    const store = newStore();
    const vm1 = [await backupMade(store, 'vm1', 20), await backupMade(store, 'vm1', 10), await backupMade(store, 'vm1', 8), await backupMade(store, 'vm1', 1)];
    const vm2 = [await backupMade(store, 'vm2', 30), await backupMade(store, 'vm2', 9)];
    const untouched = [await backupMade(store, 'other', 40), await backupMade(store, 'other', 39)];
    const protectedOne = await backupMade(store, 'vm1', 15);
    await executeVersionCommand(store, { type: 'ProtectVersion', uid: protectedOne }, policy, () => NOW);

    const run = await runRetention(store, policy, () => NOW, { vm1: 'latest1', '*': 'latest1', other: 'latest2' });
    // vm1: the newest stays (latest1), 20, 10 and 8 days go (older than the 6-day minimum); vm2 falls to *; other has latest2.
    expect(new Set(run.removed)).toEqual(new Set([vm1[0], vm1[1], vm1[2], vm2[0]]));
    expect(run.refused).toEqual([]);
    for (const uid of [vm1[3]!, vm2[1]!, ...untouched, protectedOne]) expect(await statusOf(store, uid)).toBe('committed');
    for (const uid of run.removed) expect(await statusOf(store, uid)).toBe('removed');
  });

  it('a version the rules let go but younger than the minimum age is refused (and kept) until a later run', async () => {
    const store = newStore();
    const old = await backupMade(store, 'vm1', 3);
    const newer = await backupMade(store, 'vm1', 2);
    const newest = await backupMade(store, 'vm1', 1);
    const run = await runRetention(store, policy, () => NOW, { vm1: 'latest1' });
    expect(run.removed).toEqual([]);
    expect(run.refused.map((r) => r.uid).sort()).toEqual([old, newer].sort());
    expect(run.refused[0]!.reason).toMatch(/too young/);
    for (const uid of [old, newer, newest]) expect(await statusOf(store, uid)).toBe('committed');
    // A week later the same policy removes them.
    const later = new Date(NOW.getTime() + 7 * DAY);
    expect(new Set((await runRetention(store, policy, () => later, { vm1: 'latest1' })).removed)).toEqual(new Set([old, newer]));
    expect(await statusOf(store, newest)).toBe('committed');
  });

  it('without a policy only expired versions go (forced), as before', async () => {
    const store = newStore();
    const expired = await backupMade(store, 'vm1', 1, '2024-03-01T00:00:00.000Z');
    const kept = await backupMade(store, 'vm1', 30);
    expect(await runRetention(store, policy, () => NOW)).toEqual({ removed: [expired], refused: [] });
    expect(await statusOf(store, kept)).toBe('committed');
  });

  it('enforceRetention --dry-run removes nothing and reports what would go', async () => {
    const store = newStore();
    const uids = [await backupMade(store, 'vm1', 9), await backupMade(store, 'vm1', 8), await backupMade(store, 'vm1', 7)];
    const remove = (uid: string) => executeVersionCommand(store, { type: 'RemoveVersion', uid, force: false }, policy, () => NOW);
    const { outcomes } = await enforceRetention(await store.listVersions(), { latest: 1 }, NOW, remove, true);
    expect(outcomes.map((o) => [o.version.uid, o.action])).toEqual([
      [uids[0], 'would remove'],
      [uids[1], 'would remove'],
    ]);
    for (const uid of uids) expect(await statusOf(store, uid)).toBe('committed');
  });
});
