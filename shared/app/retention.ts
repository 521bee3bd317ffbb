import { isExpired } from '../domain/cleanup.ts';
import { Backy2Error, ExitCode } from '../domain/errors.ts';
import { planRetention, rulesFor, type RetentionDecision, type RetentionPolicy, type RetentionRules } from '../domain/retention-rules.ts';
import type { Version } from '../domain/types.ts';
import type { Policy, VersionCommand } from '../domain/version.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { executeVersionCommand } from './execute.ts';

export type RetentionAction = 'removed' | 'would remove' | 'refused' | 'already gone';

export interface RetentionOutcome {
  version: Version;
  action: RetentionAction;
  /** Why the rules let it go, or why the removal was refused. */
  reason: string;
}

/**
 * Applies retention rules to the versions of one backup name: every version the plan does not
 * keep is removed through `remove` (a RemoveVersion command, so rm's rules apply: a version that
 * became protected or is too young is refused and stays). `dryRun` removes nothing.
 * Shared by `enforce` (both backends) and the scheduled retention function.
 */
export async function enforceRetention(
  versions: Version[],
  rules: RetentionRules,
  now: Date,
  remove: (uid: string) => Promise<unknown>,
  dryRun: boolean,
): Promise<{ outcomes: RetentionOutcome[]; kept: RetentionDecision[] }> {
  const plan = planRetention(versions, rules, now);
  const outcomes: RetentionOutcome[] = [];
  for (const d of plan.filter((d) => !d.keep)) {
    if (dryRun) {
      outcomes.push({ version: d.version, action: 'would remove', reason: d.reason });
      continue;
    }
    try {
      await remove(d.version.uid);
      outcomes.push({ version: d.version, action: 'removed', reason: d.reason });
    } catch (e) {
      if (!(e instanceof Backy2Error)) throw e;
      if (e.exitCode === ExitCode.refused) outcomes.push({ version: d.version, action: 'refused', reason: e.message });
      else if (e.exitCode === ExitCode.notFound) outcomes.push({ version: d.version, action: 'already gone', reason: e.message });
      else throw e;
    }
  }
  return { outcomes, kept: plan.filter((d) => d.keep) };
}

export interface RetentionRun {
  /** Expired versions and versions the per-name policy let go. */
  removed: string[];
  /** Versions the policy would remove but rm's rules refused (e.g. too young): a later run retries. */
  refused: { uid: string; reason: string }[];
}

/**
 * The scheduled retention run: removes committed, unprotected versions whose expiry date has
 * passed (forced: an expiry date is an explicit decision), then applies the per-name policy
 * (`[retention]`) without force, so it never removes a version younger than the minimum age.
 */
export async function runRetention(
  store: MetadataStore,
  policy: Policy,
  now: () => Date = () => new Date(),
  byName: RetentionPolicy = {},
  /** How a removal is carried out (cloud: through the admin api, which journals it); default: against `store`. */
  execute: (cmd: VersionCommand) => Promise<unknown> = (cmd) => executeVersionCommand(store, cmd, policy, now),
): Promise<RetentionRun> {
  const run: RetentionRun = { removed: [], refused: [] };
  for (const v of await store.listVersions()) {
    if (!isExpired(v, now())) continue;
    await execute({ type: 'RemoveVersion', uid: v.uid, force: true });
    run.removed.push(v.uid);
  }
  if (Object.keys(byName).length === 0) return run;
  const byNameVersions = new Map<string, Version[]>();
  for (const v of await store.listVersions()) {
    if (v.status === 'removed') continue;
    byNameVersions.set(v.name, [...(byNameVersions.get(v.name) ?? []), v]);
  }
  for (const [name, versions] of byNameVersions) {
    const rules = rulesFor(byName, name);
    if (!rules) continue;
    const remove = (uid: string) => execute({ type: 'RemoveVersion', uid, force: false });
    const { outcomes } = await enforceRetention(versions, rules, now(), remove, false);
    for (const o of outcomes) {
      if (o.action === 'removed') run.removed.push(o.version.uid);
      if (o.action === 'refused') run.refused.push({ uid: o.version.uid, reason: o.reason });
    }
  }
  return run;
}
