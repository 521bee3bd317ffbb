import type { SQLInputValue } from 'node:sqlite';
import { blockIndexRules, blockOf, evolveEntry, expectedMarkOf, timeOf, type BlockIndexChange, type ChangeKind, type Rule } from '../../domain/block-index.ts';

/**
 * The block-index rules (shared/domain/block-index.ts) translated into SQL: per change kind one
 * statement on the `blocks` table, its guard a WHERE, its effect a SET (an INSERT for the kinds that
 * may create an entry). A statement that changes a row is a change that applied.
 */
export interface BlockIndexStatement {
  sql: string;
  params: (change: BlockIndexChange) => Record<string, SQLInputValue>;
}

const COLUMNS = 'id, stored_size, checksum, created_at, unreferenced_since, deleting, valid';

function translate({ requires, sets }: Rule): BlockIndexStatement {
  const guard: string[] = [];
  if (requires.deleting !== undefined) guard.push(`deleting = ${Number(requires.deleting)}`);
  if (requires.mark === 'none') guard.push('unreferenced_since IS NULL');
  if (requires.mark === 'seen') guard.push('unreferenced_since IS NOT NULL AND (:markedAt IS NULL OR unreferenced_since = :markedAt)');
  const set: string[] = [];
  if (sets.stored) set.push('stored_size = :storedSize', 'checksum = :checksum');
  if (sets.mark === 'at') set.push('unreferenced_since = :at');
  if (sets.mark === 'clear') set.push('unreferenced_since = NULL');
  if (sets.deleting !== undefined) set.push(`deleting = ${Number(sets.deleting)}`);
  if (sets.valid !== undefined) set.push(`valid = ${Number(sets.valid)}`);

  const where = ['id = :id', ...guard].join(' AND ');
  let sql: string;
  const mayCreate = requires.exists !== true && !sets.remove;
  if (sets.remove) sql = `DELETE FROM blocks WHERE ${where}`;
  else if (!mayCreate) sql = `UPDATE blocks SET ${set.join(', ')} WHERE ${where}`;
  else {
    const insert = `INSERT INTO blocks (${COLUMNS}) VALUES (:id, :newSize, :newChecksum, :newCreatedAt, :newMark, :newDeleting, :newValid)`;
    if (requires.exists === false) sql = `${insert} ON CONFLICT (id) DO NOTHING`;
    else sql = `${insert} ON CONFLICT (id) DO UPDATE SET ${set.join(', ')}${guard.length ? ` WHERE ${guard.join(' AND ')}` : ''}`;
  }

  const used = new Set([...sql.matchAll(/:(\w+)/g)].map((m) => m[1]!));
  const params = (change: BlockIndexChange): Record<string, SQLInputValue> => {
    const block = blockOf(change);
    // A new entry is what the rules make of none.
    const fresh = mayCreate ? evolveEntry(undefined, change) : undefined;
    const all: Record<string, SQLInputValue> = {
      id: change.id,
      markedAt: expectedMarkOf(change) ?? null,
      storedSize: block?.storedSize ?? null,
      checksum: block?.checksum ?? null,
      at: timeOf(change) ?? null,
      newSize: fresh?.storedSize ?? null,
      newChecksum: fresh?.checksum ?? null,
      newCreatedAt: fresh?.createdAt ?? null,
      newMark: fresh?.unreferencedSince ?? null,
      newDeleting: fresh === undefined ? null : Number(fresh.deleting),
      newValid: fresh === undefined ? null : Number(fresh.valid),
    };
    return Object.fromEntries([...used].map((n) => [n, all[n]!]));
  };
  return { sql, params };
}

export const blockIndexStatements = Object.fromEntries(Object.entries(blockIndexRules).map(([kind, rule]) => [kind, translate(rule)])) as Record<
  ChangeKind,
  BlockIndexStatement
>;
