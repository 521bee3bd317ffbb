import type { Command } from 'commander';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { formatDateTime } from '../../shared/domain/dates.ts';
import type { Version } from '../../shared/domain/types.ts';
import { readJournal, reconcileIndex, replayPlan } from '../../shared/app/recover.ts';
import { openRecovery, type Recovery } from '../backend/recovery.ts';
import type { Log } from '../ui/log.ts';
import { renderRows, type Column } from '../ui/table.ts';
import { globals, logFor, outputMode, print } from './context.ts';

const columns: Column<Version>[] = [
  { name: 'date', align: 'l', value: (v) => formatDateTime(v.date) },
  { name: 'name', align: 'l', value: (v) => v.name },
  { name: 'uid', align: 'l', value: (v) => v.uid },
  { name: 'status', align: 'l', value: (v) => v.status },
  { name: 'valid', align: 'r', value: (v) => (v.valid ? 1 : 0) },
  { name: 'protected', align: 'r', value: (v) => (v.protected ? 1 : 0) },
  { name: 'events', align: 'r', value: (v) => v.seq },
];

/** Progress as log lines, at most one per 10 % (recover of a large repository takes a while). */
function progressLine(log: Log, verb: string): (done: number, total: number) => void {
  let last = -1;
  return (done, total) => {
    const tenth = total ? Math.floor((done / total) * 10) : 10;
    if (tenth === last) return;
    last = tenth;
    log.info(`${verb} ${done}/${total} journal entries (${tenth * 10}%)`);
  };
}

/** recover [--dry-run] [--merge]: rebuilds the metadata from the storage's journal and objects. */
export function register(program: Command): void {
  program
    .command('recover')
    .description('Rebuild lost metadata (SQLite file, DynamoDB tables) from the storage and the key alone')
    .option('-n, --dry-run', 'read and verify the journal, list what would be recovered; write nothing')
    .option('--merge', 'the metadata store is not empty: add what the journal holds beyond it')
    .action(async (opts: { dryRun?: boolean; merge?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const log = logFor(g);
      const recovery = await openRecovery(g.configfile, log);
      try {
        await run(recovery);
      } catch (e) {
        throw recovery.explain ? recovery.explain(e) : e;
      } finally {
        await recovery.close();
      }

      async function run(recovery: Recovery): Promise<void> {
        const concurrency = recovery.config.simultaneousReads;
        log.info(`Reading the journal in ${recovery.where}`);
        const plan = await readJournal(recovery.journal, { concurrency, progress: progressLine(log, 'Read') });
        for (const p of plan.problems) log.error(`${p.key}: ${p.reason}`);
        const missing: { id: string; versions: string[] }[] = [];
        if (!opts.dryRun) {
          const target = await recovery.begin(!!opts.merge);
          try {
            const replayed = await replayPlan(target.store, plan, {
              progress: progressLine(log, 'Replayed'),
              lastIndexEvent: target.lastIndexEvent,
              indexEventApplied: (key) => target.indexEventApplied(key),
            });
            const index = await reconcileIndex(target.store, recovery.blocks, { concurrency, log: log.info });
            missing.push(...index.missing);
            for (const m of index.missing) log.error(`Block ${m.id} is not stored; versions ${m.versions.join(', ')} need it (run scrub on them)`);
            await target.finish();
            log.info(
              `Recovered ${plan.versions.length} versions: ${replayed.applied} events applied (${replayed.skipped} already there), ${replayed.indexEvents} rekey batches applied, ${index.indexed} blocks indexed from their objects, ${index.dropped} index entries of deleted blocks dropped`,
            );
          } finally {
            await target.close();
          }
        } else log.info(`Dry run: ${plan.versions.length} versions and ${plan.items.length} journal events would be recovered; nothing was written`);
        print(renderRows(columns, plan.versions, outputMode(g)));
        if (plan.problems.length || missing.length)
          throw new Backy2Error(
            ExitCode.recoverIncomplete,
            `${plan.problems.length} journal entries refused and ${missing.length} blocks missing (listed above); everything else was ${opts.dryRun ? 'verified' : 'recovered'}`,
          );
      }
    });
}
