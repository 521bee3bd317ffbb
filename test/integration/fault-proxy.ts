/**
 * A fault-injecting HTTP proxy between the agent and the emulator: every request is forwarded
 * unchanged (MiniStack serves all services on one port), except those the current rule picks,
 * which get the error answer AWS would give, in the protocol of the service asked (S3: XML,
 * Lambda: REST-JSON with x-amzn-ErrorType, DynamoDB/SQS: JSON with __type). The agent's SDK
 * sees real HTTP errors and does its real retries.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the rule sees of a request: enough to tell the service and the operation apart. */
export interface ProxiedRequest {
  method: string;
  /** Path and query, e.g. `/BUCKET/blocks/ab/cd/ID` or `/2015-03-31/functions/NAME/invocations`. */
  path: string;
  /** X-Amz-Target of JSON protocols (`DynamoDB_20120810.Query`, `AmazonSQS.SendMessage`), or ''. */
  target: string;
  body: Buffer;
}

/** The error answer: HTTP status and the service's error code (the SDK's exception name). */
export interface Fault {
  status: number;
  code: string;
  message: string;
}

/**
 * Instead of an answer, a stalled request: `answer` holds it and never answers (the connection
 * stays open and silent); `body` forwards it and passes on the answer's headers and first bytes,
 * then nothing more. Counted as injected under `stall-answer` / `stall-body`.
 */
export interface Stall {
  stall: 'answer' | 'body';
}

/**
 * Instead of the answer as it came, the same answer with one byte of its body flipped (the
 * middle one): data damaged on its way, under the headers the emulator sent. Counted as
 * injected under `corrupt-body`.
 */
export interface Corrupt {
  corrupt: 'body';
}

/** What a rule may do to a request instead of forwarding it. */
export type Injected = Fault | Stall | Corrupt;

/** Decides per request: a fault to answer with, a stall, a corruption, or undefined to forward it. */
export type FaultRule = (req: ProxiedRequest) => Injected | undefined;

export const isLambdaInvoke = (req: ProxiedRequest): boolean => req.method === 'POST' && /^\/2015-03-31\/functions\/[^/]+\/invocations/.test(req.path);
/** An S3 request for a block object of `bucket` (PUT: upload, GET: read). */
export const isBlockObject = (req: ProxiedRequest, bucket: string, method: 'PUT' | 'GET'): boolean =>
  req.method === method && req.path.startsWith(`/${bucket}/blocks/`);

export class FaultProxy {
  readonly url: string;
  /** Requests answered with a fault, by error code. */
  readonly injected = new Map<string, number>();
  /** Every request since the last `inject`/`heal`, with the number of the client connection it came on. */
  readonly requests: { req: ProxiedRequest; connection: number }[] = [];
  private readonly connections = new WeakMap<object, number>();
  private connectionCount = 0;
  private rule: FaultRule = () => undefined;
  private readonly server: Server;

  private constructor(server: Server) {
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** Listens on a free loopback port and forwards to `upstream` (http://host:port). */
  static async start(upstream: string): Promise<FaultProxy> {
    const to = new URL(upstream);
    let proxy: FaultProxy | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        // The whole request is read first, so a fault answer never cuts off the SDK's upload.
        const body = Buffer.concat(chunks);
        const target = String(req.headers['x-amz-target'] ?? '');
        const seen: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', target, body };
        proxy!.requests.push({ req: seen, connection: proxy!.connectionOf(req.socket) });
        const fault = proxy!.rule(seen);
        const stall = fault && 'stall' in fault ? fault.stall : undefined;
        const corrupt = fault && 'corrupt' in fault;
        if (corrupt) proxy!.tally('corrupt-body');
        if (stall) proxy!.tally(`stall-${stall}`);
        if (stall === 'answer') return; // silence until the client gives up (or the proxy closes)
        if (fault && 'code' in fault) {
          proxy!.tally(fault.code);
          const answer = errorAnswer(seen, fault);
          res.writeHead(fault.status, { ...answer.headers, 'content-length': Buffer.byteLength(answer.body) });
          res.end(answer.body);
          return;
        }
        const headers: IncomingHttpHeaders = { ...req.headers };
        // The body is sent whole: no 100-continue handshake with the emulator.
        delete headers['expect'];
        const upstreamReq = request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers }, (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          if (corrupt) {
            const parts: Buffer[] = [];
            up.on('data', (c: Buffer) => parts.push(c));
            up.on('end', () => {
              const answer = Buffer.concat(parts);
              if (answer.length) answer[answer.length >> 1]! ^= 0x01;
              res.end(answer);
            });
            return;
          }
          if (stall === 'body') {
            // The headers and the first chunk of the body, then silence (the rest is read and dropped).
            up.once('data', (first: Buffer) => {
              res.write(first.subarray(0, Math.max(1, first.length >> 1)));
              up.resume();
            });
            return;
          }
          up.pipe(res);
        });
        upstreamReq.on('error', () => res.destroy());
        upstreamReq.end(body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new FaultProxy(server);
    return proxy;
  }

  /** From now on, requests go through `rule`; the counts of injected faults (and the requests seen) start again. */
  inject(rule: FaultRule): void {
    this.injected.clear();
    this.requests.length = 0;
    this.rule = rule;
  }

  heal(): void {
    this.rule = () => undefined;
    this.requests.length = 0;
  }

  /** How many client connections carried the requests `matches` picks (since the last inject/heal). */
  connectionsFor(matches: (req: ProxiedRequest) => boolean): number {
    return new Set(this.requests.filter((r) => matches(r.req)).map((r) => r.connection)).size;
  }

  private connectionOf(socket: object): number {
    const known = this.connections.get(socket);
    if (known !== undefined) return known;
    this.connectionCount++;
    this.connections.set(socket, this.connectionCount);
    return this.connectionCount;
  }

  private tally(name: string): void {
    this.injected.set(name, this.count(name) + 1);
  }

  count(code: string): number {
    return this.injected.get(code) ?? 0;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A rule that forwards the first `healthy` requests `matches` picks, then answers every later one
 * with `fault` (a fault that persists past the SDK's retries).
 */
export function afterSuccesses(healthy: number, matches: (req: ProxiedRequest) => boolean, fault: Injected): FaultRule {
  let passed = 0;
  return (req) => {
    if (!matches(req)) return undefined;
    if (passed < healthy) {
      passed++;
      return undefined;
    }
    return fault;
  };
}

/** The error answer as the service would write it, so that the SDK parses the same exception name. */
function errorAnswer(req: ProxiedRequest, fault: Fault): { headers: Record<string, string>; body: string } {
  if (isLambdaInvoke(req) || req.path.startsWith('/2015-03-31/'))
    return { headers: { 'content-type': 'application/json', 'x-amzn-errortype': fault.code }, body: JSON.stringify({ Type: 'User', message: fault.message }) };
  if (req.target)
    return {
      headers: { 'content-type': 'application/x-amz-json-1.0' },
      body: JSON.stringify({ __type: `com.amazonaws.coral#${fault.code}`, message: fault.message }),
    };
  const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>${fault.message}</Message><RequestId>fault-proxy</RequestId></Error>`;
  return { headers: { 'content-type': 'application/xml' }, body: xml };
}

/** A rule that answers only the `times` requests `matches` picks after the first `healthy` with `fault` (then heals itself). */
export function onceAfter(healthy: number, matches: (req: ProxiedRequest) => boolean, fault: Injected, times = 1): FaultRule {
  let seen = 0;
  return (req) => {
    if (!matches(req)) return undefined;
    seen++;
    return seen > healthy && seen <= healthy + times ? fault : undefined;
  };
}
