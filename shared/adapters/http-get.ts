import { connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { HttpLocation } from '../ports/block-store.ts';

/**
 * A GET of one object straight into block memory, for a codec thread (BlockStore.locate): the
 * socket reads its body into that memory itself (Node's `onread` with a buffer chosen per read),
 * so no chunk is allocated, copied or garbage-collected. Node's http client hands every 64 KiB
 * of a body over as a new buffer through streams: receiving 1 GiB from MiniStack took 1.7-2.5
 * CPU s that way against 0.24-0.56 CPU s this way (AMD EPYC, docs/BENCHMARKS.md).
 *
 * Only what a presigned GetObject answer needs: HTTP/1.1, keep-alive, a body of Content-Length
 * bytes. Anything else (chunked, a body larger than the memory, a malformed answer) is a
 * failure the caller handles by reading the object through the store, whose client speaks all
 * of HTTP; every block read is verified (AES-GCM, keyed id) whichever way it came.
 */

/** Why a GET did not deliver the object: the caller reads it again another way (BlockStore.getInto). */
export interface GetFailure {
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
  closed(why: GetFailure): void;
  /** No byte moved for the idle timeout. */
  stalled(): void;
}

/** A keep-alive connection whose reads land where its current GET says. */
class Connection {
  readonly socket: Socket;
  /** GETs it has carried (a reused connection the server closed meanwhile fails its next GET at once). */
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
    const gone = (why: GetFailure) => {
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

/** This thread's connections per origin: idle ones, how many exist, GETs waiting for one. */
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

/**
 * GETs `location` into `into` (a codec thread's shared block memory). Resolves with the object's
 * length, or why it could not: an answer other than 200, a body longer than `into`, one that ends
 * early or stalls, a request that takes too long. Never rejects.
 */
export async function httpGetInto(location: HttpLocation, into: Buffer): Promise<number | GetFailure> {
  const url = new URL(location.url);
  const pool = pools.get(url.origin) ?? new Pool(url, location.sockets);
  pools.set(url.origin, pool);
  const first = await getOnce(pool, url, location, into);
  // A kept-alive connection the server had closed just then fails before any answer: once more on a new one.
  return typeof first !== 'number' && first.retry ? getOnce(pool, url, location, into) : first;
}

async function getOnce(pool: Pool, url: URL, location: HttpLocation, into: Buffer): Promise<number | (GetFailure & { retry?: boolean })> {
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
    const settle = (result: number | (GetFailure & { retry?: boolean })) => {
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
      if (status !== 200) {
        // Its S3 error code from a body of known length; otherwise the status alone.
        length = lengthKnown ? Math.min(length, ERROR_BODY_BYTES, HEAD_BYTES - end - 4) : 0;
        got = already;
        if (got >= length) refused(end + 4);
        return;
      }
      if (chunked) return fail('BadAnswer', 'a chunked body is not read here');
      if (!lengthKnown) return fail('BadAnswer', 'the answer has no Content-Length');
      if (length > into.length) return fail('TooLarge', `the object has ${length} bytes, more than the ${into.length} of block memory`);
      if (already > length) return fail('BadAnswer', 'more bytes than the body announced');
      head.copy(into, 0, end + 4, headBytes);
      got = already;
      if (got === length) settle(got);
    };
    /** An answer other than 200: its status, and the S3 error code its body names. */
    const refused = (bodyAt: number): void => {
      const code = /<Code>([^<]+)<\/Code>/.exec(head.toString('utf8', bodyAt, bodyAt + got))?.[1];
      c.reusable = false;
      fail(code ?? 'HttpError', `HTTP ${status}${code ? ` ${code}` : ''}`, { status });
    };
    let bodyAt = 0;
    c.use({
      // The head into the connection's own buffer; a 200's body straight into `into`, never past its length.
      memory: () => (status === 200 && length >= 0 ? into.subarray(got, length) : head.subarray(headBytes)),
      read: (bytes) => {
        answered = true;
        if (status === 200 && length >= 0) {
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
          if (got >= length) refused(bodyAt);
        }
      },
      stalled: () => fail('TimeoutError', `no answer within ${location.idleTimeoutMs} ms`),
      closed: (why) => {
        if (status === 200 && length >= 0) fail('BodyError', `the body broke off after ${got} of ${length} bytes (${why.message})`);
        else fail(why.name, why.message, { retry: reused && !answered });
      },
    });
    c.socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: backy2\r\n\r\n`);
  });
}
