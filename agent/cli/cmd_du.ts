import type { Command } from 'commander';
import { duReport, type DuRow } from '../../shared/app/reports.ts';
import type { Usage } from '../../shared/domain/reports.ts';
import { selectColumns } from '../ui/columns.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

const figures: [string, keyof Usage][] = [
  ['Real', 'real'],
  ['Null', 'null'],
  ['Dedup Own', 'dedupOwn'],
  ['Dedup Others', 'dedupOthers'],
  ['Individual', 'individual'],
  ['Est. Space', 'estSpace'],
  ['Est. Space freed', 'estSpaceFreed'],
];

/**
 * backy2's seven `du` columns first (plaintext bytes, its order), then the same after compression
 * ("Stored …": bytes of the stored objects), then uid and name. Est. Space is a fractional share,
 * printed rounded to whole bytes.
 */
const duColumns = (human: boolean): Column<DuRow>[] => {
  const bytes = (n: number) => (human ? humanBytes(Math.round(n)) : Math.round(n));
  return [
    ...figures.map(([name, key]): Column<DuRow> => ({ name, align: 'r', value: (r) => bytes(r.plain[key]) })),
    ...figures
      .filter(([, key]) => key !== 'null')
      .map(([name, key]): Column<DuRow> => ({ name: `Stored ${name}`, align: 'r', value: (r) => bytes(r.stored[key]) })),
    { name: 'uid', align: 'l', value: (r) => r.uid },
    { name: 'name', align: 'l', value: (r) => r.name },
  ];
};

const DEFAULT_FIELDS = 'Real,Null,Dedup Own,Dedup Others,Individual,Est. Space,Est. Space freed,Stored Est. Space,Stored Est. Space freed,uid,name';

export function register(program: Command): void {
  program
    .command('du')
    .description('Disk usage of version UID, or of every committed version')
    .argument('[uid]', 'only this version')
    .option(
      '-f, --fields <fields>',
      `comma-separated columns to show (${duColumns(false)
        .map((c) => c.name)
        .join(',')})`,
      DEFAULT_FIELDS,
    )
    .action(async (uid: string | undefined, opts: { fields: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const columns = selectColumns(duColumns(g.humanReadable), opts.fields);
        const rows = await duReport(backend.catalog.reader, uid);
        print(renderRows(columns, rows, outputMode(g)));
      });
    });
}
