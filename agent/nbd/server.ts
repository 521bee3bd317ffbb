import { createServer, type Server, type Socket } from 'node:net';
import type { Log } from '../ui/log.ts';
import { BlockUnreadable, StorageUnavailable, type ExportSession, type ReadPiece } from './export.ts';
import * as P from './protocol.ts';

/** One export as a connection uses it. */
export interface OpenExport {
  name: string;
  description: string;
  size: number;
  readOnly: boolean;
  /** Safe to advertise NBD_FLAG_CAN_MULTI_CONN (no per-connection state such as a copy-on-write overlay). */
  multiConn: boolean;
  preferredBlockSize: number;
  session: ExportSession;
  /** The connection ended (cleanly or not): release the version, commit or discard its changes. */
  close(): Promise<void>;
}

export interface ExportDescription {
  name: string;
  description: string;
  size: number;
  readOnly: boolean;
  multiConn: boolean;
  preferredBlockSize: number;
}

/** What the server serves; the repository side (served.ts) implements it. */
export interface ExportProvider {
  list(): Promise<{ name: string; description: string }[]>;
  /** The export a name (uid or unique prefix) means, or null. */
  describe(name: string): Promise<ExportDescription | null>;
  open(name: string, connection: string): Promise<OpenExport | null>;
}

/** Largest READ/WRITE payload: the protocol's interoperable maximum (32 MiB). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
const MAX_IN_FLIGHT = 16;
const HANDSHAKE_TIMEOUT_MS = 60_000;
const META_CONTEXT_ID = 1;

/**
 * Bytes of request payloads (writes received, reads being answered) held at once by all
 * connections together: with the block cache, this bounds the server's memory for any number
 * of clients. A request waits for its share; no request is larger than the whole budget.
 */
class ByteBudget {
  private free: number;
  private readonly waiting: { n: number; go: () => void }[] = [];
  constructor(total: number) {
    this.free = total;
  }
  async take(n: number): Promise<() => void> {
    // Reserved here, or by the release that wakes this request (first come, first served).
    if (!this.waiting.length && this.free >= n) this.free -= n;
    else await new Promise<void>((go) => this.waiting.push({ n, go }));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.free += n;
      while (this.waiting.length && this.waiting[0]!.n <= this.free) {
        const next = this.waiting.shift()!;
        this.free -= next.n;
        next.go();
      }
    };
  }
}

/** Payload bytes in flight across all connections (see ByteBudget). */
export const PAYLOAD_BUDGET = 8 * MAX_PAYLOAD;

class ConnectionClosed extends Error {}
/** The client broke the protocol in a way that leaves no way to continue: hang up. */
class ProtocolViolation extends Error {}

/** Exact-length reads from a socket, with backpressure (the socket pauses while much is buffered). */
class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private wake: (() => void) | null = null;
  /** Read ahead of the parser at most this much (a payload being read is buffered whole). */
  private static readonly HIGH_WATER = 1024 * 1024;

  private readonly socket: Socket;
  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      if (this.buffered > SocketReader.HIGH_WATER) socket.pause();
      this.notify();
    });
    const end = () => {
      this.ended = true;
      this.notify();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (this.ended) throw new ConnectionClosed(this.buffered ? `connection closed with ${this.buffered} of ${n} bytes of a message` : 'connection closed');
      this.socket.resume();
      await new Promise<void>((r) => (this.wake = r));
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    if (this.buffered <= SocketReader.HIGH_WATER) this.socket.resume();
    return out;
  }
}

export interface ServerOptions {
  log: Log;
}

/**
 * The NBD server: fixed newstyle handshake, then transmission with several requests in flight
 * per connection. A misbehaving client gets an error reply or its connection closed; nothing it
 * sends can stop the server or disturb other connections.
 */
export class NbdServer {
  private server: Server | null = null;
  private readonly connections = new Set<Promise<void>>();
  private readonly live = new Set<Connection>();
  private readonly budget = new ByteBudget(PAYLOAD_BUDGET);
  private nextId = 1;
  private stopping = false;

