import { constants, readSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { writeAt } from '../../shared/adapters/local/write-at.ts';
import { ALIGNMENT_SLACK } from '../../shared/blocks/codec-pool.ts';

/**
 * O_DIRECT writes for a restore: a block written through the page cache costs the kernel a copy
 * into it and, at writeback, the work of flushing it (768 MiB written and fdatasync'ed: 0.87-0.89 s
 * of system CPU here, against 0.07-0.08 s with O_DIRECT), about a quarter of a restore's CPU.
 *
 * O_DIRECT needs memory, length and file offset aligned to what the device asks for (its logical
 * block size, 512 or 4096 bytes), and JavaScript cannot see an address. So a probe reads the target
 * (a block device) or a scratch file beside it with O_DIRECT into each piece of block memory at
 * increasing offsets; the first offset the kernel accepts is where that piece's blocks start.
 * Block memory is mapped page-aligned where it can be (pageAlignedSharedMemory()), so that is
 * offset 0: memory the device accepts but not on a page made the same writes 2-4x slower.
 * Whatever cannot be written directly (the last, short block; memory not aligned; a filesystem
 * without O_DIRECT) is written through the page cache as before: the bytes are the same.
 */
export class DirectProbe {
  private readonly fd: FileHandle;
  private hopeless = false;
  private constructor(fd: FileHandle) {
    this.fd = fd;
  }

  /** A probe for restores into `path` (a block device is read, nothing is written to it); null: O_DIRECT is not available there. */
  static async open(path: string, isBlockDevice: boolean): Promise<DirectProbe | null> {
    if (!directIoWanted()) return null;
    if (isBlockDevice)
      return open(path, constants.O_RDONLY | constants.O_DIRECT).then(
        (fd) => new DirectProbe(fd),
        () => null,
      );
    // A hole reads as zeros without the alignment check: the scratch file's block is written and synced first.
    const scratch = join(dirname(path), `.${basename(path)}.backy2-probe-${process.pid}`);
    try {
      const writer = await open(scratch, 'wx', 0o600);
      try {
        await writeAt(writer, Buffer.alloc(PROBE_BYTES), PROBE_BYTES, 0);
        await writer.datasync();
      } finally {
        await writer.close();
      }
      return new DirectProbe(await open(scratch, constants.O_RDONLY | constants.O_DIRECT));
    } catch {
      return null;
    } finally {
      // Open or not, the scratch file goes now: an open probe reads it by its descriptor.
      await rm(scratch, { force: true }).catch(() => {});
    }
  }

  /** The first offset into `memory` at which an O_DIRECT read is accepted; null: none up to ALIGNMENT_SLACK. */
  alignedOffset(memory: SharedArrayBuffer): number | null {
    // A device no offset satisfies is not probed again for every piece.
    if (this.hopeless) return null;
    for (let offset = 0; offset <= ALIGNMENT_SLACK; offset += MALLOC_ALIGNMENT) {
      try {
        readSync(this.fd.fd, new Uint8Array(memory, offset, PROBE_BYTES), 0, PROBE_BYTES, 0);
        return offset;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') break;
      }
    }
    this.hopeless = true;
    return null;
  }

  close(): Promise<void> {
    return this.fd.close().catch(() => {});
  }
}

/** A second descriptor on the restore target, opened with O_DIRECT. */
export class DirectWriter {
  private usable = true;
  private readonly fd: FileHandle;
  private constructor(fd: FileHandle) {
    this.fd = fd;
  }

  /** Null when the filesystem refuses O_DIRECT (tmpfs on older kernels, some FUSE filesystems). */
  static async open(path: string): Promise<DirectWriter | null> {
    if (!directIoWanted()) return null;
    return open(path, constants.O_WRONLY | constants.O_DIRECT).then(
      (fd) => new DirectWriter(fd),
      () => null,
    );
  }

  /**
   * Writes `data` directly when it can; false: nothing was written, the caller writes it through
   * the page cache. Errors other than EINVAL (ENOSPC, EIO) are the target's, as for any write.
   */
  async write(data: Buffer, length: number, position: number): Promise<boolean> {
    if (!this.usable || length % PROBE_BYTES !== 0 || position % PROBE_BYTES !== 0) return false;
    try {
      await writeAt(this.fd, data, length, position);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      // An alignment this device wants beyond the probe's (or a short write that left the rest unaligned).
      this.usable = false;
      return false;
    }
  }

  close(): Promise<void> {
    return this.fd.close();
  }
}

/** BACKY2_DIRECT_IO=0 turns O_DIRECT restore writes off. */
const directIoWanted = () => process.env['BACKY2_DIRECT_IO'] !== '0';

/** Largest logical block size O_DIRECT asks alignment to (file offsets, lengths, and the probe's read). */
const PROBE_BYTES = 4096;
/** malloc's alignment: the offsets worth probing. */
const MALLOC_ALIGNMENT = 16;
