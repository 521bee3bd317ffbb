import { usageError } from './errors.ts';

/**
 * What a backup name, snapshot name or tag may hold (lengths: the event schemas, 1–255 characters,
 * a snapshot name may be empty): no control character (newline, tab, …) and no `|` (the `-m`
 * field separator); a tag also no `,` (the `-t` list separator) and no surrounding blanks. So every
 * `-m` row is one line with a fixed number of fields. Checked where a version gets them (decide),
 * not in the event schemas: events written before these rules still replay.
 */
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f|]/;

function check(value: string, what: string, opts: { comma: boolean }): void {
  const bad = FORBIDDEN.exec(value) ?? (opts.comma ? /,/.exec(value) : null);
  if (bad)
    throw usageError(
      `The ${what} ${JSON.stringify(value.slice(0, 80))} contains ${JSON.stringify(bad[0])}: control characters and "|"${opts.comma ? ' and ","' : ''} are not allowed`,
    );
  if (opts.comma && value.trim() !== value) throw usageError(`The ${what} ${JSON.stringify(value.slice(0, 80))} has leading or trailing blanks`);
}

export const checkBackupName = (name: string) => check(name, 'backup name', { comma: false });
export const checkSnapshotName = (name: string) => check(name, 'snapshot name', { comma: false });
export const checkTags = (tags: readonly string[]) => {
  for (const t of tags) check(t, 'tag', { comma: true });
};

/** `-m` output of values written before these rules: `\`, `|` and control characters escaped, so a row stays one row. */
export function escapeMachineField(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\\|\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (c === '\\') return '\\\\';
    if (c === '|') return '\\|';
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}
