/**
 * The agent's S3 client against a real HTTP endpoint on localhost that stalls, fails and counts
 * connections: a stalled request is abandoned after its timeout and retried, a 503 is retried,
 * every retry is reported (the agent shows it as a warning), a request that never succeeds
 * fails instead of hanging, and requests reuse a pool of keep-alive connections no larger than
 * the configured number of sockets. The puts that must never overwrite (blocks, journal entries:
 * AgentPolicy allows journal puts only with If-None-Match) send `If-None-Match: *`, and a 412 reads
 * as "already there".
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { makeClients, type S3Tuning } from '../../shared/adapters/aws/clients.ts';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import { deriveJournalKey, Journal, journalKeys } from '../../shared/app/journal.ts';

/** stallBody: the headers and half the body, then silence; breakBody: the same, then the connection is cut. */
type Behaviour = 'ok' | 'stall' | 'stallBody' | 'breakBody' | 'fail503' | 'exists412';

let server: Server;
let endpoint: string;
let script: Behaviour[] = [];
let requests = 0;
/** Method, path and If-None-Match header of every request, as the server saw them. */
let seen: { method: string; path: string; ifNoneMatch: string | undefined }[] = [];
const sockets = new Set<Socket>();
let connections = 0;
const BODY = Buffer.from('stored block bytes');

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  seen.push({ method: req.method ?? '', path: decodeURIComponent(req.url ?? '').replace(/\?.*$/, ''), ifNoneMatch: req.headers['if-none-match'] });
  const behaviour = script.shift() ?? 'ok';
  req.resume();
  req.on('end', () => {
    if (behaviour === 'stall') return; // never answers: the client's timeout must fire
    if (behaviour === 'stallBody' || behaviour === 'breakBody') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
      res.write(BODY.subarray(0, BODY.length / 2));
      if (behaviour === 'breakBody') setTimeout(() => res.socket?.destroy(), 20);
      return;
    }
    if (behaviour === 'fail503') {
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      return;
    }
    if (behaviour === 'exists412') {
      res.writeHead(412, { 'content-type': 'application/xml' });
      res.end(
        '<?xml version="1.0"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>',
      );
      return;
    }
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
      setTimeout(() => res.end(BODY), 20);
    } else {
      res.writeHead(200, { etag: '"x"' });
      res.end();
    }
  });
}

beforeAll(async () => {
  process.env['AWS_ACCESS_KEY_ID'] = 'test';
  process.env['AWS_SECRET_ACCESS_KEY'] = 'test';
  server = createServer({ keepAlive: true }, handle);
  server.on('connection', (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((ok) => server.close(() => ok()));
});
beforeEach(() => {
  script = [];
  requests = 0;
  connections = 0;
  seen = [];
});

function store(tuning: S3Tuning): { blocks: S3BlockStore; retries: string[] } {
  const retries: string[] = [];
  const clients = makeClients({ region: 'us-east-1', endpointUrl: endpoint }, { onRetry: (l) => retries.push(l), ...tuning });
  return { blocks: new S3BlockStore(clients.s3, 'bucket'), retries };
}

describe('S3 client: timeouts, retries, connections', () => {
  test('a stalled request is abandoned and retried; the retry is reported', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 300, idleTimeoutMs: 300 });
    script = ['stall'];
    const got = await blocks.get('blocks/ab/cd/abcd');
    expect(got?.equals(BODY)).toBe(true);
    expect(requests).toBe(2);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatch(/^S3 request failed, .*Timeout.*; retry 1 of 7 after \d+\.\d s$/);
  });

  test('a stalled upload (the body sent, no answer) is abandoned and retried; the retry is reported', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 300, idleTimeoutMs: 300 });
    script = ['stall'];
    expect(await blocks.putIfAbsent('blocks/ab/cd/abcd', BODY)).toBe(true);
    expect(requests).toBe(2);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatch(/^S3 request failed, .*Timeout.*; retry 1 of 7 after \d+\.\d s$/);
  });

  test('a body that stalls after the headers (outside the SDK retries) is read again; the retry is reported', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 2000, idleTimeoutMs: 300 });
    script = ['stallBody'];
    expect((await blocks.get('blocks/ab/cd/abcd'))?.equals(BODY)).toBe(true);
    script = ['stallBody'];
    const into = Buffer.alloc(64);
    expect((await blocks.getInto('blocks/ab/cd/abcd', into))?.equals(BODY)).toBe(true);
    expect(requests).toBe(4);
    expect(retries).toHaveLength(2);
    for (const line of retries) expect(line).toMatch(/^S3 request failed, TimeoutError: .*; retry 1 of 7 after \d+\.\d s$/);
  });

  test('a body cut off after the headers is read again', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 2000, idleTimeoutMs: 2000 });
    script = ['breakBody'];
    expect((await blocks.getInto('blocks/ab/cd/abcd', Buffer.alloc(64)))?.equals(BODY)).toBe(true);
    expect(requests).toBe(2);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatch(/; retry 1 of 7 after \d+\.\d s$/);
  });

  test('a body that stalls on every attempt fails with the timeout after the last one instead of hanging', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 2000, idleTimeoutMs: 200, maxAttempts: 3 });
    script = ['stallBody', 'stallBody', 'stallBody'];
    await expect(blocks.getInto('blocks/ab/cd/abcd', Buffer.alloc(64))).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(requests).toBe(3);
    expect(retries).toHaveLength(2);
  });

  test('a 503 (SlowDown) is retried with backoff and reported each time', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 2000 });
    script = ['fail503', 'fail503'];
    expect(await blocks.putIfAbsent('blocks/ab/cd/abcd', BODY)).toBe(true);
    expect(requests).toBe(3);
    expect(retries.map((l) => l.replace(/after \d+\.\d s/, 'after T'))).toEqual([
      expect.stringMatching(/HTTP 503.*; retry 1 of 7 after T$/),
      expect.stringMatching(/HTTP 503.*; retry 2 of 7 after T$/),
    ]);
  });

  test('an endpoint that never answers fails the request after the last attempt instead of hanging', async () => {
    const { blocks, retries } = store({ requestTimeoutMs: 200, idleTimeoutMs: 200, maxAttempts: 3 });
    script = ['stall', 'stall', 'stall'];
    await expect(blocks.get('blocks/ab/cd/abcd')).rejects.toMatchObject({ name: expect.stringMatching(/Timeout/) });
    expect(requests).toBe(3);
    expect(retries).toHaveLength(2);
  });

  test('requests reuse keep-alive connections, at most `sockets` of them at once', async () => {
    const { blocks } = store({ sockets: 3 });
    for (let i = 0; i < 5; i++) expect((await blocks.get(`blocks/ab/cd/${i}`))?.equals(BODY)).toBe(true);
    expect(connections).toBe(1); // one after another: the same connection every time
    await Promise.all(Array.from({ length: 24 }, (_, i) => blocks.get(`blocks/ab/cd/p${i}`)));
    expect(requests).toBe(29);
    // 24 at once through 3 sockets: no connection beyond the pool was ever opened.
    expect(connections).toBeLessThanOrEqual(3);
  });
});

