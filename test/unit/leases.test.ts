/**
 * Served-version leases (backy2 nbd): the pure rule, both stores' lease primitives (SQLite here,
 * DynamoDB in the integration suite), and cleanup honouring a live lease on a removed version
 * while ignoring an expired one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { runCleanup } from '../../shared/app/cleanup.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { handleApiRequest } from '../../shared/app/api.ts';
import { isLiveLease, leaseExpiry, MAX_LEASE_SECONDS, versionsHoldingBlocks } from '../../shared/domain/cleanup.ts';
import type { Version } from '../../shared/domain/types.ts';
import { makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

const version = (uid: string, status: Version['status']) => ({ uid, status }) as Version;

describe('the lease rule', () => {
  const now = new Date('2026-12-01T10:00:00Z');
  it('a live lease pins a removed or failed version; an expired one pins nothing', () => {
    const versions = [version('c', 'committed'), version('p', 'pending'), version('r', 'removed'), version('f', 'failed'), version('x', 'removed')];
    const leases = [
      { uid: 'r', holder: 'h', expiresAt: '2026-12-01T10:01:00Z' },
      { uid: 'f', holder: 'h', expiresAt: '2026-12-01T10:00:30Z' },
      { uid: 'x', holder: 'h', expiresAt: '2026-12-01T09:59:59Z' },
    ];
    expect(versionsHoldingBlocks(versions, leases, now).map((v) => v.uid)).toEqual(['c', 'p', 'r', 'f']);
    expect(versionsHoldingBlocks(versions, [], now).map((v) => v.uid)).toEqual(['c', 'p']);
  });
  it('expiry is capped and exclusive', () => {
    expect(leaseExpiry(now, 10 * MAX_LEASE_SECONDS)).toBe(new Date(now.getTime() + MAX_LEASE_SECONDS * 1000).toISOString());
    expect(isLiveLease({ uid: 'a', holder: 'h', expiresAt: now.toISOString() }, now)).toBe(false);
  });
});

describe('leases in the SQLite store and in cleanup', () => {
  let repo: TestRepo;
  afterEach(() => repo?.close());

  it('put, renew, list and drop (per holder); a repository that never had one lists none', async () => {
    repo = makeRepo();
    expect(await repo.store.listLeases()).toEqual([]);
    await repo.store.dropLease('a', 'h1'); // no table yet: nothing to drop, no error
    await repo.store.putLease({ uid: 'a', holder: 'h1', expiresAt: '2030-01-01T00:00:00.000Z' });
    await repo.store.putLease({ uid: 'a', holder: 'h2', expiresAt: '2030-01-01T00:00:00.000Z' });
    await repo.store.putLease({ uid: 'a', holder: 'h1', expiresAt: '2031-01-01T00:00:00.000Z' });
    expect((await repo.store.listLeases()).sort((x, y) => x.holder.localeCompare(y.holder))).toEqual([
      { uid: 'a', holder: 'h1', expiresAt: '2031-01-01T00:00:00.000Z' },
      { uid: 'a', holder: 'h2', expiresAt: '2030-01-01T00:00:00.000Z' },
    ]);
    await repo.store.dropLease('a', 'h1');
    expect((await repo.store.listLeases()).map((l) => l.holder)).toEqual(['h2']);
  });

  it('cleanup -f keeps the blocks of a removed version while its lease lives, deletes them once it expired', async () => {
    repo = makeRepo();
    const data = patternImage([1, 2, 0, 3]);
    const uid = await repo.backup(data, 'served');
    await repo.backend.catalog.holdLease(uid, 'nbd test', 60);
    await executeVersionCommand(repo.store, { type: 'RemoveVersion', uid, force: true }, repo.backend.policy);
    const opts = { force: true, graceSeconds: 0, policy: repo.backend.policy, concurrency: 2 };
    expect((await runCleanup(repo.store, repo.backend.blocks, opts)).deleted).toBe(0);
    expect(await repo.storedBlocks()).toHaveLength(3);
    const later = () => new Date(Date.now() + 61_000);
    expect((await runCleanup(repo.store, repo.backend.blocks, { ...opts, now: later })).deleted).toBe(3);
  });

  it('the api takes and releases leases (the cloud path), validating the request', async () => {
    repo = makeRepo();
    const uid = await repo.backup(patternImage([5]), 'api');
    expect(await handleApiRequest({ kind: 'lease', uid, holder: 'h', seconds: 120 }, repo.store, repo.backend.policy, 'agent')).toEqual({ ok: true });
    const [lease] = await repo.store.listLeases();
    expect(lease!.uid).toBe(uid);
    expect(Date.parse(lease!.expiresAt) - Date.now()).toBeGreaterThan(100_000);
    expect(
      await handleApiRequest({ kind: 'lease', uid, holder: 'h', seconds: 10 * MAX_LEASE_SECONDS }, repo.store, repo.backend.policy, 'agent'),
    ).toMatchObject({ ok: false, exitCode: 1 });
    expect(await handleApiRequest({ kind: 'release', uid, holder: 'h' }, repo.store, repo.backend.policy, 'agent')).toEqual({ ok: true });
    expect(await repo.store.listLeases()).toEqual([]);
  });
});
