import type { Command } from 'commander';
import { parseBackyDate } from '../../shared/domain/dates.ts';
import { runBackup } from '../pipeline/backup.ts';
import { print, wantsBar, withBackend } from './context.ts';
import { readFile } from 'node:fs/promises';
import { parseHints } from '../../shared/domain/hints.ts';
import { usageError } from '../../shared/domain/errors.ts';

interface BackupOptions {
  snapshotName: string;
  tag?: string;
  expire?: string;
  fromVersion?: string;
  continueVersion?: string;
  rbdHints?: string;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

async function readHintsFile(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  return readFile(file, 'utf8').catch((e: Error) => {
    throw usageError(`Cannot read hints file ${file}: ${e.message}`);
  });
}

export const parseTags = (csv: string) =>
  csv
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);

/** backup SOURCE NAME: a new version of a file or block device. */
export function register(program: Command): void {
  program
    .command('backup')
    .description('Back up file://SOURCE (image file or block device) as a new version of NAME')
    .argument('<source>', 'file://PATH of an image file or block device')
    .argument('<name>', 'backup name')
    .option('-s, --snapshot-name <name>', 'snapshot name stored with the version', '')
    .option('-t, --tag <tags>', 'comma-separated tags (default: automatic b_daily/b_weekly/b_monthly)')
    .option('-e, --expire <date>', 'expiry date: YYYY-MM-DD or "YYYY-MM-DD HH:MM:SS"')
    .option('-f, --from-version <uid>', 'incremental: base version whose unchanged blocks are reused')
    .option('-c, --continue-version <uid>', 'continue an interrupted backup of the same source: recorded blocks are not read again')
    .option('-r, --rbd-hints <file>', 'read only the regions in this `rbd diff --format=json` output (- for stdin); the rest comes from -f BASE')
    .action(async (source: string, name: string, opts: BackupOptions, cmd: Command) => {
      const expire = opts.expire !== undefined ? parseBackyDate(opts.expire, 'expire date') : null;
      if (opts.continueVersion !== undefined) {
        const clash = (['fromVersion', 'tag', 'expire'] as const).find((o) => opts[o] !== undefined) ?? (opts.snapshotName ? 'snapshotName' : undefined);
        if (clash) throw usageError(`-c continues version ${opts.continueVersion} as it was started; it cannot be combined with --${kebab(clash)}`);
      }
      const hints = opts.rbdHints === undefined ? null : parseHints(await readHintsFile(opts.rbdHints), opts.rbdHints);
      await withBackend(cmd, async (backend, g, log) => {
        const { version, stats } = await runBackup(
          backend,
          {
            sourceUrl: source,
            name,
            snapshotName: opts.snapshotName,
            tags: opts.tag !== undefined ? parseTags(opts.tag) : null,
            expire,
            baseUid: opts.fromVersion ?? null,
            resumeUid: opts.continueVersion ?? null,
            hints,
          },
          log,
          wantsBar(g),
        );
        log.info(
          `Read ${stats.bytesRead} bytes: ${stats.blocksWritten} blocks written (${stats.bytesWritten} bytes stored), ${stats.blocksDedup} deduplicated, ${stats.blocksSparse} sparse, in ${stats.durationSeconds.toFixed(1)} s`,
        );
        log.info(`New version: ${version.uid} (Tags: [${version.tags.join(',')}])`);
        if (g.json) print(JSON.stringify({ uid: version.uid, tags: version.tags, stats }) + '\n');
        else if (g.machineOutput) print(version.uid + '\n');
      });
    });
}
