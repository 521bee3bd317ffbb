/**
 * The NBD wire format (agent/nbd/protocol.ts) and the server's block cache, as pure units: byte
 * layouts from the protocol document, the checks every request passes before it is carried out,
 * and the cache's bound.
 */
import { describe, expect, it } from 'vitest';
import { BlockCache } from '../../agent/nbd/block-cache.ts';
import * as P from '../../agent/nbd/protocol.ts';

const limits = (o: Partial<P.ExportLimits> = {}): P.ExportLimits => ({
  size: 10 * 4096,
  readOnly: false,
  maxPayload: 1 << 25,
  structured: true,
  blockStatus: true,
  ...o,
});
const req = (type: number, offset: number, length: number, flags = 0): P.Request => ({ type, offset, length, flags, cookie: 1n });

describe('NBD protocol', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the fixed-newstyle + no-zeroes flags', () => {
    expect(P.greeting().toString('hex')).toBe(Buffer.from('NBDMAGICIHAVEOPT').toString('hex') + '0003');
  });

  it('refuses client flags it did not offer', () => {
    expect(P.parseClientFlags(Buffer.from([0, 0, 0, 3]))).toEqual({ fixedNewstyle: true, noZeroes: true });
    expect(P.parseClientFlags(Buffer.from([0, 0, 0, 4]))).toBeNull();
  });

  it('decodes NBD_OPT_GO and refuses data that runs past the option', () => {
    const name = Buffer.from('abc');
    const ok = Buffer.concat([Buffer.from([0, 0, 0, 3]), name, Buffer.from([0, 2, 0, 1, 0, 3])]);
    expect(P.decodeInfoRequest(ok)).toEqual({ name: 'abc', requests: [1, 3] });
    expect(() => P.decodeInfoRequest(Buffer.from([0, 0, 0, 9, 1]))).toThrow(P.MalformedOption);
    expect(() => P.decodeInfoRequest(Buffer.concat([ok, Buffer.from([9])]))).toThrow(/unexpected bytes/);
  });

  it('lays out a request header and the reply chunks as the document says', () => {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(P.REQUEST_MAGIC, 0);
    h.writeUInt16BE(P.CMD_FLAG.FUA, 4);
    h.writeUInt16BE(P.CMD.WRITE, 6);
    h.writeBigUInt64BE(77n, 8);
    h.writeBigUInt64BE(4096n, 16);
    h.writeUInt32BE(512, 24);
    expect(P.parseRequest(h)).toEqual({ flags: 1, type: 1, cookie: 77n, offset: 4096, length: 512 });
    h.writeUInt32BE(0xdeadbeef, 0);
    expect(P.parseRequest(h)).toBeNull();
    const hole = P.offsetHole(5n, 8192, 4096, true);
    expect(hole.length).toBe(32);
    expect(hole.readUInt32BE(0)).toBe(P.STRUCTURED_REPLY_MAGIC);
    expect([hole.readUInt16BE(4), hole.readUInt16BE(6), hole.readUInt32BE(16)]).toEqual([P.REPLY_FLAG_DONE, P.REPLY_TYPE.OFFSET_HOLE, 12]);
    const err = P.errorChunk(5n, P.ERRNO.EIO, 'bad block');
    expect([err.readUInt16BE(6), err.readUInt32BE(20), err.readUInt16BE(24), err.subarray(26).toString()]).toEqual([P.REPLY_TYPE.ERROR, 5, 9, 'bad block']);
  });

  it('checks requests before they are carried out', () => {
    const x = limits();
    expect(P.requestError(req(P.CMD.READ, 0, 4096), x)).toBe(0);
    expect(P.requestError(req(P.CMD.READ, 9 * 4096, 4097), x)).toBe(P.ERRNO.EINVAL);
    expect(P.requestError(req(P.CMD.READ, 0, (1 << 25) + 1), x)).toBe(P.ERRNO.EOVERFLOW);
    expect(P.requestError(req(P.CMD.WRITE, 10 * 4096, 1), x)).toBe(P.ERRNO.ENOSPC);
    expect(P.requestError(req(P.CMD.WRITE, 0, 1), limits({ readOnly: true }))).toBe(P.ERRNO.EPERM);
    expect(P.requestError(req(P.CMD.TRIM, 0, 1), limits({ readOnly: true }))).toBe(P.ERRNO.EPERM);
    expect(P.requestError(req(P.CMD.BLOCK_STATUS, 0, 1), limits({ blockStatus: false }))).toBe(P.ERRNO.EINVAL);
    expect(P.requestError(req(P.CMD.READ, 0, 1, P.CMD_FLAG.NO_HOLE), x)).toBe(P.ERRNO.EINVAL);
    expect(P.requestError(req(99, 0, 0), x)).toBe(P.ERRNO.EINVAL);
  });

  it('merges equal neighbouring extents; REQ_ONE gives one, never longer than asked', () => {
    const e = [
      { length: 100, flags: 0 },
      { length: 50, flags: 0 },
      { length: 10, flags: 3 },
    ];
    expect(P.encodeExtents(e, 160, false)).toEqual([
      { length: 150, flags: 0 },
      { length: 10, flags: 3 },
    ]);
    expect(P.encodeExtents(e, 120, true)).toEqual([{ length: 120, flags: 0 }]);
  });
});

