import type { Command } from 'commander';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { exportVersion } from '../../shared/app/transfer.ts';
import { osFault } from '../../shared/adapters/faults.ts';
import { type Backy2Error, storageError } from '../../shared/domain/errors.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

interface ExportRow {
  uid: string;
  name: string;
  file: string;
  bytes: number;
}

const exportColumns = (human: boolean): Column<ExportRow>[] => [
  { name: 'uid', align: 'l', value: (r) => r.uid },
  { name: 'name', align: 'l', value: (r) => r.name },
  { name: 'file', align: 'l', value: (r) => r.file },
  { name: 'bytes', align: 'r', value: (r) => (human ? humanBytes(r.bytes) : r.bytes) },
];

/** export UID FILE|-: the version's metadata as a self-contained file (see shared/app/transfer.ts). */
export function register(program: Command): void {
  program
    .command('export')
    .description('Export the metadata of version UID to FILE (- for stdout), for "backy2 import"')
    .argument('<uid>', 'version uid (or a unique prefix)')
    .argument('<file>', 'file to write (replaced), or - for stdout')
    .action(async (uid: string, file: string, _opts, cmd: Command) => {
      await withBackend(cmd, async (backend, g, log) => {
        const version = await resolveVersion(backend.catalog.reader, uid);
        const lines = exportVersion(backend.catalog.reader, version);
        if (file === '-') {
          await writeAll(lines, process.stdout, (e) => storageError(`Writing the export failed: ${e.message}`));
          return;
        }
        // Written beside the target and renamed: a failed export never leaves a half file under FILE's name.
        const partial = `${file}.${process.pid}.partial`;
        // flush: fsync before close, so the renamed file holds every byte.
        const out = createWriteStream(partial, { flags: 'wx', flush: true });
        let bytes: number;
        try {
          bytes = await writeAll(lines, out, (e) => fileFault(e, file));
          out.end();
          await once(out, 'close');
          if (out.errored) throw fileFault(out.errored, file);
          await rename(partial, file);
        } catch (e) {
          out.destroy();
          await rm(partial, { force: true });
          // The stream's own failures are classified in writeAll; an errno error here is the file's too (its last flush, the rename).
          throw osFault(e, 'file', file) ?? e;
        }
        log.info(`Exported version ${version.uid} to ${file}`);
        if (g.json || g.machineOutput)
          print(renderRows(exportColumns(g.humanReadable), [{ uid: version.uid, name: version.name, file, bytes }], outputMode(g)));
      });
    });
}

/** A failed write of the export file as one line naming it (full, read-only, …: exit 6). */
const fileFault = (e: Error, file: string): Backy2Error => osFault(e, 'file', file) ?? storageError(`Writing the export to ${file} failed: ${e.message}`);

/**
 * Writes every piece, waiting for the stream to drain: memory stays bounded on a slow pipe. A
 * write error (disk full, the reader of stdout gone) ends the export with `failed(error)`: the
 * output is incomplete, and import would refuse it.
 */
async function writeAll(pieces: AsyncIterable<string>, out: Writable, failed: (e: Error) => unknown): Promise<number> {
  const state: { failure: Error | null } = { failure: null };
  const broken = new Promise<never>((_, reject) =>
    out.once('error', (e) => {
      state.failure = e;
      reject(e);
    }),
  );
  broken.catch(() => {});
  let bytes = 0;
  try {
    for await (const piece of pieces) {
      if (state.failure) throw state.failure;
      bytes += Buffer.byteLength(piece);
      if (!out.write(piece)) await Promise.race([once(out, 'drain'), broken]);
    }
    if (state.failure) throw state.failure;
  } catch (e) {
    if (e === state.failure) throw failed(e as Error);
    throw e;
  }
  return bytes;
}
