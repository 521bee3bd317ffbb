import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeAt } from '../../shared/adapters/local/write-at.ts';

/** A handle whose writes land in `into` but take at most `most` bytes per call (a nearly full disk). */
function shortWriting(into: Buffer, most: number): { fh: FileHandle; calls: () => number } {
  let calls = 0;
  const fh = {
    async write(data: Uint8Array, offset: number, length: number, position: number) {
      calls++;
      const n = Math.min(most, length);
      into.set(data.subarray(offset, offset + n), position);
      return { bytesWritten: n, buffer: data };
    },
  } as unknown as FileHandle;
  return { fh, calls: () => calls };
}

describe('writeAt', () => {
  const dir = mkdtempSync(join(tmpdir(), 'backy2-write-at-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a whole block to a real file at its position', async () => {
    const data = randomBytes(4 * 1024 * 1024 + 42);
    const fh = await open(join(dir, 'f'), 'w');
    try {
      await writeAt(fh, data, data.length, 10);
    } finally {
      await fh.close();
    }
    const back = readFileSync(join(dir, 'f'));
    expect(back.length).toBe(data.length + 10);
    expect(back.subarray(10).equals(data)).toBe(true);
  });

  it('completes short writes, each continuing where the last one stopped', async () => {
    const data = randomBytes(10_000);
    const into = Buffer.alloc(10_100);
    const { fh, calls } = shortWriting(into, 999);
    await writeAt(fh, data, data.length, 100);
    expect(into.subarray(100).equals(data)).toBe(true);
    expect(calls()).toBe(Math.ceil(10_000 / 999));
  });

  it('takes a write of 0 bytes for a full disk (ENOSPC), never for success', async () => {
    const { fh } = shortWriting(Buffer.alloc(100), 0);
    await expect(writeAt(fh, Buffer.alloc(10), 10, 0)).rejects.toMatchObject({ code: 'ENOSPC' });
  });
});
