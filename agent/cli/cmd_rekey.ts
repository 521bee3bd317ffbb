import type { Command } from 'commander';
import { integrityError, usageError } from '../../shared/domain/errors.ts';
import type { RekeyReport } from '../../shared/app/rekey.ts';
import { startProgress, type Progress } from '../ui/progress.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, wantsBar, withBackend } from './context.ts';

const columns = (human: boolean): Column<RekeyReport>[] => [
  { name: 'blocks', align: 'r', value: (r) => r.blocks },
  { name: 'rekeyed', align: 'r', value: (r) => r.rekeyed },
  { name: 'already_current', align: 'r', value: (r) => r.alreadyCurrent },
  { name: 'index_fixed', align: 'r', value: (r) => r.indexFixed },
  { name: 'skipped', align: 'r', value: (r) => r.skipped },
  { name: 'unreadable', align: 'r', value: (r) => r.unreadable.length },
  { name: 'manifests_rekeyed', align: 'r', value: (r) => r.manifestsRekeyed },
  { name: 'bytes_read', align: 'r', value: (r) => (human ? humanBytes(r.bytesRead) : r.bytesRead) },
];

/** rekey: re-encrypts blocks and manifests that older keys wrote under the configured key (same block ids). */
export function register(program: Command): void {
  program
    .command('rekey')
    .description('Re-encrypt blocks and manifests written with old_encryption_keys under encryption_key (block ids stay)')
    .option('-n, --dry-run', 'only count what would be re-encrypted')
    .action(async (opts: { dryRun?: boolean }, cmd: Command) => {
      await withBackend(cmd, async (backend, g, log) => {
        if (!backend.rekey) throw usageError('This backend cannot rekey');
        let progress: Progress | null = null;
        const report = await backend.rekey({
          dryRun: !!opts.dryRun,
          concurrency: backend.config.simultaneousWrites,
          progress: (done, total) => {
            progress ??= startProgress('Rekey checked', total, log, { bar: wantsBar(g) });
            progress.tick(done, 0);
          },
        });
        (progress as Progress | null)?.stop();
        const verb = opts.dryRun ? 'would be re-encrypted' : 're-encrypted';
        log.info(
          `Rekey${opts.dryRun ? ' (dry run)' : ''}: ${report.rekeyed} of ${report.blocks} blocks and ${report.manifestsRekeyed} manifests ${verb}; ${report.alreadyCurrent} blocks on the current key already`,
        );
        print(renderRows(columns(g.humanReadable), [report], outputMode(g)));
        if (report.unreadable.length) {
          for (const u of report.unreadable.slice(0, 10)) log.error(`${u.id}: ${u.reason}`);
          throw integrityError(
            `${report.unreadable.length} objects could not be read with the configured keys; add their key to old_encryption_keys and run rekey again`,
          );
        }
      });
    });
}
