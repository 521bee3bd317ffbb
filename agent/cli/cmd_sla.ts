import type { Command } from 'commander';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { resolveSchedulers, slaBreaches } from '../../shared/domain/schedules.ts';
import { renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

interface Breach {
  name: string;
  breach: string;
}

const columns: Column<Breach>[] = [
  { name: 'name', align: 'l', value: (b) => b.name },
  { name: 'breach', align: 'l', value: (b) => b.breach },
];

/** sla [NAME] [-s schedulers]: backy2's SLA checks; unlike backy2, a breach exits non-zero for monitoring. */
export function register(program: Command): void {
  program
    .command('sla')
    .description(`SLA breaches according to the schedulers (exit ${ExitCode.slaBreach} when there is one)`)
    .argument('[name]', 'only this backup name (default: every name with a version)')
    .option('-s, --schedulers <list>', 'comma-separated scheduler sections (default: daily,weekly,monthly)')
    .action(async (name: string | undefined, opts: { schedulers?: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const schedulers = resolveSchedulers(opts.schedulers, backend.config.schedulers);
        const versions = (await backend.catalog.reader.listVersions()).filter((v) => v.status !== 'removed');
        const names = name !== undefined ? [name] : [...new Set(versions.map((v) => v.name))].sort();
        const now = new Date();
        const breaches = names.flatMap((n) => schedulers.flatMap((s) => slaBreaches(n, s, versions, now).map((breach) => ({ name: n, breach }))));
        print(renderRows(columns, breaches, outputMode(g)));
        if (breaches.length > 0) throw new Backy2Error(ExitCode.slaBreach, `${breaches.length} SLA breach${breaches.length === 1 ? '' : 'es'}`);
      });
    });
}
