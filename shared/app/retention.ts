import { isExpired } from '../domain/cleanup.ts';
import type { Policy } from '../domain/version.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { executeVersionCommand } from './execute.ts';

/** Retention: removes committed, unprotected versions whose expiry date has passed. */
export async function runRetention(store: MetadataStore, policy: Policy, now: () => Date = () => new Date()): Promise<string[]> {
  const removed: string[] = [];
  for (const v of await store.listVersions()) {
    if (!isExpired(v, now())) continue;
    await executeVersionCommand(store, { type: 'RemoveVersion', uid: v.uid, force: true }, policy, now);
    removed.push(v.uid);
  }
  return removed;
}
