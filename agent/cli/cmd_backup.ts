import type { Command } from 'commander';
import { parseBackyDate } from '../../shared/domain/dates.ts';
import { runBackup } from '../pipeline/backup.ts';
import { print, wantsBar, withBackend } from './context.ts';

export const parseTags = (csv: string) => csv.split(',').map((t) => t.trim()).filter(Boolean);

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
    .action(async (source: string, name: string, opts: { snapshotName: string; tag?: string; expire?: string; fromVersion?: string }, cmd: Command) => {
      const expire = opts.expire !== undefined ? parseBackyDate(opts.expire, 'expire date') : null;
      await withBackend(cmd, async (backend, g, log) => {
        const { version, stats } = await runBackup(
          backend,
          { sourceUrl: source, name, snapshotName: opts.snapshotName, tags: opts.tag !== undefined ? parseTags(opts.tag) : null, expire, baseUid: opts.fromVersion ?? null },
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