  private readonly provider: ExportProvider;
  private readonly opts: ServerOptions;
  constructor(provider: ExportProvider, opts: ServerOptions) {
    this.provider = provider;
    this.opts = opts;
  }

  listen(host: string, port: number): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (e) => this.opts.log.error(`NBD server: ${e.message}`));
        this.server = server;
        const a = server.address();
        resolve(typeof a === 'object' && a ? { address: a.address, port: a.port } : { address: host, port });
      });
    });
  }

  /** Stops accepting, ends every connection and waits for their exports to close (copy-on-write commits). */
  async close(): Promise<void> {
    this.stopping = true;
    this.server?.close();
    // Requests in flight are answered, then each connection is cut (the protocol's shutdown) and
    // its export closed: copy-on-write changes are committed (or discarded with -d).
    await Promise.allSettled([...this.live].map((c) => c.stop()));
    await Promise.allSettled([...this.connections]);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  private accept(socket: Socket): void {
    const id = this.nextId++;
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const log = this.opts.log;
    log.info(`NBD connection ${id} from ${peer}`);
    const connection = new Connection(id, socket, this.provider, log, () => this.stopping, this.budget);
    this.live.add(connection);
    const done = connection
      .run()
      .catch((e: unknown) => log.error(`NBD connection ${id}: ${(e as Error).message}`))
      .finally(() => {
        socket.destroy();
        this.live.delete(connection);
        this.connections.delete(done);
        log.info(`NBD connection ${id} from ${peer} closed`);
      });
    this.connections.add(done);
  }
}

class Connection {
  private readonly reader: SocketReader;
  private structured = false;
  private metaContextFor: string | null = null;
  private noZeroes = false;
  /** What the client asked for, logged when the connection ends. */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly counts = { reads: 0, readBytes: 0, holeBytes: 0, writes: 0, writeBytes: 0, blockStatus: 0, errors: 0 };

  private readonly id: number;
  private readonly socket: Socket;
  private readonly provider: ExportProvider;
  private readonly log: Log;
  private readonly stopping: () => boolean;
  private readonly budget: ByteBudget;
  constructor(id: number, socket: Socket, provider: ExportProvider, log: Log, stopping: () => boolean, budget: ByteBudget) {
    this.budget = budget;
    this.id = id;
    this.socket = socket;
    this.provider = provider;
    this.log = log;
    this.stopping = stopping;
    this.reader = new SocketReader(socket);
    socket.on('error', () => {});
    socket.setMaxListeners(4 * MAX_IN_FLIGHT); // requests waiting for 'drain'
  }

