import type { Command } from 'commander';
import { formatDateTime } from '../../shared/domain/dates.ts';
import { planDue, resolveSchedulers, type DueBackup } from '../../shared/domain/schedules.ts';
import { renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

const columns: Column<DueBackup>[] = [
  { name: 'name', align: 'l', value: (d) => d.name },
  { name: 'schedulers', align: 'l', value: (d) => d.schedulers.join(',') },
  { name: 'expire_date', align: 'l', value: (d) => formatDateTime(d.expireDate.toISOString()) },
  { name: 'due_since', align: 'l', value: (d) => formatDateTime(d.dueSince.toISOString()) },
];

/** due [NAME] [-s schedulers]: which backups the schedulers want now, as backy2. */
export function register(program: Command): void {
  program
    .command('due')
    .description('Backups due according to the schedulers (config sections with interval, keep, sla)')
    .argument('[name]', 'only this backup name (default: every name with a version)')
    .option('-s, --schedulers <list>', 'comma-separated scheduler sections (default: daily,weekly,monthly)')
    .action(async (name: string | undefined, opts: { schedulers?: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const schedulers = resolveSchedulers(opts.schedulers, backend.config.schedulers);
        const versions = (await backend.catalog.reader.listVersions()).filter((v) => v.status !== 'removed');
        const names = name !== undefined ? [name] : [...new Set(versions.map((v) => v.name))];
        print(renderRows(columns, planDue(names, schedulers, versions, new Date()), outputMode(g)));
      });
    });
}
