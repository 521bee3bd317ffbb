import { mkdir, open, readdir, readFile, rename, rm, stat, link, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { BlockStore } from '../../ports/block-store.ts';
import { osFault } from '../faults.ts';
import { processAlive } from './processes.ts';
import { writeAt } from './write-at.ts';

/** Temporary files live in one directory of the data directory, so finding stale ones is one readdir. */
export const TEMP_DIR = '.tmp';
/** A temporary file whose writer cannot be proven dead is left alone until it is this old (no block write takes an hour). */
export const STALE_TEMP_AGE_MS = 3_600_000;

/** `<host>-<pid>-<random>`: who writes the file, so a later process can tell whether its writer is gone. */
const HOST =
  hostname()
    .replace(/[^A-Za-z0-9.]/g, '_')
    .slice(0, 64) || 'host';
const TEMP_NAME = /^(.+)-(\d+)-[0-9a-f]{12}$/;

/**
 * Blocks as files under a directory (local disk or an NFS mount, as backy2's file backend).
 * Writes go to a temporary file in `.tmp/`, are fsynced, then linked (or renamed) into place: a
 * crash never leaves a half-written block under its final name, and link() fails if the name
 * exists (If-None-Match). A temporary file is removed when its write fails; one left by a killed
 * process is removed by `removeStaleTemporaries` (backup start, cleanup) once its writer is gone.
 * Operating-system errors come out as one line naming the data directory (osFault).
 */
export class DirBlockStore implements BlockStore {
  readonly root: string;
  private tempDirReady: Promise<unknown> | null = null;
  constructor(root: string) {
    this.root = root;
  }

  private path(key: string): string {
    return join(this.root, key);
  }

  /** Runs one file-system operation; what fails is reported against the data directory. */
  private async io<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw osFault(e, 'data', this.root) ?? e;
    }
  }

  private async writeTemp(key: string, body: Buffer): Promise<string> {
    const final = this.path(key);
    this.tempDirReady ??= ensureDir(join(this.root, TEMP_DIR)).catch((e) => {
      this.tempDirReady = null;
      throw e;
    });
    await Promise.all([this.tempDirReady, ensureDir(dirname(final))]);
    const temp = join(this.root, TEMP_DIR, `${HOST}-${process.pid}-${randomBytes(6).toString('hex')}`);
    const fh = await open(temp, 'wx', 0o600);
    try {
      await writeAt(fh, body, body.length, 0);
      await fh.sync();
      await fh.close();
    } catch (e) {
      await fh.close().catch(() => {});
      await unlink(temp).catch(() => {});
      throw e;
    }
    return temp;
  }

  async putIfAbsent(key: string, body: Buffer): Promise<boolean> {
    return this.io(async () => {
      const temp = await this.writeTemp(key, body);
      try {
        await link(temp, this.path(key));
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw e;
      } finally {
        await unlink(temp);
      }
    });
  }

  async put(key: string, body: Buffer): Promise<void> {
    await this.io(async () => {
      const temp = await this.writeTemp(key, body);
      await rename(temp, this.path(key)).catch(async (e) => {
        await unlink(temp).catch(() => {});
        throw e;
      });
    });
  }

  async get(key: string): Promise<Buffer | null> {
    return this.io(async () => {
      try {
        return await readFile(this.path(key));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    });
  }

  async getInto(key: string, into: Buffer): Promise<Buffer | null> {
    return this.io(async () => {
      let fh: FileHandle;
      try {
        fh = await open(this.path(key), 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
      try {
        const { size } = await fh.stat();
        if (size > into.length) return await fh.readFile();
        let got = 0;
        while (got < size) {
          const { bytesRead } = await fh.read(into, got, size - got, got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        return into.subarray(0, got);
      } finally {
        await fh.close();
      }
    });
  }

  async head(key: string): Promise<number | null> {
    return this.io(async () => {
      try {
        return (await stat(this.path(key))).size;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    });
  }

  async delete(key: string): Promise<void> {
    await this.io(() => rm(this.path(key), { force: true }));
  }

  /** Every key starting with `prefix`, as S3 lists them (the prefix need not end at a folder). */
  async *list(prefix: string): AsyncIterable<string> {
    const folder = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const start = this.path(folder);
    const io = this.io.bind(this);
    const walk = async function* (dir: string, root: string): AsyncIterable<string> {
      const entries = await io(async () => {
        try {
          return await readdir(dir, { withFileTypes: true });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
          throw e;
        }
      });
      for (const entry of entries) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) {
          if (full !== join(root, TEMP_DIR)) yield* walk(full, root);
        } else if (!entry.name.includes('.tmp-')) yield relative(root, full);
      }
    };
    for await (const key of walk(start, this.root)) if (key.startsWith(prefix)) yield key;
  }

  /**
   * Removes temporary files whose writer is gone: written on this host by a process that no longer
   * exists, or (another host, or a pid that may have been reused) not written to for an hour.
   * A file a running process is still writing is never touched. `legacy` also walks `blocks/` for
   * the `<block>.tmp-<random>` files of earlier versions (no writer recorded: the age rule only).
   */
  async removeStaleTemporaries(opts: { legacy?: boolean; now?: number } = {}): Promise<{ files: number; bytes: number }> {
    const now = opts.now ?? Date.now();
    const removed = { files: 0, bytes: 0 };
    const removeIfStale = async (path: string, writerGone: boolean) => {
      const st = await stat(path).catch(() => null);
      if (!st || !st.isFile()) return;
      if (!writerGone && now - st.mtimeMs < STALE_TEMP_AGE_MS) return;
      await unlink(path).then(
        () => {
          removed.files++;
          removed.bytes += st.size;
        },
        (e) => {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        },
      );
    };
    await this.io(async () => {
      const dir = join(this.root, TEMP_DIR);
      const names = await readdir(dir).catch((e) => {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [] as string[];
        throw e;
      });
      for (const name of names) {
        const m = TEMP_NAME.exec(name);
        const writerGone = !!m && m[1] === HOST && !processAlive(Number(m[2]));
        await removeIfStale(join(dir, name), writerGone);
      }
    });
    if (opts.legacy) {
      const walk = async (dir: string): Promise<void> => {
        const entries = await this.io(() => readdir(dir, { withFileTypes: true }).catch(() => []));
        for (const entry of entries) {
          const full = join(dir, entry.name);
          if (entry.isDirectory()) await walk(full);
          else if (entry.name.includes('.tmp-')) await this.io(() => removeIfStale(full, false));
        }
      };
      await walk(join(this.root, 'blocks'));
    }
    return removed;
  }
}

/**
 * mkdir -p that reports the real cause: Node's recursive mkdir says ENOENT when a parent cannot be
 * created on a read-only filesystem; one level at a time gives EROFS (or EACCES, ENOSPC).
 */
async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw e;
    await ensureDir(dirname(dir));
    await mkdir(dir).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST') throw again;
    });
  }
}
