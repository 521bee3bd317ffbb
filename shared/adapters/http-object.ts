import { connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { HttpLocation } from '../ports/block-store.ts';

/**
 * A codec thread's HTTP client for whole objects in block memory (BlockStore.locate and
 * locateUpload): a GET's body is read into that memory by the socket itself (Node's `onread`
 * with a buffer chosen per read), and a PUT's body is sent from it, so no chunk is allocated,
 * copied or garbage-collected. Node's http client hands every 64 KiB of a body over as a new
 * buffer through streams: receiving 1 GiB from MiniStack took 1.7-2.5 CPU s that way against
 * 0.24-0.56 CPU s this way (AMD EPYC, docs/BENCHMARKS.md); the SDK's PutObject costs its
 * thread several ms per 4 MiB object (middleware, a SHA-256 of the body to sign it).
 *
 * Only what presigned GetObject and PutObject answers need: HTTP/1.1, keep-alive, bodies of
 * Content-Length bytes. Anything else (chunked, a body larger than the memory, a malformed
 * answer) is a failure the caller handles by going through the store, whose client speaks all
 * of HTTP; every block read is verified (AES-GCM, keyed id) whichever way it came, and S3
 * checks every upload against its SHA-256.
 */

/** Why a GET or PUT did not do its work: the caller goes through the store instead (BlockStore.getInto, putIfAbsent). */
export interface HttpFailure {
  name: string;
  message: string;
  status?: number;
}

/** Room for an answer's status line and headers (S3's are under 1 KiB). */
const HEAD_BYTES = 16 * 1024;
/** How much of an error answer's body is read for its S3 error code. */
const ERROR_BODY_BYTES = 4096;

/** What one connection is reading into now, and what it does with each read. */
interface Reader {
  memory(): Buffer;
  read(bytes: number): void;
  /** The connection ended or failed (`why`). */
  closed(why: HttpFailure): void;
  /** No byte moved for the idle timeout. */
  stalled(): void;
}

/** A keep-alive connection whose reads land where its current GET says. */
class Connection {
  readonly socket: Socket;
  /** Requests it has carried (a reused connection the server closed meanwhile fails its next request at once). */
  uses = 0;
  reusable = true;
  private reader: Reader | null = null;
  private readonly scratch = Buffer.allocUnsafe(HEAD_BYTES);
  constructor(url: URL, onGone: (c: Connection) => void) {
    const onread: OnReadOpts = { buffer: () => this.reader?.memory() ?? this.scratch, callback: (n) => this.onRead(n) };
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    this.socket =
      url.protocol === 'https:'
        ? // Node's TLS sockets take onread as its TCP ones do (its types do not say so).
          tlsConnect({ host: url.hostname, port, servername: url.hostname, onread } as ConnectionOptions)
        : netConnect({ host: url.hostname, port, onread });
    this.socket.setNoDelay(true);
    let ended = false;
    const gone = (why: HttpFailure) => {
      this.reusable = false;
      if (!ended) onGone(this);
      ended = true;
      this.reader?.closed(why);
    };
    this.socket.on('timeout', () => this.reader?.stalled());
    this.socket.on('error', (e: NodeJS.ErrnoException) => gone({ name: e.code ?? e.name, message: e.message }));
    this.socket.on('close', () => gone({ name: 'ECONNRESET', message: 'the connection closed' }));
    this.socket.on('end', () => this.socket.destroy());
  }

  private onRead(bytes: number): boolean {
    // Bytes nobody asked for (no GET in progress): the connection is out of step.
    if (!this.reader) this.socket.destroy();
    else this.reader.read(bytes);
    return true;
  }

  use(reader: Reader | null): void {
    this.reader = reader;
  }

  get headBuffer(): Buffer {
    return this.scratch;
  }
}

/** This thread's connections per origin: idle ones, how many exist, requests waiting for one. */
class Pool {
  private readonly idle: Connection[] = [];
  private open = 0;
  private readonly waiting: ((c: Connection) => void)[] = [];
  private readonly url: URL;
  private readonly sockets: number;
  constructor(url: URL, sockets: number) {
    this.url = url;
    this.sockets = Math.max(1, sockets);
  }

  acquire(): Promise<Connection> {
    const idle = this.idle.pop();
    if (idle) return Promise.resolve(idle);
    if (this.open < this.sockets) {
      this.open++;
      return Promise.resolve(new Connection(this.url, (c) => this.gone(c)));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(c: Connection): void {
    c.use(null);
    if (!c.reusable) {
      c.socket.destroy();
      return;
    }
    c.uses++;
    const next = this.waiting.shift();
    if (next) next(c);
    else {
      // An idle connection does not keep the thread alive.
      c.socket.unref();
      this.idle.push(c);
    }
  }

  private gone(c: Connection): void {
    const at = this.idle.indexOf(c);
    if (at >= 0) this.idle.splice(at, 1);
    this.open--;
    // Room for a new connection: the next waiting GET gets one.
    const next = this.waiting.shift();
    if (next) {
      this.open++;
      next(new Connection(this.url, (g) => this.gone(g)));
    }
  }
}

const pools = new Map<string, Pool>();

/** This thread's pool for the location's origin and connection count (reads and uploads may differ in it). */
function poolOf(url: URL, location: HttpLocation): Pool {
  const key = `${url.origin} ${location.sockets}`;
  const pool = pools.get(key) ?? new Pool(url, location.sockets);
  pools.set(key, pool);
  return pool;
}

/**
 * GETs `location` into `into` (a codec thread's shared block memory). Resolves with the object's
 * length, or why it could not: an answer other than 200, a body longer than `into`, one that ends
 * early or stalls, a request that takes too long. Never rejects.
 */
export async function httpGetInto(location: HttpLocation, into: Buffer): Promise<number | HttpFailure> {
  return exchange(location, { method: 'GET', into });
}

/**
 * PUTs `body` (a view of shared block memory: the socket sends it from there) to `location`,
 * with the headers the location says. Resolves with 200's status, or why not: any other answer
 * (its status and S3 error code: 412 when If-None-Match found the object), a stall, a break, a
 * request that takes too long. Never rejects.
 */
export async function httpPutFrom(location: HttpLocation, body: Buffer): Promise<200 | HttpFailure> {
  const got = await exchange(location, { method: 'PUT', body });
  return typeof got === 'number' ? 200 : got;
}

type Exchange = { method: 'GET'; into: Buffer } | { method: 'PUT'; body: Buffer };

async function exchange(location: HttpLocation, request: Exchange): Promise<number | HttpFailure> {
  const url = new URL(location.url);
  const pool = poolOf(url, location);
  const first = await once(pool, url, location, request);
  // A kept-alive connection the server had closed just then fails before any answer: once more on a
  // new one (a PUT too: If-None-Match makes a second one that finds the first's object answer 412).
  return typeof first !== 'number' && first.retry ? once(pool, url, location, request) : first;
}

/** The request line and headers: the location's own (those signed with it) and the body's length. */
function requestHead(url: URL, location: HttpLocation, request: Exchange): string {
  const headers = { ...location.headers, ...(request.method === 'PUT' ? { 'Content-Length': String(request.body.length) } : {}) };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `${request.method} ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: backy2\r\n${lines.join('')}\r\n`;
}

/**
 * One request on a connection of the pool. A 200's body goes into the GET's memory; any other
 * body (an error's, or a PUT's answer) into the connection's own buffer, read for its S3 code.
 */
async function once(pool: Pool, url: URL, location: HttpLocation, request: Exchange): Promise<number | (HttpFailure & { retry?: boolean })> {
  const into = request.method === 'GET' ? request.into : null;
  const c = await pool.acquire();
  const reused = c.uses > 0;
  c.socket.ref();
  return new Promise((resolve) => {
    const head = c.headBuffer;
    let headBytes = 0;
    let status = 0;
    let length = -1;
    let got = 0;
    let answered = false;
    let chunked = false;
    let settled = false;
    /** Whether the answer's body goes into `into` (a GET's 200) rather than the head buffer. */
    let intoMemory = false;
    const settle = (result: number | (HttpFailure & { retry?: boolean })) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.socket.setTimeout(0);
      if (typeof result !== 'number') c.reusable = false;
      pool.release(c);
      resolve(result);
    };
    const fail = (name: string, message: string, extra: { status?: number; retry?: boolean } = {}) => settle({ name, message, ...extra });
    const timer = setTimeout(() => fail('TimeoutError', `not complete within ${location.requestTimeoutMs} ms`), location.requestTimeoutMs);
    // No byte for this long, connecting included: the connection is stalled (Reader.stalled).
    c.socket.setTimeout(location.idleTimeoutMs);

    /** The answer's status and headers are in; the body follows (some of it read already). */
    const parseHead = (end: number) => {
      const lines = head.toString('latin1', 0, end).split('\r\n');
      const statusLine = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      if (!statusLine) return fail('BadAnswer', `not an HTTP/1.1 answer: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
      status = Number(statusLine[1]);
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (name === 'content-length') length = Number(value);
        else if (name === 'transfer-encoding') chunked = true;
        else if (name === 'connection' && /close/i.test(value)) c.reusable = false;
      }
      const lengthKnown = !chunked && Number.isSafeInteger(length) && length >= 0;
      const already = headBytes - end - 4;
      if (status !== 200 || !into) {
        // A small body (an error's S3 code, a PUT's answer) of known length; otherwise the status alone.
        if (status === 200 && !lengthKnown) return fail('BadAnswer', 'the answer has no Content-Length');
        if (status === 200 && length > HEAD_BYTES - end - 4) return fail('BadAnswer', `an answer of ${length} bytes to a ${request.method}`);
        length = lengthKnown ? Math.min(length, ERROR_BODY_BYTES, HEAD_BYTES - end - 4) : 0;
        got = already;
        if (got >= length) answer(end + 4);
        return;
      }
      if (chunked) return fail('BadAnswer', 'a chunked body is not read here');
      if (!lengthKnown) return fail('BadAnswer', 'the answer has no Content-Length');
      if (length > into.length) return fail('TooLarge', `the object has ${length} bytes, more than the ${into.length} of block memory`);
      if (already > length) return fail('BadAnswer', 'more bytes than the body announced');
      head.copy(into, 0, end + 4, headBytes);
      got = already;
      intoMemory = true;
      if (got === length) settle(got);
    };
    /** A whole answer in the head buffer: a PUT's 200, or a refusal with the S3 error code its body names. */
    const answer = (bodyAt: number): void => {
      if (status === 200) {
        settle(0);
        return;
      }
      const code = /<Code>([^<]+)<\/Code>/.exec(head.toString('utf8', bodyAt, bodyAt + got))?.[1];
      c.reusable = false;
      fail(code ?? 'HttpError', `HTTP ${status}${code ? ` ${code}` : ''}`, { status });
    };
    let bodyAt = 0;
    c.use({
      // The head into the connection's own buffer; a GET's 200 body straight into `into`, never past its length.
      memory: () => (intoMemory ? into!.subarray(got, length) : head.subarray(headBytes)),
      read: (bytes) => {
        answered = true;
        if (intoMemory) {
          got += bytes;
          if (got >= length) settle(got);
          return;
        }
        headBytes += bytes;
        if (status === 0) {
          const end = head.subarray(0, headBytes).indexOf('\r\n\r\n');
          if (end >= 0) {
            bodyAt = end + 4;
            parseHead(end);
          } else if (headBytes >= HEAD_BYTES) fail('BadAnswer', `no end of headers in ${HEAD_BYTES} bytes`);
        } else {
          got = headBytes - bodyAt;
          if (got >= length) answer(bodyAt);
        }
      },
      stalled: () => fail('TimeoutError', `no answer within ${location.idleTimeoutMs} ms`),
      closed: (why) => {
        if (intoMemory) fail('BodyError', `the body broke off after ${got} of ${length} bytes (${why.message})`);
        else fail(why.name, why.message, { retry: reused && !answered });
      },
    });
    c.socket.write(requestHead(url, location, request));
    if (request.method === 'PUT') c.socket.write(request.body);
  });
}