describe('BlockCache', () => {
  const load = (n: number, counter: { loads: number }) => () => {
    counter.loads++;
    return Promise.resolve(Buffer.alloc(1024, n));
  };
  const got = async (cache: BlockCache, id: string, loader: (into: Buffer | null) => Promise<Buffer>) => {
    const pinned = await cache.get(id, loader);
    pinned.release();
    return pinned.data;
  };

  it('stays within its bytes, evicts the least recently used, shares one load per id', async () => {
    const cache = new BlockCache(3 * 1024);
    const counter = { loads: 0 };
    const [a1, a2] = await Promise.all([got(cache, 'a', load(1, counter)), got(cache, 'a', load(1, counter))]);
    expect(a1).toBe(a2);
    expect(counter.loads).toBe(1);
    await got(cache, 'b', load(2, counter));
    await got(cache, 'c', load(3, counter));
    await got(cache, 'a', load(1, counter)); // a is now the most recent
    await got(cache, 'd', load(4, counter)); // evicts b
    expect(cache.size).toBe(3 * 1024);
    expect(cache.has('b')).toBe(false);
    expect(cache.has('a') && cache.has('c') && cache.has('d')).toBe(true);
    await expect(cache.get('e', () => Promise.reject(new Error('unreadable')))).rejects.toThrow('unreadable');
    expect(cache.has('e')).toBe(false);
    const huge = await got(cache, 'big', () => Promise.resolve(Buffer.alloc(4 * 1024)));
    expect(huge.length).toBe(4096);
    expect(cache.has('big')).toBe(false); // larger than the cache: served, not kept
  });

  it('a pinned block is never evicted, and its memory is not reused until it is released', async () => {
    const free: Buffer[] = [];
    let made = 0;
    const memory = {
      acquire: () => {
        const reused = free.pop();
        if (reused) return reused;
        made++;
        return Buffer.alloc(1024);
      },
      release: (m: Buffer) => free.push(m),
    };
    // Room for one block: every other load must evict, unless the block is held.
    const cache = new BlockCache(1024, memory);
    const fill = (n: number) => async (into: Buffer | null) => into!.fill(n);
    const held = await cache.get('a', fill(1));
    for (const [i, id] of ['b', 'c', 'd'].entries()) await got(cache, id, fill(i + 2));
    expect(held.data.every((b) => b === 1)).toBe(true);
    expect(cache.has('a')).toBe(true);
    held.release();
    await got(cache, 'e', fill(9));
    expect(cache.has('a')).toBe(false);
    // Memory went back and was reused: two pieces served five blocks.
    expect(made).toBe(2);
    // A failed load gives its memory back too.
    await expect(cache.get('x', () => Promise.reject(new Error('bad')))).rejects.toThrow('bad');
    expect(made).toBe(2);
  });
});
