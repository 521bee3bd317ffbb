/**
 * The NBD wire protocol (fixed newstyle handshake, simple and structured replies), as pure
 * encoders and decoders: no sockets, no repository. Numbers and layouts follow the protocol
 * document of the NetworkBlockDevice project (doc/proto.md); all integers are big-endian.
 */

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const CLIENT_FLAG_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

const ERR = 2 ** 31;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 2 ** 15 + 1 } as const;

export const ERRNO = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = 'base:allocation';

/** Largest option payload accepted during the handshake; a longer one is a hostile client. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Largest NBD string (export names, queries), as the protocol document allows. */
export const MAX_STRING = 4096;
export const REQUEST_HEADER_BYTES = 28;

// ---------------------------------------------------------------- handshake, server side

/** NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return b;
}

/** The client's 32-bit flags; null when it sets a flag the server did not offer (the connection must be dropped). */
export function parseClientFlags(b: Buffer): { fixedNewstyle: boolean; noZeroes: boolean } | null {
  const flags = b.readUInt32BE(0);
  if (flags & ~(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES)) return null;
  return { fixedNewstyle: !!(flags & CLIENT_FLAG_FIXED_NEWSTYLE), noZeroes: !!(flags & CLIENT_FLAG_NO_ZEROES) };
}

export interface OptionHeader {
  option: number;
  length: number;
}

