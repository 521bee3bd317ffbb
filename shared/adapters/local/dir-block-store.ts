import { mkdir, open, readdir, readFile, rename, rm, stat, link, unlink } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BlockStore } from '../../ports/block-store.ts';

/**
 * Blocks as files under a directory (local disk or an NFS mount, as backy2's file backend).
 * Writes go to a temporary name, are fsynced, then linked into place: a crash never leaves a
 * half-written block under its final name, and link() fails if the name exists (If-None-Match).
 */
export class DirBlockStore implements BlockStore {
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  private path(key: string): string {
    return join(this.root, key);
  }

  private async writeTemp(key: string, body: Buffer): Promise<string> {
    const final = this.path(key);
    await mkdir(dirname(final), { recursive: true });
    const temp = `${final}.tmp-${randomBytes(6).toString('hex')}`;
    const fh = await open(temp, 'wx', 0o600);
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return temp;
  }

  async putIfAbsent(key: string, body: Buffer): Promise<boolean> {
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
  }

  async put(key: string, body: Buffer): Promise<void> {
    const temp = await this.writeTemp(key, body);
    await rename(temp, this.path(key));
  }

  async get(key: string): Promise<Buffer | null> {
    try {
      return await readFile(this.path(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async head(key: string): Promise<number | null> {
    try {
      return (await stat(this.path(key))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<string> {
    const start = this.path(prefix);
    const walk = async function* (dir: string, root: string): AsyncIterable<string> {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      for (const entry of entries) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) yield* walk(full, root);
        else if (!entry.name.includes('.tmp-')) yield relative(root, full);
      }
    };
    yield* walk(start, this.root);
  }
}
