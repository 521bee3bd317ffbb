import type { Command } from 'commander';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { importVersion } from '../../shared/app/transfer.ts';
import { usageError } from '../../shared/domain/errors.ts';
import { withBackend } from './context.ts';
import { printChangedVersion } from './cmd_ls.ts';

/** import FILE|-: re-creates an exported version here (see shared/app/transfer.ts). */
export function register(program: Command): void {
  program
    .command('import')
    .description('Import a version exported by "backy2 export" from FILE (- for stdin)')
    .argument('<file>', 'export file, or - for stdin')
    .action(async (file: string, _opts, cmd: Command) => {
      if (file !== '-' && (!existsSync(file) || !statSync(file).isFile())) throw usageError(`Import file ${file} not found`);
      // The import reads its file several times (check first, then change): stdin is kept in a temp file.
      const spool = file === '-' ? mkdtempSync(join(tmpdir(), 'backy2-import-')) : null;
      try {
        const path = spool ? join(spool, 'stdin') : file;
        if (spool) await pipeline(process.stdin, createWriteStream(path));
        await withBackend(cmd, async (backend, g, log) => {
          const version = await importVersion(
            backend,
            () => linesOf(path),
            (line) => log.info(line),
          );
          log.info(`Imported version ${version.uid}`);
          printChangedVersion(g, version);
        });
      } finally {
        if (spool) await rm(spool, { recursive: true, force: true });
      }
    });
}

const linesOf = (path: string): AsyncIterable<string> => createInterface({ input: createReadStream(path), crlfDelay: Infinity });
