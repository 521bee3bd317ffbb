import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGetInto, httpPutFrom } from '../../shared/adapters/http-object.ts';
import { pageAlignedSharedMemory } from '../../shared/blocks/codec-pool.ts';

/**
 * The codec threads' GET and PUT (shared/adapters/http-object.ts) against a real HTTP server:
 * an object arrives bit-exact in shared block memory, or leaves from it, over few kept-alive
 * connections, and every kind of answer it does not read (an error status, chunked, too large,
 * stalled, broken off) is a failure with a name, never a hang and never a short object taken
 * for whole.
 */
const MiB = 1024 * 1024;
const object = randomBytes(4 * MiB);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: Server;
let base: string;
const connections = new Set<unknown>();
let connectionCount = 0;

/** What PUTs stored, by path (a PUT with If-None-Match: * to a stored path is refused with 412, as S3 does). */
const stored = new Map<string, { body: Buffer; headers: IncomingMessage['headers'] }>();

function handlePut(req: IncomingMessage, res: ServerResponse, path: string): void {
  if (path === '/put-no-answer') return void req.resume();
  if (path === '/put-broken') return void req.once('data', () => req.socket.destroy());
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    if (req.headers['if-none-match'] === '*' && stored.has(path)) {
      const xml =
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>';
      res.writeHead(412, { 'Content-Length': Buffer.byteLength(xml) }).end(xml);
      return;
    }
    stored.set(path, { body: Buffer.concat(chunks), headers: req.headers });
    res.writeHead(200, { 'Content-Length': 0, ETag: '"x"' }).end();
  });
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url!.split('?')[0]!;
  if (req.method === 'PUT') handlePut(req, res, path);
  else if (path === '/ok' || path === '/small') {
    const body = path === '/ok' ? object : object.subarray(0, 1000);
    res.writeHead(200, { 'Content-Length': body.length, 'Content-Type': 'application/octet-stream' });
    // Several writes, as a server sends a large body.
    for (let at = 0; at < body.length; at += 300_000) res.write(body.subarray(at, at + 300_000));
    res.end();
  } else if (path === '/empty') {
    res.writeHead(200, { 'Content-Length': 0 }).end();
  } else if (path === '/missing') {
    const xml = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>';
    res.writeHead(404, { 'Content-Length': Buffer.byteLength(xml), 'Content-Type': 'application/xml' }).end(xml);
  } else if (path === '/chunked') {
    res.writeHead(200, { 'Transfer-Encoding': 'chunked' });
    res.end(object.subarray(0, 100));
  } else if (path === '/big') {
    res.writeHead(200, { 'Content-Length': object.length });
    res.end(object);
  } else if (path === '/stall-body') {
    res.writeHead(200, { 'Content-Length': object.length });
    res.write(object.subarray(0, 1000)); // then nothing
  } else if (path === '/broken') {
    res.writeHead(200, { 'Content-Length': object.length });
    res.write(object.subarray(0, 1000), () => req.socket.destroy());
  } else if (path === '/no-answer') {
    // never answered
  } else res.writeHead(500).end();
}

const location = (path: string, opts: { sockets?: number; idleTimeoutMs?: number; requestTimeoutMs?: number; headers?: Record<string, string> } = {}) => ({
  url: `${base}${path}?X-Amz-Signature=abc`,
  ...(opts.headers ? { headers: opts.headers } : {}),
  sockets: opts.sockets ?? 2,
  requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
  idleTimeoutMs: opts.idleTimeoutMs ?? 5_000,
});

