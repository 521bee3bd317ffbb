import type { Command } from 'commander';
import { statsReport } from '../../shared/app/reports.ts';
import { formatDateTime } from '../../shared/domain/dates.ts';
import { usageError } from '../../shared/domain/errors.ts';
import type { StatsRow } from '../../shared/domain/reports.ts';
import { selectColumns } from '../ui/columns.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

/** backy2's `stats` columns, in its order; -r humanizes the byte columns only. */
const statsColumns = (human: boolean): Column<StatsRow>[] => {
  const bytes = (n: number) => (human ? humanBytes(n) : n);
  return [
    { name: 'date', align: 'l', value: (s) => formatDateTime(s.date) },
    { name: 'uid', align: 'l', value: (s) => s.uid },
    { name: 'name', align: 'l', value: (s) => s.name },
    { name: 'size bytes', align: 'r', value: (s) => bytes(s.sizeBytes) },
    { name: 'size blocks', align: 'r', value: (s) => s.sizeBlocks },
    { name: 'bytes read', align: 'r', value: (s) => bytes(s.bytesRead) },
    { name: 'blocks read', align: 'r', value: (s) => s.blocksRead },
    { name: 'bytes written', align: 'r', value: (s) => bytes(s.bytesWritten) },
    { name: 'blocks written', align: 'r', value: (s) => s.blocksWritten },
    { name: 'bytes dedup', align: 'r', value: (s) => bytes(s.bytesDedup) },
    { name: 'blocks dedup', align: 'r', value: (s) => s.blocksDedup },
    { name: 'bytes sparse', align: 'r', value: (s) => bytes(s.bytesSparse) },
    { name: 'blocks sparse', align: 'r', value: (s) => s.blocksSparse },
    // Whole seconds, as backy2 stored them.
    { name: 'duration (s)', align: 'r', value: (s) => Math.round(s.durationSeconds) },
  ];
};

export function register(program: Command): void {
  program
    .command('stats')
    .description('Statistics of backup runs (all, or of version UID)')
    .argument('[uid]', 'only this version (a removed version by its full uid)')
    .option(
      '-f, --fields <fields>',
      `comma-separated columns to show (${statsColumns(false)
        .map((c) => c.name)
        .join(',')})`,
    )
    .option('-l, --limit <n>', 'only the newest N runs')
    .action(async (uid: string | undefined, opts: { fields?: string; limit?: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const columns = selectColumns(statsColumns(g.humanReadable), opts.fields);
        const limit = opts.limit === undefined ? undefined : parseLimit(opts.limit);
        const rows = await statsReport(backend.catalog.reader, { uid, limit });
        print(renderRows(columns, rows, outputMode(g)));
      });
    });
}

function parseLimit(text: string): number {
  if (!/^\d+$/.test(text.trim())) throw usageError(`Invalid limit "${text}": give a whole number`);
  return Number(text);
}
