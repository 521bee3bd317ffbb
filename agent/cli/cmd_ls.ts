import type { Command } from 'commander';
import { formatDateTime, formatExpire } from '../../shared/domain/dates.ts';
import type { Version } from '../../shared/domain/types.ts';
import { usageError } from '../../shared/domain/errors.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend, type Globals } from './context.ts';

// Numbers, not strings: in --json a script's `if (v.valid)` must be false for an invalid version ("0" is truthy).
const b = (x: boolean) => (x ? 1 : 0);

/** The columns of backy2's `ls`, in its order. */
export const versionColumns = (human: boolean): Column<Version>[] => [
  { name: 'date', align: 'l', value: (v) => formatDateTime(v.date) },
  { name: 'name', align: 'l', value: (v) => v.name },
  { name: 'snapshot_name', align: 'l', value: (v) => v.snapshotName },
  { name: 'size', align: 'r', value: (v) => v.blockCount },
  { name: 'size_bytes', align: 'r', value: (v) => (human ? humanBytes(v.sizeBytes) : v.sizeBytes) },
  { name: 'uid', align: 'l', value: (v) => v.uid },
  { name: 'valid', align: 'c', value: (v) => b(v.status === 'committed' && v.valid) },
  { name: 'protected', align: 'c', value: (v) => b(v.protected) },
  { name: 'tags', align: 'l', value: (v) => v.tags.join(',') },
  { name: 'expire', align: 'l', value: (v) => formatExpire(v.expire) },
];

/**
 * What a command that changes one version prints for scripts: with --json the version as `ls --json`
 * shows it (one object), with -m its `ls -m` row; for a person, nothing (the log line says it).
 */
export function printChangedVersion(g: Globals, version: Version): void {
  const columns = versionColumns(g.humanReadable);
  if (g.json) print(JSON.stringify(Object.fromEntries(columns.map((c) => [c.name, c.value(version)]))) + '\n');
  else if (g.machineOutput) print(renderRows(columns, [version], outputMode(g)));
}

export function register(program: Command): void {
  program
    .command('ls')
    .description('List versions')
    .argument('[name]', 'only versions of this backup name')
    .option('-s, --snapshot-name <name>', 'only versions with this snapshot name')
    .option('-t, --tag <tag>', 'only versions with this tag')
    .option('-e, --expired', 'only expired versions')
    .option('-f, --fields <fields>', 'comma-separated columns to show')
    .action(async (name: string | undefined, opts: { snapshotName?: string; tag?: string; expired?: boolean; fields?: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const now = Date.now();
        const versions = (await backend.catalog.reader.listVersions())
          .filter((v) => v.status !== 'removed')
          .filter((v) => name === undefined || v.name === name)
          .filter((v) => opts.snapshotName === undefined || v.snapshotName === opts.snapshotName)
          .filter((v) => opts.tag === undefined || v.tags.includes(opts.tag))
          .filter((v) => !opts.expired || (v.expire !== null && Date.parse(v.expire) < now))
          .sort((a, b) => a.name.localeCompare(b.name) || a.date.localeCompare(b.date));
        let columns = versionColumns(g.humanReadable);
        if (opts.fields) {
          const wanted = opts.fields.split(',').map((f) => f.trim());
          const unknown = wanted.filter((f) => !columns.some((c) => c.name === f));
          if (unknown.length) throw usageError(`Unknown field(s) ${unknown.join(', ')}; fields are ${columns.map((c) => c.name).join(',')}`);
          columns = wanted.map((f) => columns.find((c) => c.name === f)!);
        }
        print(renderRows(columns, versions, outputMode(g)));
      });
    });
}