beforeAll(async () => {
  server = createServer(handle);
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s) => {
    connectionCount++;
    connections.add(s);
    s.on('close', () => connections.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('httpGetInto', () => {
  it('reads an object bit-exact into shared block memory, and GETs in a row reuse one kept-alive connection', async () => {
    const memory = Buffer.from(pageAlignedSharedMemory(4 * MiB + 4096), 0, 4 * MiB + 4096);
    const before = connectionCount;
    for (let i = 0; i < 5; i++) {
      memory.fill(0);
      const got = await httpGetInto(location('/ok', { sockets: 1 }), memory);
      expect(got).toBe(object.length);
      expect(sha(memory.subarray(0, object.length))).toBe(sha(object));
    }
    expect(connectionCount - before).toBe(1);
    expect(await httpGetInto(location('/small', { sockets: 1 }), memory)).toBe(1000);
    expect(memory.subarray(0, 1000).equals(object.subarray(0, 1000))).toBe(true);
    expect(await httpGetInto(location('/empty', { sockets: 1 }), memory)).toBe(0);
  });

  it('GETs at once use at most `sockets` connections, and each object arrives whole', async () => {
    const before = connectionCount;
    const memories = Array.from({ length: 6 }, () => Buffer.alloc(4 * MiB));
    const got = await Promise.all(memories.map((m) => httpGetInto(location('/ok', { sockets: 3 }), m)));
    expect(got).toEqual(memories.map(() => object.length));
    for (const m of memories) expect(m.equals(object)).toBe(true);
    expect(connectionCount - before).toBeLessThanOrEqual(3);
  });

  it('a connection the server closed while idle is not used again: the next GET succeeds on a new one', async () => {
    const memory = Buffer.alloc(4 * MiB);
    expect(await httpGetInto(location('/ok', { sockets: 1 }), memory)).toBe(object.length);
    server.closeIdleConnections();
    await new Promise((r) => setTimeout(r, 100));
    memory.fill(0);
    expect(await httpGetInto(location('/ok', { sockets: 1 }), memory)).toBe(object.length);
    expect(memory.equals(object)).toBe(true);
  });

  it('an error answer is a failure naming its status and S3 error code', async () => {
    expect(await httpGetInto(location('/missing'), Buffer.alloc(4 * MiB))).toEqual({ name: 'NoSuchKey', message: 'HTTP 404 NoSuchKey', status: 404 });
    expect(await httpGetInto(location('/other'), Buffer.alloc(4 * MiB))).toMatchObject({ name: 'HttpError', status: 500 });
  });

  it('answers it does not read are failures, not objects: chunked, larger than the memory, broken off', async () => {
    expect(await httpGetInto(location('/chunked'), Buffer.alloc(4 * MiB))).toMatchObject({ name: 'BadAnswer' });
    expect(await httpGetInto(location('/big'), Buffer.alloc(MiB))).toMatchObject({ name: 'TooLarge' });
    expect(await httpGetInto(location('/broken'), Buffer.alloc(4 * MiB))).toMatchObject({
      name: 'BodyError',
      message: expect.stringMatching(/broke off after \d+ of 4194304/),
    });
  });

  it('a stalled body and a request never answered end with TimeoutError, within the timeouts', async () => {
    const started = Date.now();
    expect(await httpGetInto(location('/stall-body', { idleTimeoutMs: 300 }), Buffer.alloc(4 * MiB))).toEqual({
      name: 'TimeoutError',
      message: 'no answer within 300 ms',
    });
    expect(await httpGetInto(location('/no-answer', { idleTimeoutMs: 300 }), Buffer.alloc(4 * MiB))).toMatchObject({ name: 'TimeoutError' });
    expect(await httpGetInto(location('/stall-body', { idleTimeoutMs: 5000, requestTimeoutMs: 400 }), Buffer.alloc(4 * MiB))).toEqual({
      name: 'TimeoutError',
      message: 'not complete within 400 ms',
    });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('nothing listening: a failure with the connection error', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const got = await httpGetInto({ ...location('/ok'), url: `http://127.0.0.1:${port}/ok` }, Buffer.alloc(4 * MiB));
    expect(got).toMatchObject({ name: 'ECONNREFUSED' });
  });

  it('over TLS: the object arrives bit-exact (a server with a certificate the client is given to trust)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'backy2-tls-'));
    try {
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'].concat([
          '-keyout',
          join(dir, 'key.pem'),
          '-out',
          join(dir, 'cert.pem'),
        ]),
        { stdio: 'ignore' },
      );
      const tls = createTlsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, handle);
      await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
      const url = `https://localhost:${(tls.address() as AddressInfo).port}/ok`;
      // The CA is read at start-up (NODE_EXTRA_CA_CERTS): the client runs in a process of its own, while this one serves.
      const script = join(dir, 'get.ts');
      writeFileSync(
        script,
        [
          `import { createHash } from 'node:crypto';`,
          `import { httpGetInto } from ${JSON.stringify(join(import.meta.dirname, '../../shared/adapters/http-object.ts'))};`,
          `const into = Buffer.alloc(${4 * MiB});`,
          `const got = await httpGetInto({ url: ${JSON.stringify(url)}, sockets: 1, requestTimeoutMs: 10000, idleTimeoutMs: 5000 }, into);`,
          `console.log(JSON.stringify({ got, sha: createHash('sha256').update(into.subarray(0, typeof got === 'number' ? got : 0)).digest('hex') }));`,
          `process.exit(0);`,
        ].join('\n'),
      );
      const child = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
        // Asynchronously: this process must go on serving while the child reads.
        const c = spawn(process.execPath, [script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') } });
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d: Buffer) => (stdout += d));
        c.stderr.on('data', (d: Buffer) => (stderr += d));
        c.on('exit', () => resolve({ stdout, stderr }));
      });
      tls.closeAllConnections();
      await new Promise((r) => tls.close(r));
      expect(JSON.parse(child.stdout.trim() || '{}'), child.stderr).toEqual({ got: object.length, sha: sha(object) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('httpPutFrom', () => {
  it('sends an object from shared block memory bit-exact, with the headers of its location, over one kept-alive connection', async () => {
    const memory = Buffer.from(pageAlignedSharedMemory(4 * MiB + 4096), 0, 4 * MiB + 4096);
    object.copy(memory);
    const before = connectionCount;
    const headers = { 'if-none-match': '*', 'x-amz-checksum-sha256': 'abc=' };
    for (let i = 0; i < 4; i++) expect(await httpPutFrom(location(`/put/${i}`, { sockets: 1, headers }), memory.subarray(0, object.length))).toBe(200);
    // At most one new: the GETs' kept-alive connection to this origin may carry them all.
    expect(connectionCount - before).toBeLessThanOrEqual(1);
    for (let i = 0; i < 4; i++) {
      const got = stored.get(`/put/${i}`)!;
      expect(sha(got.body)).toBe(sha(object));
      expect(got.headers).toMatchObject({ ...headers, 'content-length': String(object.length) });
    }
    // An empty object, then a GET on the same connection: answers stay in step.
    expect(await httpPutFrom(location('/put/empty', { sockets: 1 }), memory.subarray(0, 0))).toBe(200);
    expect(stored.get('/put/empty')!.body.length).toBe(0);
    expect(await httpGetInto(location('/small', { sockets: 1 }), Buffer.alloc(MiB))).toBe(1000);
  });

  it('an object that exists (If-None-Match) is a 412 failure with its S3 code; other refusals name their status', async () => {
    const body = object.subarray(0, 1000);
    const headers = { 'if-none-match': '*' };
    expect(await httpPutFrom(location('/put/once', { headers }), body)).toBe(200);
    expect(await httpPutFrom(location('/put/once', { headers }), body)).toEqual({
      name: 'PreconditionFailed',
      message: 'HTTP 412 PreconditionFailed',
      status: 412,
    });
    expect(stored.get('/put/once')!.body.equals(body)).toBe(true);
  });

  it('a PUT never answered ends with TimeoutError within the timeout; one broken off mid-body with the connection error', async () => {
    const started = Date.now();
    expect(await httpPutFrom(location('/put-no-answer', { idleTimeoutMs: 300 }), object)).toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - started).toBeLessThan(5000);
    const broken = await httpPutFrom(location('/put-broken'), object);
    expect(broken).toMatchObject({ name: expect.stringMatching(/^(ECONNRESET|EPIPE)$/) });
  });
});
