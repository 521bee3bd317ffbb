import { mkdtempSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { handleApiRequest } from '../../shared/app/api.ts';
import { ingestBlockRecord } from '../../shared/app/ingest.ts';
import { runRetention } from '../../shared/app/retention.ts';
import { packChunk } from '../../shared/domain/blockmap.ts';

/** The cores of the api, ingest and retention functions, tested without Lambda. */
const policy = { minAgeDaysForRm: 6, maxBackupAgeSeconds: 86_400 };
const newStore = () => SqliteMetadataStore.init(join(mkdtempSync(join(tmpdir(), 'backy2-api-')), 'meta.sqlite'));
const startRequest = (uid: string, expire: string | null = null) => ({
  kind: 'command',
  command: {
    type: 'StartVersion',
    uid,
    name: 'vm1',
    snapshotName: '',
    sizeBytes: 8192,
    blockSize: 4096,
    chunkEntries: 1024,
    baseUid: null,
    tags: ['t'],
    expire,
    host: 'h',
  },
});
const stats = { bytesRead: 8192, bytesWritten: 100, blocksWritten: 1, blocksDedup: 0, blocksSparse: 1, durationSeconds: 1 };
const record = (uid: string) =>
  JSON.stringify({
    type: 'BlocksRecorded',
    v: 1,
    uid,
    chunk: 0,
    entries: packChunk([
      { idx: 0, id: randomBytes(32).toString('hex'), length: 4096 },
      { idx: 1, id: null, length: 4096 },
    ]).toString('base64'),
    sameAs: null,
    newBlocks: [],
    at: new Date().toISOString(),
  });

describe('api core', () => {
  it('rejects a malformed request with a usage error naming the field', async () => {
    const answer = await handleApiRequest({ kind: 'command', command: { type: 'StartVersion', uid: 'nope' } }, newStore(), policy);
    expect(answer).toMatchObject({ ok: false, exitCode: 1 });
    expect((answer as { message: string }).message).toMatch(/command\.uid/);
  });

  it('starts, refuses an early commit, commits after ingest, refuses rm of a young version', async () => {
    const store = newStore();
    const uid = randomUUID();
    expect(await handleApiRequest(startRequest(uid), store, policy)).toMatchObject({ ok: true, version: { uid, status: 'pending' } });
    expect(await handleApiRequest({ kind: 'command', command: { type: 'CommitVersion', uid, stats } }, store, policy)).toMatchObject({
      ok: false,
      exitCode: 4,
    });
    expect(await ingestBlockRecord(record(uid), store)).toBe(true);
    expect(await handleApiRequest({ kind: 'command', command: { type: 'CommitVersion', uid, stats } }, store, policy)).toMatchObject({
      ok: true,
      version: { status: 'committed', valid: true },
    });
    expect(await handleApiRequest({ kind: 'command', command: { type: 'RemoveVersion', uid, force: false } }, store, policy)).toMatchObject({
      ok: false,
      exitCode: 4,
    });
    expect(await handleApiRequest({ kind: 'command', command: { type: 'RemoveVersion', uid, force: true } }, store, policy)).toMatchObject({
      ok: true,
      version: { status: 'removed' },
    });
  });

  it('ingest rejects a malformed record (so the queue retries it and dead-letters it)', async () => {
    await expect(ingestBlockRecord('{"type":"BlocksRecorded"}', newStore())).rejects.toThrow();
    await expect(ingestBlockRecord('not json', newStore())).rejects.toThrow();
  });

  it('retention removes expired, unprotected versions only', async () => {
    const store = newStore();
    const [expired, protectedOne, future] = [randomUUID(), randomUUID(), randomUUID()];
    for (const [uid, expire] of [
      [expired, '2020-01-01T00:00:00.000Z'],
      [protectedOne, '2020-01-01T00:00:00.000Z'],
      [future, '2999-01-01T00:00:00.000Z'],
    ] as const) {
      await handleApiRequest(startRequest(uid, expire), store, policy);
      await ingestBlockRecord(record(uid), store);
      await handleApiRequest({ kind: 'command', command: { type: 'CommitVersion', uid, stats } }, store, policy);
    }
    await handleApiRequest({ kind: 'command', command: { type: 'ProtectVersion', uid: protectedOne } }, store, policy);
    expect((await runRetention(store, policy)).removed).toEqual([expired]);
    expect((await store.getVersion(expired))?.status).toBe('removed');
    expect((await store.getVersion(protectedOne))?.status).toBe('committed');
    expect((await store.getVersion(future))?.status).toBe('committed');
  });
});

describe('api roles', () => {
  it("the agent's api refuses rm --force; the admin api allows it", async () => {
    const store = newStore();
    const uid = randomUUID();
    await handleApiRequest(startRequest(uid), store, policy, 'agent');
    await ingestBlockRecord(record(uid), store);
    await handleApiRequest({ kind: 'command', command: { type: 'CommitVersion', uid, stats } }, store, policy, 'agent');
    const rm = { kind: 'command', command: { type: 'RemoveVersion', uid, force: true } };
    expect(await handleApiRequest(rm, store, policy, 'agent')).toMatchObject({ ok: false, exitCode: 4 });
    expect((await store.getVersion(uid))?.status).toBe('committed');
    expect(await handleApiRequest(rm, store, policy, 'admin')).toMatchObject({ ok: true, version: { status: 'removed' } });
  });
});

describe('api: the last chunk record with the commit', () => {
  const twoChunks = (uid: string) => ({ ...startRequest(uid), command: { ...startRequest(uid).command, chunkEntries: 1 } });
  const chunkRecord = (uid: string, chunk: number) => ({
    type: 'BlocksRecorded',
    v: 1,
    uid,
    chunk,
    entries: packChunk([{ idx: chunk, id: randomBytes(32).toString('hex'), length: 4096 }]).toString('base64'),
    sameAs: null,
    newBlocks: [],
    at: new Date().toISOString(),
  });
  const commitWith = (uid: string, rec: unknown) => ({ kind: 'command', command: { type: 'CommitVersion', uid, stats }, record: rec });

  it('projects the record, then commits only once every chunk is projected', async () => {
    const store = newStore();
    const uid = randomUUID();
    await handleApiRequest(twoChunks(uid), store, policy, 'agent');
    // Chunk 0 (sent through the queue) is not projected yet: the last one is recorded, the commit refused.
    expect(await handleApiRequest(commitWith(uid, chunkRecord(uid, 1)), store, policy, 'agent')).toMatchObject({ ok: false, exitCode: 4 });
    expect(await store.getChunk(uid, 1)).toBeTruthy();
    expect((await store.getVersion(uid))?.status).toBe('pending');
    expect(await ingestBlockRecord(JSON.stringify(chunkRecord(uid, 0)), store)).toBe(true);
    // The retried commit carries the same record again: a duplicate that changes nothing.
    expect(await handleApiRequest(commitWith(uid, chunkRecord(uid, 1)), store, policy, 'agent')).toMatchObject({
      ok: true,
      version: { status: 'committed', recordedChunks: 2 },
    });
    expect((await store.getVersion(uid))?.recordedChunks).toBe(2);
  });

  it('refuses a record of another version, or with another command, and records nothing', async () => {
    const store = newStore();
    const [uid, other] = [randomUUID(), randomUUID()];
    await handleApiRequest(startRequest(uid), store, policy, 'agent');
    await handleApiRequest(startRequest(other), store, policy, 'agent');
    expect(await handleApiRequest(commitWith(uid, chunkRecord(other, 0)), store, policy, 'agent')).toMatchObject({ ok: false, exitCode: 1 });
    const protect = { kind: 'command', command: { type: 'ProtectVersion', uid }, record: chunkRecord(uid, 0) };
    expect(await handleApiRequest(protect, store, policy, 'agent')).toMatchObject({ ok: false, exitCode: 1 });
    expect(await store.getChunk(other, 0)).toBeUndefined();
    expect(await store.getChunk(uid, 0)).toBeUndefined();
    expect((await store.getVersion(uid))?.status).toBe('pending');
  });

  it('does not record for a version that is no longer in progress', async () => {
    const store = newStore();
    const uid = randomUUID();
    await handleApiRequest(startRequest(uid), store, policy, 'agent');
    await handleApiRequest({ kind: 'command', command: { type: 'FailVersion', uid, reason: 'test' } }, store, policy, 'agent');
    expect(await handleApiRequest(commitWith(uid, chunkRecord(uid, 0)), store, policy, 'agent')).toMatchObject({ ok: false, exitCode: 4 });
    expect(await store.getChunk(uid, 0)).toBeUndefined();
  });
});
