import { open, realpath, readFile, stat, type FileHandle } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { Backy2Error, ExitCode, usageError } from '../../shared/domain/errors.ts';
import { osFault } from '../../shared/adapters/faults.ts';

/**
 * Sources and targets are `file://PATH` URLs (relative or absolute), naming a regular file or
 * a block device, as in backy2. Block devices report size 0 to stat(), so their size comes
 * from sysfs.
 */
export function parseFileUrl(url: string, what: 'source' | 'target'): string {
  const m = /^file:\/\/(.+)$/.exec(url);
  if (!m) throw usageError(`Invalid ${what} "${url}": expected file://PATH (only the file scheme is supported)`);
  return resolve(m[1]!);
}

export async function deviceSize(path: string, fh: FileHandle): Promise<{ size: number; isBlockDevice: boolean }> {
  const st = await fh.stat();
  if (st.isFile()) return { size: st.size, isBlockDevice: false };
  if (!st.isBlockDevice()) throw usageError(`${path} is neither a regular file nor a block device`);
  const name = basename(await realpath(path));
  const sectors = Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim());
  return { size: sectors * 512, isBlockDevice: true };
}

export async function openSource(url: string): Promise<{ path: string; fh: FileHandle; size: number }> {
  const path = parseFileUrl(url, 'source');
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw usageError(`Source not found: ${url}`);
    // A failing device or a process limit is not the user's typo: their own codes (10, 12).
    const fault = code === 'EACCES' || code === 'EPERM' ? null : osFault(e, 'source', url);
    throw fault ?? new Backy2Error(ExitCode.usage, `Cannot open source ${url}: ${(e as Error).message}`);
  }
  const { size } = await deviceSize(path, fh);
  return { path, fh, size };
}

/**
 * Reads exactly `length` bytes at `position`, or fewer only at the end of the source; into
 * `into` (reused block memory, at least `length` bytes) when given.
 */
export async function readAt(fh: FileHandle, position: number, length: number, into?: Buffer | null): Promise<Buffer> {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
}

export { writeAt } from '../../shared/adapters/local/write-at.ts';

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts the kernel's writeback of a target while a restore is still writing it: every `every`
 * bytes written, an fdatasync runs in the background (one at a time, not awaited by the writes).
 * The final fsync then has only the last stretch left to flush instead of the whole image, and
 * dirty page cache stays bounded. Blocks written with O_DIRECT count too: they skip the page
 * cache, but the device's own cache (a VM's virtio disk: its host's) still has to be flushed, and
 * the final fsync of a 256 MiB cloud restore spent 0.26 s doing that alone.
 * A failed background sync is reported by `drain()`.
 */
export class Writeback {
  private readonly fh: FileHandle;
  private readonly every: number;
  private since = 0;
  private running: Promise<void> | null = null;
  private failure: { error: unknown } | null = null;

  constructor(fh: FileHandle, every: number) {
    this.fh = fh;
    this.every = every;
  }

  wrote(bytes: number): void {
    this.since += bytes;
    if (this.since < this.every || this.running) return;
    this.since = 0;
    this.running = this.fh
      .datasync()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.running = null;
      });
  }

  /** Waits for the background sync in flight; throws if any failed. */
  async drain(): Promise<void> {
    await this.running;
    if (this.failure) throw this.failure.error;
  }
}