  private send(...parts: Buffer[]): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    if (parts.length > 1) this.socket.cork();
    for (const p of parts) this.socket.write(p);
    if (parts.length > 1) this.socket.uncork();
  }

  /** send(), resolved when the last part has been written out (writes complete in order) or failed. */
  private sendWritten(...parts: Buffer[]): Promise<void> {
    if (this.socket.destroyed || !this.socket.writable) return Promise.resolve();
    return new Promise((resolve) => {
      if (parts.length > 1) this.socket.cork();
      parts.forEach((p, i) => {
        this.socket.write(p, i === parts.length - 1 ? () => resolve() : undefined);
      });
      if (parts.length > 1) this.socket.uncork();
    });
  }

  async run(): Promise<void> {
    const timer = setTimeout(() => {
      this.log.warn(`NBD connection ${this.id}: no export chosen within ${HANDSHAKE_TIMEOUT_MS / 1000} s; closing it`);
      this.socket.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    let opened: OpenExport | null;
    try {
      opened = await this.handshake();
    } catch (e) {
      if (e instanceof ConnectionClosed || e instanceof ProtocolViolation) {
        this.log.info(`NBD connection ${this.id}: handshake ended: ${e.message}`);
        return;
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
    if (!opened) return;
    this.log.info(`NBD connection ${this.id}: serving ${opened.name}${opened.readOnly ? ' read-only' : ' (copy-on-write)'}`);
    try {
      await this.transmit(opened);
    } finally {
      const c = this.counts;
      this.log.info(
        `NBD connection ${this.id}: ${c.reads} reads (${c.readBytes} bytes, ${c.holeBytes} of them holes), ${c.writes} writes (${c.writeBytes} bytes), ${c.blockStatus} block status, ${c.errors} errors`,
      );
      await opened.close();
    }
  }

  // ------------------------------------------------------------ handshake

  private async handshake(): Promise<OpenExport | null> {
    this.send(P.greeting());
    const flags = P.parseClientFlags(await this.reader.read(4));
    if (!flags) throw new ProtocolViolation('client flags the server did not offer');
    this.noZeroes = flags.noZeroes;
    for (;;) {
      const header = P.parseOptionHeader(await this.reader.read(16));
      if (!header) throw new ProtocolViolation('bad option magic');
      if (header.length > P.MAX_OPTION_LENGTH) throw new ProtocolViolation(`option ${header.option} of ${header.length} bytes`);
      const data = await this.reader.read(header.length);
      if (this.stopping() && header.option !== P.OPT.ABORT) {
        this.send(P.optionError(header.option, P.REP.ERR_SHUTDOWN, 'the server is shutting down'));
        continue;
      }
      const result = await this.option(header.option, data);
      if (result !== 'continue') return result;
    }
  }

  /** Answers one option; returns the export when transmission starts, null to end the session. */
  private async option(option: number, data: Buffer): Promise<OpenExport | null | 'continue'> {
    const O = P.OPT;
    try {
      switch (option) {
        case O.EXPORT_NAME: {
          const opened = await this.provider.open(data.toString('utf8'), `connection ${this.id}`);
          // The protocol has no error reply here: an unknown export ends the session.
          if (!opened) {
            this.log.warn(`NBD connection ${this.id}: unknown export "${data.toString('utf8').slice(0, 100)}"`);
            return null;
          }
          this.metaContextFor = null; // block status needs NBD_OPT_GO
          this.send(P.exportNameReply(opened.size, this.transmissionFlags(opened), this.noZeroes));
          return opened;
        }
        case O.ABORT:
          this.send(P.optionReply(option, P.REP.ACK));
          return null;
        case O.LIST:
          if (data.length) return this.refuse(option, P.REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
          for (const e of await this.provider.list()) this.send(P.repServer(e.name, e.description));
          this.send(P.optionReply(option, P.REP.ACK));
          return 'continue';
        case O.INFO:
        case O.GO:
          return await this.infoOrGo(option, data);
        case O.STRUCTURED_REPLY:
          if (data.length) return this.refuse(option, P.REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          this.structured = true;
          this.send(P.optionReply(option, P.REP.ACK));
          return 'continue';
        case O.LIST_META_CONTEXT:
        case O.SET_META_CONTEXT:
          return await this.metaContext(option, data);
        default:
          return this.refuse(option, P.REP.ERR_UNSUP, option === O.STARTTLS ? 'TLS is not supported by this server' : `option ${option} is not supported`);
      }
    } catch (e) {
      if (e instanceof P.MalformedOption) return this.refuse(option, P.REP.ERR_INVALID, e.message);
      throw e;
    }
  }

  private refuse(option: number, type: number, message: string): 'continue' {
    this.send(P.optionError(option, type, message));
    return 'continue';
  }

  private transmissionFlags(e: { readOnly: boolean; multiConn: boolean }): number {
    const T = P.TFLAG;
    let flags = T.HAS_FLAGS | T.SEND_FLUSH | T.SEND_FUA;
    if (e.readOnly) flags |= T.READ_ONLY;
    else flags |= T.SEND_TRIM | T.SEND_WRITE_ZEROES;
    if (e.multiConn) flags |= T.CAN_MULTI_CONN;
    return flags;
  }

  private async infoOrGo(option: number, data: Buffer): Promise<OpenExport | 'continue'> {
    const { name, requests } = P.decodeInfoRequest(data);
    const described = await this.provider.describe(name);
    if (!described) return this.refuse(option, P.REP.ERR_UNKNOWN, `no committed version "${name.slice(0, 100)}" in this repository`);
    const opened = option === P.OPT.GO ? await this.provider.open(name, `connection ${this.id}`) : null;
    if (option === P.OPT.GO && !opened) return this.refuse(option, P.REP.ERR_UNKNOWN, `version "${name.slice(0, 100)}" is no longer available`);
    const e = opened ?? described;
    this.send(P.infoExport(option, e.size, this.transmissionFlags(e)));
    if (requests.includes(P.INFO.NAME) || name !== e.name) this.send(P.infoString(option, P.INFO.NAME, e.name));
    if (requests.includes(P.INFO.DESCRIPTION)) this.send(P.infoString(option, P.INFO.DESCRIPTION, e.description));
    this.send(P.infoBlockSize(option, 1, e.preferredBlockSize, MAX_PAYLOAD));
    this.send(P.optionReply(option, P.REP.ACK));
    if (!opened) return 'continue';
    if (this.metaContextFor !== null && this.metaContextFor !== opened.name) this.metaContextFor = null;
    return opened;
  }

  private async metaContext(option: number, data: Buffer): Promise<'continue'> {
    if (option === P.OPT.SET_META_CONTEXT) this.metaContextFor = null;
    if (!this.structured) return this.refuse(option, P.REP.ERR_INVALID, 'negotiate structured replies first');
    const { name, queries } = P.decodeMetaContextRequest(data);
    const described = await this.provider.describe(name);
    if (!described) return this.refuse(option, P.REP.ERR_UNKNOWN, `no committed version "${name.slice(0, 100)}" in this repository`);
    const listing = option === P.OPT.LIST_META_CONTEXT;
    if (P.selectsBaseAllocation(queries, listing)) {
      this.send(P.repMetaContext(option, listing ? 0 : META_CONTEXT_ID, P.BASE_ALLOCATION));
      if (!listing) this.metaContextFor = described.name;
    }
    this.send(P.optionReply(option, P.REP.ACK));
    return 'continue';
  }

  // ------------------------------------------------------------ transmission

  private async transmit(e: OpenExport): Promise<void> {
    const limits: P.ExportLimits = {
      size: e.size,
      readOnly: e.readOnly,
      maxPayload: MAX_PAYLOAD,
      structured: this.structured,
      blockStatus: this.metaContextFor === e.name,
    };
    const inFlight = this.inFlight;
    try {
      for (;;) {
        const req = P.parseRequest(await this.reader.read(P.REQUEST_HEADER_BYTES));
        if (!req) throw new ProtocolViolation('bad request magic');
        let payload: Buffer | null = null;
        let release = () => {};
        if (req.type === P.CMD.WRITE) {
          // The payload must be read to stay in step; one larger than the protocol's maximum is refused by hanging up.
          if (req.length > MAX_PAYLOAD) throw new ProtocolViolation(`write of ${req.length} bytes (maximum ${MAX_PAYLOAD})`);
          release = await this.budget.take(req.length);
          try {
            payload = await this.reader.read(req.length);
          } catch (e) {
            release();
            throw e;
          }
        }
        if (req.type === P.CMD.DISC) {
          this.log.info(`NBD connection ${this.id}: client disconnected`);
          break;
        }
        const error = this.stopping() ? P.ERRNO.ESHUTDOWN : P.requestError(req, limits);
        if (error) {
          release();
          this.replyError(req, error, errorText(error, req, e.size));
          continue;
        }
        if (req.type === P.CMD.READ) release = await this.budget.take(req.length);
        // The budget is released once the reply has left the socket's queue (a slow reader holds it).
        const work = this.serve(e, req, payload)
          .then(() => this.drained())
          .finally(() => {
            release();
            inFlight.delete(work);
          });
        inFlight.add(work);
        while (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
      }
    } catch (err) {
      if (err instanceof ConnectionClosed) this.log.info(`NBD connection ${this.id}: ${err.message}`);
      else if (err instanceof ProtocolViolation) this.log.warn(`NBD connection ${this.id}: ${err.message}; closing it`);
      else throw err;
    } finally {
      await Promise.allSettled([...inFlight]);
    }
  }

  private drained(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Server shutdown: answers what is in flight, then hangs up (the reader then ends the session). */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    this.socket.destroy();
  }

  private replyError(req: P.Request, error: number, message: string): void {
    this.counts.errors++;
    if (this.structured) this.send(P.errorChunk(req.cookie, error, message));
    else this.send(P.simpleReply(req.cookie, error));
  }

  private async serve(e: OpenExport, req: P.Request, payload: Buffer | null): Promise<void> {
    const C = P.CMD;
    const s = e.session;
    try {
      switch (req.type) {
        case C.READ: {
          // The blocks stay pinned in the cache until the socket has taken the reply's bytes.
          const read = await s.read(req.offset, req.length);
          try {
            return await this.replyRead(req, read.pieces);
          } finally {
            read.release();
          }
        }
        case C.WRITE:
          if (req.length) await s.change(req.offset, req.length, payload);
          this.counts.writes++;
          this.counts.writeBytes += req.length;
          break;
        case C.WRITE_ZEROES:
        case C.TRIM:
          if (req.length) await s.change(req.offset, req.length, null);
          break;
        case C.FLUSH:
          await s.flush();
          break;
        case C.CACHE:
          break;
        case C.BLOCK_STATUS: {
          this.counts.blockStatus++;
          const extents = P.encodeExtents(await s.extents(req.offset, req.length), req.length, !!(req.flags & P.CMD_FLAG.REQ_ONE));
          this.send(P.blockStatusChunk(req.cookie, META_CONTEXT_ID, extents));
          return;
        }
      }
      if (req.flags & P.CMD_FLAG.FUA) await s.flush();
      this.send(P.simpleReply(req.cookie, 0));
    } catch (err) {
      const message = err instanceof BlockUnreadable || err instanceof StorageUnavailable ? err.message : `internal error: ${(err as Error).message}`;
      if (!(err instanceof BlockUnreadable)) this.log.error(`NBD connection ${this.id}: ${message}`);
      this.replyError(req, P.ERRNO.EIO, message);
    }
  }

  /** Sends a read's reply; resolves once the socket has written its bytes (or is gone). */
  private replyRead(req: P.Request, pieces: ReadPiece[]): Promise<void> {
    this.counts.reads++;
    this.counts.readBytes += req.length;
    for (const p of pieces) if (!p.data) this.counts.holeBytes += p.length;
    if (!this.structured) return this.sendWritten(P.simpleReply(req.cookie, 0), ...pieces.map((p) => p.data ?? Buffer.alloc(p.length)));
    if (!pieces.length) return this.sendWritten(P.noneChunk(req.cookie));
    const parts: Buffer[] = [];
    pieces.forEach((p, i) => {
      const done = i === pieces.length - 1;
      if (p.data) parts.push(P.offsetDataHeader(req.cookie, p.offset, p.length, done), p.data);
      else parts.push(P.offsetHole(req.cookie, p.offset, p.length, done));
    });
    return this.sendWritten(...parts);
  }
}

function errorText(error: number, req: P.Request, size: number): string {
  const E = P.ERRNO;
  if (error === E.EPERM) return 'the export is read-only';
  if (error === E.ESHUTDOWN) return 'the server is shutting down';
  if (error === E.EOVERFLOW) return `request of ${req.length} bytes exceeds the maximum payload of ${MAX_PAYLOAD}`;
  if (error === E.ENOSPC || (error === E.EINVAL && req.offset + req.length > size))
    return `request at ${req.offset} + ${req.length} lies past the end of the export (${size} bytes)`;
  return `command ${req.type} with flags ${req.flags} is not supported here`;
}
