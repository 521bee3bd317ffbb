import { blockIndexRules, blockOf, evolveEntry, expectedMarkOf, timeOf, type BlockIndexChange } from '../../domain/block-index.ts';

/**
 * The block-index rules (shared/domain/block-index.ts) translated into one conditional DynamoDB
 * write per change: the guard a ConditionExpression, the effect an UpdateExpression (a Delete for
 * a removal). A write whose condition fails is a change that did not apply.
 */
export interface BlockIndexWrite {
  kind: 'update' | 'delete';
  ConditionExpression: string;
  UpdateExpression?: string;
  ExpressionAttributeValues: Record<string, unknown>;
}

export function blockIndexWrite(change: BlockIndexChange): BlockIndexWrite {
  const { requires, sets } = blockIndexRules[change.kind];
  const values: Record<string, unknown> = {};
  const guard: string[] = [];
  if (requires.deleting !== undefined) {
    guard.push('deleting = :whenDeleting');
    values[':whenDeleting'] = requires.deleting;
  }
  if (requires.mark === 'none') guard.push('attribute_not_exists(unreferencedSince)');
  if (requires.mark === 'seen') {
    guard.push('attribute_exists(unreferencedSince)');
    const expected = expectedMarkOf(change);
    if (expected !== undefined) {
      guard.push('unreferencedSince = :markedAt');
      values[':markedAt'] = expected;
    }
  }
  const condition =
    requires.exists === true
      ? ['attribute_exists(pk)', ...guard].join(' AND ')
      : requires.exists === false
        ? 'attribute_not_exists(pk)'
        : guard.length
          ? `attribute_not_exists(pk) OR (${guard.join(' AND ')})`
          : '';

  if (sets.remove) return { kind: 'delete', ConditionExpression: condition, ExpressionAttributeValues: values };

  const set: string[] = [];
  const remove: string[] = [];
  const block = blockOf(change);
  if (sets.stored && block) {
    set.push('storedSize = :storedSize', 'checksum = :checksum');
    Object.assign(values, { ':storedSize': block.storedSize, ':checksum': block.checksum });
  }
  if (sets.mark === 'at') {
    set.push('unreferencedSince = :at');
    values[':at'] = timeOf(change);
  }
  if (sets.mark === 'clear') remove.push('unreferencedSince');
  if (sets.deleting !== undefined) {
    set.push('deleting = :deleting');
    values[':deleting'] = sets.deleting;
  }
  if (sets.valid !== undefined) {
    set.push('valid = :valid');
    values[':valid'] = sets.valid;
  }
  // A change that may create the entry gives a new item the rest of what the rules make of none.
  const fresh = requires.exists !== true ? evolveEntry(undefined, change) : undefined;
  if (fresh) {
    set.push('createdAt = if_not_exists(createdAt, :createdAt)');
    values[':createdAt'] = fresh.createdAt;
    if (sets.deleting === undefined) {
      set.push('deleting = if_not_exists(deleting, :newDeleting)');
      values[':newDeleting'] = fresh.deleting;
    }
    if (sets.valid === undefined) {
      set.push('valid = if_not_exists(valid, :newValid)');
      values[':newValid'] = fresh.valid;
    }
  }
  const update = [set.length ? `SET ${set.join(', ')}` : '', remove.length ? `REMOVE ${remove.join(', ')}` : ''].filter(Boolean).join(' ');
  return { kind: 'update', ConditionExpression: condition, UpdateExpression: update, ExpressionAttributeValues: values };
}
