import type { FileHandle } from 'node:fs/promises';

/**
 * Writes all of `data` at `position` in as few calls as the OS allows. A write may return fewer
 * bytes than asked (the OS does so on a nearly full disk); the rest is written by further calls,
 * and a call that writes nothing is an error (ENOSPC), never a silent success that leaves a hole.
 * (FileHandle#writeFile completes short writes too, but in 512 KiB calls: eight thread-pool round
 * trips per 4 MiB block instead of one.)
 */
export async function writeAt(fh: FileHandle, data: Uint8Array, length: number, position: number): Promise<void> {
  let written = 0;
  while (written < length) {
    const { bytesWritten } = await fh.write(data, written, length - written, position + written);
    if (bytesWritten <= 0) throw Object.assign(new Error(`ENOSPC: no space left on device, write returned 0 of ${length - written} bytes`), { code: 'ENOSPC' });
    written += bytesWritten;
  }
}