describe('S3 puts that must never overwrite send If-None-Match: *', () => {
  test('a block upload, and a 412 (already stored) is "not put", not an error', async () => {
    const { blocks } = store({ requestTimeoutMs: 2000 });
    expect(await blocks.putIfAbsent('blocks/ab/cd/abcd', BODY)).toBe(true);
    script = ['exists412'];
    expect(await blocks.putIfAbsent('blocks/ab/cd/abcd', BODY)).toBe(false);
    expect(seen).toEqual([
      { method: 'PUT', path: '/bucket/blocks/ab/cd/abcd', ifNoneMatch: '*' },
      { method: 'PUT', path: '/bucket/blocks/ab/cd/abcd', ifNoneMatch: '*' },
    ]);
  });

  test('every kind of journal entry (version event, chunk record, index event); a taken slot is reported, not overwritten', async () => {
    const { blocks } = store({ requestTimeoutMs: 2000 });
    const journal = new Journal(blocks, deriveJournalKey(randomBytes(32)));
    const uid = randomUUID();
    const at = new Date().toISOString();
    expect(await journal.appendVersionEvent(1, { type: 'VersionProtected', v: 1, uid, at })).toBe(true);
    expect(await journal.appendChunk({ type: 'BlocksRecorded', v: 1, uid, chunk: 0, entries: null, sameAs: null, newBlocks: [], at })).toBe(true);
    const indexKey = journalKeys.index(at);
    expect(await journal.append(indexKey, { type: 'BlocksRekeyed', v: 1, blocks: [], at })).toBe(true);
    script = ['exists412'];
    expect(await journal.appendVersionEvent(1, { type: 'VersionProtected', v: 1, uid, at })).toBe(false);
    expect(seen).toEqual([
      { method: 'PUT', path: `/bucket/${journalKeys.version(uid, 1)}`, ifNoneMatch: '*' },
      { method: 'PUT', path: `/bucket/${journalKeys.chunk(uid, 0)}`, ifNoneMatch: '*' },
      { method: 'PUT', path: `/bucket/${indexKey}`, ifNoneMatch: '*' },
      { method: 'PUT', path: `/bucket/${journalKeys.version(uid, 1)}`, ifNoneMatch: '*' },
    ]);
  });

  test('a manifest is put plainly (it is overwritten by rekey: AgentPolicy leaves manifests/ unconditional)', async () => {
    const { blocks } = store({ requestTimeoutMs: 2000 });
    await blocks.put('manifests/m', BODY);
    expect(seen).toEqual([{ method: 'PUT', path: '/bucket/manifests/m', ifNoneMatch: undefined }]);
  });
});