/** The 16-byte option header; null when the magic is wrong. */
export function parseOptionHeader(b: Buffer): OptionHeader | null {
  if (b.readBigUInt64BE(0) !== IHAVEOPT) return null;
  return { option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

export class MalformedOption extends Error {}

/** A reader over an option's payload that refuses to run past its end. */
class Cursor {
  private at = 0;
  private readonly b: Buffer;
  constructor(b: Buffer) {
    this.b = b;
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  string(length: number): string {
    if (length > MAX_STRING) throw new MalformedOption(`string of ${length} bytes is longer than ${MAX_STRING}`);
    this.need(length);
    const s = this.b.toString('utf8', this.at, this.at + length);
    this.at += length;
    return s;
  }
  end(): void {
    if (this.at !== this.b.length) throw new MalformedOption(`${this.b.length - this.at} unexpected bytes at the end of the option`);
  }
  private need(n: number): void {
    if (this.at + n > this.b.length) throw new MalformedOption('option data ends early');
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO: export name and the information requested. */
export function decodeInfoRequest(data: Buffer): { name: string; requests: number[] } {
  const c = new Cursor(data);
  const name = c.string(c.u32());
  const count = c.u16();
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(c.u16());
  c.end();
  return { name, requests };
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name and queries. */
export function decodeMetaContextRequest(data: Buffer): { name: string; queries: string[] } {
  const c = new Cursor(data);
  const name = c.string(c.u32());
  const count = c.u32();
  if (count > 128) throw new MalformedOption(`${count} queries`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(c.string(c.u32()));
  c.end();
  return { name, queries };
}

/** Which of the queries select base:allocation (the one context this server offers). */
export function selectsBaseAllocation(queries: string[], listing: boolean): boolean {
  if (listing && queries.length === 0) return true;
  return queries.some((q) => q === BASE_ALLOCATION || (listing && q === 'base:'));
}

export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(data.length, 16);
  return Buffer.concat([h, data]);
}

export const optionError = (option: number, type: number, message: string) => optionReply(option, type, Buffer.from(message.slice(0, MAX_STRING)));

/** NBD_REP_SERVER: name, then a description for people. */
export function repServer(name: string, description: string): Buffer {
  const n = Buffer.from(name);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(n.length);
  return optionReply(OPT.LIST, REP.SERVER, Buffer.concat([len, n, Buffer.from(description)]));
}

export function infoExport(option: number, size: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(INFO.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return optionReply(option, REP.INFO, b);
}

export function infoString(option: number, type: typeof INFO.NAME | typeof INFO.DESCRIPTION, text: string): Buffer {
  const t = Buffer.alloc(2);
  t.writeUInt16BE(type);
  return optionReply(option, REP.INFO, Buffer.concat([t, Buffer.from(text.slice(0, MAX_STRING))]));
}

export function infoBlockSize(option: number, minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return optionReply(option, REP.INFO, b);
}

export function repMetaContext(option: number, id: number, name: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id);
  return optionReply(option, REP.META_CONTEXT, Buffer.concat([b, Buffer.from(name)]));
}

/** The answer to NBD_OPT_EXPORT_NAME: size, flags, and 124 zeros unless the client asked for none. */
export function exportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

// ---------------------------------------------------------------- transmission

export interface Request {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** The 28-byte request header; null when the magic is wrong (the client is out of step: hang up). */
export function parseRequest(b: Buffer): Request | null {
  if (b.readUInt32BE(0) !== REQUEST_MAGIC) return null;
  const offset = b.readBigUInt64BE(16);
  return {
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookie: b.readBigUInt64BE(8),
    // Past 2^53 no export of ours exists; the bounds check refuses it as past the end.
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: b.readUInt32BE(24),
  };
}

export interface ExportLimits {
  size: number;
  readOnly: boolean;
  maxPayload: number;
  structured: boolean;
  blockStatus: boolean;
}

const ALLOWED_FLAGS: Record<number, number> = {
  [CMD.READ]: CMD_FLAG.FUA,
  [CMD.WRITE]: CMD_FLAG.FUA,
  [CMD.FLUSH]: CMD_FLAG.FUA,
  [CMD.TRIM]: CMD_FLAG.FUA,
  [CMD.CACHE]: CMD_FLAG.FUA,
  [CMD.WRITE_ZEROES]: CMD_FLAG.FUA | CMD_FLAG.NO_HOLE,
  [CMD.BLOCK_STATUS]: CMD_FLAG.FUA | CMD_FLAG.REQ_ONE,
};

/**
 * The error a request gets before it is carried out (0: go ahead), as the protocol document
 * recommends: EINVAL for unknown commands or flags, reads past the end, block status without a
 * negotiated context; ENOSPC for writes past the end; EPERM for writes to a read-only export;
 * EOVERFLOW for reads larger than the advertised maximum payload.
 */
export function requestError(r: Request, x: ExportLimits): number {
  const allowed = ALLOWED_FLAGS[r.type];
  if (allowed === undefined || r.flags & ~allowed) return ERRNO.EINVAL;
  const end = r.offset + r.length;
  switch (r.type) {
    case CMD.READ:
    case CMD.CACHE:
      if (r.type === CMD.READ && r.length > x.maxPayload) return ERRNO.EOVERFLOW;
      return end > x.size ? ERRNO.EINVAL : 0;
    case CMD.WRITE:
    case CMD.WRITE_ZEROES:
    case CMD.TRIM:
      if (x.readOnly) return ERRNO.EPERM;
      return end > x.size ? (r.type === CMD.TRIM ? ERRNO.EINVAL : ERRNO.ENOSPC) : 0;
    case CMD.FLUSH:
      return 0;
    case CMD.BLOCK_STATUS:
      if (!x.blockStatus) return ERRNO.EINVAL;
      return end > x.size ? ERRNO.EINVAL : 0;
  }
  return ERRNO.EINVAL;
}

export function simpleReply(cookie: bigint, error: number, data?: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(error, 4);
  h.writeBigUInt64BE(cookie, 8);
  return data ? Buffer.concat([h, data]) : h;
}

function chunkHeader(cookie: bigint, flags: number, type: number, length: number): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(length, 16);
  return h;
}

/** NBD_REPLY_TYPE_OFFSET_DATA: header and offset (the data goes after it, unchanged). */
export function offsetDataHeader(cookie: bigint, offset: number, dataLength: number, done: boolean): Buffer {
  const o = Buffer.alloc(8);
  o.writeBigUInt64BE(BigInt(offset));
  return Buffer.concat([chunkHeader(cookie, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_DATA, 8 + dataLength), o]);
}

export function offsetHole(cookie: bigint, offset: number, length: number, done: boolean): Buffer {
  const p = Buffer.alloc(12);
  p.writeBigUInt64BE(BigInt(offset), 0);
  p.writeUInt32BE(length, 8);
  return Buffer.concat([chunkHeader(cookie, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_HOLE, 12), p]);
}

export function errorChunk(cookie: bigint, error: number, message: string, done = true): Buffer {
  const m = Buffer.from(message.slice(0, 1024));
  const p = Buffer.alloc(6);
  p.writeUInt32BE(error, 0);
  p.writeUInt16BE(m.length, 4);
  return Buffer.concat([chunkHeader(cookie, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.ERROR, 6 + m.length), p, m]);
}

export const noneChunk = (cookie: bigint) => chunkHeader(cookie, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0);

export interface Extent {
  length: number;
  flags: number;
}

export function blockStatusChunk(cookie: bigint, contextId: number, extents: Extent[]): Buffer {
  const p = Buffer.alloc(4 + 8 * extents.length);
  p.writeUInt32BE(contextId, 0);
  extents.forEach((e, i) => {
    p.writeUInt32BE(e.length, 4 + 8 * i);
    p.writeUInt32BE(e.flags, 8 + 8 * i);
  });
  return Buffer.concat([chunkHeader(cookie, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, p.length), p]);
}

/**
 * Extents for a block status reply: neighbours with equal flags merged, lengths capped at what
 * a 32-bit field holds, at most one with REQ_ONE (then never longer than the request).
 */
export function encodeExtents(extents: Extent[], requested: number, reqOne: boolean): Extent[] {
  const out: Extent[] = [];
  const CAP = 0xffffffff - 511; // keeps lengths multiples of 512 where the input was
  for (const e of extents) {
    if (e.length <= 0) continue;
    const last = out.at(-1);
    if (last && last.flags === e.flags && last.length + e.length <= CAP) last.length += e.length;
    else out.push({ ...e });
  }
  if (reqOne && out.length) return [{ length: Math.min(out[0]!.length, requested), flags: out[0]!.flags }];
  return out;
}
