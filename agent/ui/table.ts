/**
 * backy2's PrettyTable-style output, its `-m` machine form (`|`-separated, header unless -s),
 * and `--json`.
 */
import { escapeMachineField } from '../../shared/domain/names.ts';

export type Align = 'l' | 'r' | 'c';
export interface Column<Row> {
  name: string;
  align: Align;
  value: (row: Row) => string | number;
}

export interface OutputMode {
  machine: boolean;
  skipHeader: boolean;
  json: boolean;
}

export function renderRows<Row>(columns: Column<Row>[], rows: Row[], mode: OutputMode): string {
  if (mode.json) {
    return (
      JSON.stringify(
        rows.map((r) => Object.fromEntries(columns.map((c) => [c.name, c.value(r)]))),
        null,
        2,
      ) + '\n'
    );
  }
  // A value from before the name rules (shared/domain/names.ts) must not break a row in two.
  const cells = rows.map((r) => columns.map((c) => escapeMachineField(String(c.value(r)))));
  if (mode.machine) {
    const lines = mode.skipHeader ? [] : [columns.map((c) => c.name).join('|')];
    return [...lines, ...cells.map((row) => row.join('|'))].map((l) => l + '\n').join('');
  }
  const widths = columns.map((c, i) => Math.max(c.name.length, ...cells.map((row) => row[i]!.length)));
  const pad = (text: string, width: number, align: Align) => {
    const gap = width - text.length;
    if (align === 'r') return ' '.repeat(gap) + text;
    if (align === 'c') return ' '.repeat(Math.floor(gap / 2)) + text + ' '.repeat(Math.ceil(gap / 2));
    return text + ' '.repeat(gap);
  };
  const line = (values: string[], aligns: Align[]) => '| ' + values.map((v, i) => pad(v, widths[i]!, aligns[i]!)).join(' | ') + ' |\n';
  const header = mode.skipHeader
    ? ''
    : line(
        columns.map((c) => c.name),
        columns.map(() => 'c'),
      );
  return (
    header +
    cells
      .map((row) =>
        line(
          row,
          columns.map((c) => c.align),
        ),
      )
      .join('')
  );
}

/** -r: byte counts in base 1024, as backy2. */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}
