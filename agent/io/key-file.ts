import { closeSync, fsyncSync, openSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { osFault } from '../../shared/adapters/faults.ts';
import { usageError } from '../../shared/domain/errors.ts';

/**
 * Creates a key file (mode 0600, never over an existing one) with every byte on disk before it is
 * used: written in full (writeFileSync completes short writes), fsynced, its directory fsynced.
 * A write that fails removes the file: an empty or half-written key file would be taken for the
 * key at the next run and block the repository until removed by hand. Errors are one line naming
 * the file (ENOSPC, EROFS, … : exit 6).
 */
export function createKeyFile(path: string, key: Buffer): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw usageError(`Key file ${path} exists; refusing to overwrite it`);
    throw osFault(e, 'file', path) ?? e;
  }
  try {
    writeFileSync(fd, key.toString('hex') + '\n');
    fsyncSync(fd);
    closeSync(fd);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      // closed already, or failing too: the file is removed either way
    }
    try {
      unlinkSync(path);
    } catch {
      // nothing more can be done; the error below names the file
    }
    throw osFault(e, 'file', path) ?? e;
  }
  syncDirectory(dirname(path));
}

/** The new directory entry survives a power loss too (the repository's backups depend on the key). */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
