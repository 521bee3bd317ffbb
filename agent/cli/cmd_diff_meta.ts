import type { Command } from 'commander';
import { diffBlockMaps, resolveDiffPair, type DiffRow } from '../../shared/app/reports.ts';
import type { BlockRef } from '../../shared/domain/types.ts';
import { ReaderGone, renderRowStream, selectColumns, stdoutWriter } from '../ui/columns.ts';
import type { Column } from '../ui/table.ts';
import { outputMode, withBackend } from './context.ts';

const idOf = (b: BlockRef | undefined) => (b === undefined ? '' : (b.id ?? 'sparse'));

/** backy2 printed `SAME      <idx>` per block: status, then index; the block ids on request. */
const diffColumns: Column<DiffRow>[] = [
  { name: 'status', align: 'l', value: (r) => r.status },
  { name: 'idx', align: 'r', value: (r) => r.idx },
  { name: 'left', align: 'l', value: (r) => idOf(r.left) },
  { name: 'right', align: 'l', value: (r) => idOf(r.right) },
];

export function register(program: Command): void {
  program
    .command('diff-meta')
    .description('Compare two versions block by block: SAME, DIFF, NEW LEFT, NEW RIGHT per block index')
    .argument('<uid1>', 'left version')
    .argument('<uid2>', 'right version')
    .option('-f, --fields <fields>', 'comma-separated columns to show (status,idx,left,right)', 'status,idx')
    .action(async (uid1: string, uid2: string, opts: { fields: string }, cmd: Command) => {
      await withBackend(cmd, async (backend, g) => {
        const columns = selectColumns(diffColumns, opts.fields);
        const [left, right] = await resolveDiffPair(backend.catalog.reader, uid1, uid2);
        const lastIdx = Math.max(left.blockCount, right.blockCount) - 1;
        const widths = (c: Column<DiffRow>) => ({ status: 'NEW RIGHT'.length, idx: String(Math.max(lastIdx, 0)).length, left: 64, right: 64 })[c.name] ?? 0;
        // Printed batch by batch: a 6 TiB pair is 1.6 M lines, never held in memory.
        try {
          await renderRowStream(columns, diffBlockMaps(backend.catalog.reader, left, right), outputMode(g), widths, stdoutWriter());
        } catch (e) {
          // `diff-meta A B | head`: the reader has what it wanted (backy2 ignored the broken pipe too).
          if (!(e instanceof ReaderGone)) throw e;
        }
      });
    });
}
