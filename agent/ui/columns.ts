import { once } from 'node:events';
import { usageError } from '../../shared/domain/errors.ts';
import { renderRows, type Align, type Column, type OutputMode } from './table.ts';

/** `-f a,b,c`: those columns in that order; an unknown name is a usage error that names it. */
export function selectColumns<Row>(columns: Column<Row>[], fields: string | undefined): Column<Row>[] {
  if (fields === undefined) return columns;
  const wanted = fields
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '');
  const unknown = wanted.filter((f) => !columns.some((c) => c.name === f));
  if (unknown.length) throw usageError(`Unknown field(s) ${unknown.join(', ')}; fields are ${columns.map((c) => c.name).join(',')}`);
  if (!wanted.length) throw usageError(`No fields given; fields are ${columns.map((c) => c.name).join(',')}`);
  return wanted.map((f) => columns.find((c) => c.name === f)!);
}

/**
 * renderRows for output too long to hold: rows arrive in batches and each batch is printed
 * as it comes. The table form needs every column's width up front (`widths`, in characters);
 * the header is printed once; --json still prints one JSON array.
 */
export async function renderRowStream<Row>(
  columns: Column<Row>[],
  batches: AsyncIterable<Row[]>,
  mode: OutputMode,
  widths: (column: Column<Row>) => number,
  write: (text: string) => void | Promise<void>,
): Promise<void> {
  let first = true;
  if (mode.json) {
    await write('[');
    for await (const rows of batches) {
      if (!rows.length) continue;
      await write((first ? '\n  ' : ',\n  ') + rows.map((r) => JSON.stringify(Object.fromEntries(columns.map((c) => [c.name, c.value(r)])))).join(',\n  '));
      first = false;
    }
    await write(first ? ']\n' : '\n]\n');
    return;
  }
  // Cells padded to the fixed width make every batch's table line up with the first one's header.
  const fixed = mode.machine
    ? columns
    : columns.map((c) => {
        const width = Math.max(widths(c), c.name.length);
        return { ...c, value: (r: Row) => pad(String(c.value(r)), width, c.align) };
      });
  for await (const rows of batches) {
    await write(renderRows(fixed, rows, { ...mode, skipHeader: mode.skipHeader || !first }));
    first = false;
  }
  if (first && !mode.skipHeader) await write(renderRows(fixed, [], mode));
}

/**
 * A writer for long output on stdout: waits for the reader (memory stays bounded however slow
 * it is), and throws ReaderGone once the reader has gone (`| head`), so the producer can stop quietly.
 */
export function stdoutWriter(): (text: string) => Promise<void> {
  let gone = false;
  const out = process.stdout;
  out.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    gone = true;
  });
  return async (text) => {
    if (gone) throw new ReaderGone();
    try {
      if (!out.write(text)) await once(out, 'drain');
    } catch (e) {
      if (!gone) throw e;
    }
    if (gone) throw new ReaderGone();
  };
}

/** Thrown by stdoutWriter's write when nobody reads stdout any more. */
export class ReaderGone extends Error {}

function pad(text: string, width: number, align: Align): string {
  const gap = Math.max(0, width - text.length);
  if (align === 'r') return ' '.repeat(gap) + text;
  if (align === 'c') return ' '.repeat(Math.floor(gap / 2)) + text + ' '.repeat(Math.ceil(gap / 2));
  return text + ' '.repeat(gap);
}
