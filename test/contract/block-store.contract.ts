import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { BlockStore } from '../../shared/ports/block-store.ts';
import { httpGetInto, httpPutFrom } from '../../shared/adapters/http-object.ts';

/**
 * One contract, run against every BlockStore (the directory store in the unit tests, S3 in the
 * emulator in the integration tests). Each test works under its own fresh prefix.
 */
export function blockStoreContract(name: string, makeStore: () => Promise<BlockStore>, opts: { locates?: boolean } = {}): void {
  describe(`BlockStore contract: ${name}`, () => {
    const fresh = () => `contract-${randomUUID()}/`;
    const collect = async (store: BlockStore, prefix: string) => {
      const keys: string[] = [];
      for await (const key of store.list(prefix)) keys.push(key);
      return keys.sort();
    };

    it('putIfAbsent stores a new object once and never overwrites (If-None-Match: *)', async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/abcd`;
      const first = randomBytes(1000);
      expect(await store.putIfAbsent(key, first)).toBe(true);
      expect(await store.putIfAbsent(key, randomBytes(2000))).toBe(false);
      expect(await store.get(key)).toEqual(first);
      expect(await store.head(key)).toBe(1000);
    });

    it("putIfAbsent with the body's SHA-256 stores it as with none", async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/digest`;
      const body = randomBytes(3000);
      expect(await store.putIfAbsent(key, body, { sha256: createHash('sha256').update(body).digest('hex') })).toBe(true);
      expect(await store.get(key)).toEqual(body);
    });

    it('concurrent putIfAbsent of one key: exactly one wins, and its bytes are stored', async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/race`;
      const bodies = Array.from({ length: 4 }, () => randomBytes(4096));
      const won = await Promise.all(bodies.map((b) => store.putIfAbsent(key, b)));
      expect(won.filter(Boolean)).toHaveLength(1);
      expect(await store.get(key)).toEqual(bodies[won.indexOf(true)]);
    });

    it('put overwrites; get and head give the bytes and the size', async () => {
      const store = await makeStore();
      const key = `${fresh()}manifests/m`;
      await store.put(key, Buffer.from('first'));
      await store.put(key, Buffer.from('second, longer'));
      expect((await store.get(key))?.toString()).toBe('second, longer');
      expect(await store.head(key)).toBe(14);
      const empty = `${fresh()}empty`;
      await store.put(empty, Buffer.alloc(0));
      expect(await store.head(empty)).toBe(0);
      expect(await store.get(empty)).toEqual(Buffer.alloc(0));
    });

    it('getInto reads an object into the given memory (a view of it); a larger object comes back whole on its own; a missing one is null', async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/into`;
      const body = randomBytes(300_000);
      await store.putIfAbsent(key, body);
      const memory = Buffer.alloc(400_000, 7);
      const got = await store.getInto(key, memory);
      expect(got).toEqual(body);
      expect(got!.buffer).toBe(memory.buffer);
      const small = Buffer.alloc(1000);
      const whole = await store.getInto(key, small);
      expect(whole).toEqual(body);
      expect(whole!.buffer).not.toBe(small.buffer);
      expect(await store.getInto(`${fresh()}blocks/00/00/none`, memory)).toBeNull();
      const empty = `${fresh()}empty`;
      await store.put(empty, Buffer.alloc(0));
      expect(await store.getInto(empty, memory)).toEqual(Buffer.alloc(0));
    });

    it(`locate ${opts.locates ? 'gives a location whose plain GET reads the object exactly (a missing one: 404)' : 'gives no location (blocks are read with getInto)'}`, async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/located`;
      const body = randomBytes(300_000);
      await store.put(key, body);
      const location = (await store.locate?.(key)) ?? null;
      if (!opts.locates) {
        expect(location).toBeNull();
        return;
      }
      expect(location).not.toBeNull();
      const into = Buffer.alloc(body.length + 100);
      expect(await httpGetInto(location!, into)).toBe(body.length);
      expect(into.subarray(0, body.length).equals(body)).toBe(true);
      const missing = await store.locate!(`${fresh()}blocks/ab/cd/none`);
      expect(await httpGetInto(missing!, into)).toMatchObject({ status: 404 });
    });

    it(`locateUpload ${opts.locates ? 'gives a location whose plain PUT stores the object once, checked against its SHA-256 (412 when it exists)' : 'gives no location (blocks are uploaded with putIfAbsent)'}`, async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/uploaded`;
      const body = randomBytes(300_000);
      const sha256 = createHash('sha256').update(body).digest('hex');
      const location = (await store.locateUpload?.(key, { sha256 })) ?? null;
      if (!opts.locates) {
        expect(location).toBeNull();
        return;
      }
      expect(location).not.toBeNull();
      expect(await httpPutFrom(location!, body)).toBe(200);
      expect(await store.get(key)).toEqual(body);
      // The object exists now: a second PUT (another body) is refused, the first stays.
      const again = await store.locateUpload!(key, { sha256: createHash('sha256').update(body.subarray(1)).digest('hex') });
      expect(await httpPutFrom(again!, body.subarray(1))).toMatchObject({ status: 412 });
      expect(await store.get(key)).toEqual(body);
      // A body other than the SHA-256 it was located with is refused and not stored.
      const other = `${fresh()}blocks/ab/cd/damaged`;
      const damaged = Buffer.from(body);
      damaged[7]! ^= 1;
      expect(await httpPutFrom((await store.locateUpload!(other, { sha256 }))!, damaged)).toMatchObject({ name: 'BadDigest', status: 400 });
      expect(await store.get(other)).toBeNull();
    });

    it('a missing object: get and head give null, delete is a no-op, list gives nothing', async () => {
      const store = await makeStore();
      const prefix = fresh();
      expect(await store.get(`${prefix}blocks/00/00/none`)).toBeNull();
      expect(await store.head(`${prefix}blocks/00/00/none`)).toBeNull();
      await store.delete(`${prefix}blocks/00/00/none`);
      expect(await collect(store, prefix)).toEqual([]);
    });

    it('delete removes the object; putIfAbsent may then store it again', async () => {
      const store = await makeStore();
      const key = `${fresh()}blocks/ab/cd/gone`;
      await store.putIfAbsent(key, Buffer.from('old'));
      await store.delete(key);
      expect(await store.get(key)).toBeNull();
      expect(await store.head(key)).toBeNull();
      expect(await store.putIfAbsent(key, Buffer.from('new'))).toBe(true);
      expect((await store.get(key))?.toString()).toBe('new');
    });

    it('lists every key under a prefix (nested, full keys), and only those', async () => {
      const store = await makeStore();
      const prefix = fresh();
      const keys = [`${prefix}blocks/ab/cd/1`, `${prefix}blocks/ab/ce/2`, `${prefix}blocks/ff/00/3`, `${prefix}manifests/u1`, `${prefix}keys/k1`];
      for (const key of keys) await store.putIfAbsent(key, Buffer.from(key));
      expect(await collect(store, `${prefix}blocks/`)).toEqual(keys.slice(0, 3).sort());
      expect(await collect(store, `${prefix}blocks/ab/`)).toEqual(keys.slice(0, 2).sort());
      expect(await collect(store, `${prefix}manifests/`)).toEqual([`${prefix}manifests/u1`]);
      // A prefix need not end at a folder.
      expect(await collect(store, `${prefix}blocks/ab/c`)).toEqual(keys.slice(0, 2).sort());
      expect(await collect(store, `${prefix}blocks/ab/ce`)).toEqual([`${prefix}blocks/ab/ce/2`]);
      expect(await collect(store, `${prefix}nothing/`)).toEqual([]);
      await store.delete(keys[0]!);
      expect(await collect(store, `${prefix}blocks/ab/`)).toEqual([`${prefix}blocks/ab/ce/2`]);
    });
  });
}
