import { usageError } from './errors.ts';
import type { Version } from './types.ts';

/**
 * Benji's retention rules (`enforce`, the scheduled per-name policy): `latestN,hoursN,daysN,
 * weeksN,monthsN,yearsN`. The N newest are kept; every other version falls into the first
 * time category whose count covers it, counted in natural UTC boundaries (hours, days, Monday
 * weeks, calendar months and years back from now; 0 = the current one), and the oldest version
 * of each such bucket is kept. A version no category covers goes.
 */
export const RETENTION_CATEGORIES = ['latest', 'hours', 'days', 'weeks', 'months', 'years'] as const;
export type RetentionCategory = (typeof RETENTION_CATEGORIES)[number];
export type RetentionRules = Partial<Record<RetentionCategory, number>>;

export function parseRules(spec: string): RetentionRules {
  const bad = (why: string) => usageError(`Invalid retention rules "${spec}": ${why} (e.g. latest3,days7,weeks4,months12)`);
  const rules: RetentionRules = {};
  for (const token of spec.split(',').map((t) => t.trim())) {
    if (!token) throw bad('empty element');
    const m = /^([a-z]+)(\d+)$/.exec(token);
    if (!m) throw bad(`"${token}" is not a category followed by a count`);
    const category = m[1] as RetentionCategory;
    if (!RETENTION_CATEGORIES.includes(category)) throw bad(`unknown category "${m[1]}"`);
    if (rules[category] !== undefined) throw bad(`${category} appears twice`);
    const count = Number(m[2]);
    if (count <= 0) throw bad(`the count of ${category} must be at least 1`);
    rules[category] = count;
  }
  return rules;
}

export const formatRules = (rules: RetentionRules): string =>
  RETENTION_CATEGORIES.filter((c) => rules[c] !== undefined)
    .map((c) => `${c}${rules[c]}`)
    .join(',');

export interface RetentionDecision {
  version: Version;
  keep: boolean;
  reason: string;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

const startOfHour = (t: Date) => Math.floor(t.getTime() / HOUR_MS) * HOUR_MS;
const startOfDay = (t: Date) => Math.floor(t.getTime() / DAY_MS) * DAY_MS;
/** Monday 00:00 UTC of t's week (1970-01-01 was a Thursday: shift by 3 days). */
const startOfWeek = (t: Date) => Math.floor((t.getTime() + 3 * DAY_MS) / (7 * DAY_MS)) * 7 * DAY_MS - 3 * DAY_MS;
const monthIndex = (t: Date) => t.getUTCFullYear() * 12 + t.getUTCMonth();

/** How many hours/days/weeks/months/years back t lies from now, in natural boundaries. */
function timeCount(category: Exclude<RetentionCategory, 'latest'>, t: Date, now: Date): number {
  switch (category) {
    case 'hours':
      return (startOfHour(now) - startOfHour(t)) / HOUR_MS;
    case 'days':
      return (startOfDay(now) - startOfDay(t)) / DAY_MS;
    case 'weeks':
      return Math.round((startOfWeek(now) - startOfWeek(t)) / (7 * DAY_MS));
    case 'months':
      return monthIndex(now) - monthIndex(t);
    case 'years':
      return now.getUTCFullYear() - t.getUTCFullYear();
  }
}

/**
 * Which versions of one backup name the rules keep and which they remove, with the reason.
 * Only valid committed, unprotected versions take part (as Benji, protected ones neither count
 * nor go); invalid ones are left alone rather than risk keeping a broken version in place of a
 * good one. Versions dated after `now` are kept (clock skew: err on the safe side).
 */
export function planRetention(versions: Version[], rules: RetentionRules, now: Date): RetentionDecision[] {
  const decisions: RetentionDecision[] = [];
  const candidates: Version[] = [];
  for (const v of versions) {
    if (v.status !== 'committed') continue;
    if (v.protected) decisions.push({ version: v, keep: true, reason: 'protected' });
    else if (!v.valid) decisions.push({ version: v, keep: true, reason: 'invalid: left alone' });
    else candidates.push(v);
  }
  // Youngest first, so the last of each bucket is its oldest.
  candidates.sort((a, b) => b.date.localeCompare(a.date) || a.uid.localeCompare(b.uid));
  const latest = rules.latest ?? 0;
  for (const v of candidates.slice(0, latest)) decisions.push({ version: v, keep: true, reason: `latest${latest}` });

  const categories = RETENTION_CATEGORIES.filter((c): c is Exclude<RetentionCategory, 'latest'> => c !== 'latest' && rules[c] !== undefined);
  const buckets = new Map<string, Version[]>();
  for (const v of candidates.slice(latest)) {
    const date = new Date(v.date);
    if (date.getTime() > now.getTime()) {
      decisions.push({ version: v, keep: true, reason: 'dated in the future' });
      continue;
    }
    const category = categories.find((c) => timeCount(c, date, now) <= rules[c]!);
    if (!category) {
      decisions.push({ version: v, keep: false, reason: 'older than every rule' });
      continue;
    }
    const key = `${category}|${timeCount(category, date, now)}`;
    buckets.set(key, [...(buckets.get(key) ?? []), v]);
  }
  for (const [key, members] of buckets) {
    const [category, count] = key.split('|');
    const bucket = `${category} bucket ${count}`;
    members.forEach((v, i) => {
      const oldest = i === members.length - 1;
      decisions.push({ version: v, keep: oldest, reason: oldest ? `oldest in ${bucket}` : `a newer one in ${bucket}` });
    });
  }
  return decisions.sort((a, b) => a.version.date.localeCompare(b.version.date) || a.version.uid.localeCompare(b.version.uid));
}

/**
 * A per-name policy (config `[retention]`, deployed to the retention function): backup name →
 * rules; `*` applies to names without an entry of their own.
 */
export type RetentionPolicy = Record<string, string>;

/** Validates every entry; the rules stay as text so the policy travels as JSON. */
export function parseRetentionPolicy(entries: Record<string, string>, where: string): RetentionPolicy {
  const policy: RetentionPolicy = {};
  for (const [name, spec] of Object.entries(entries)) {
    try {
      policy[name] = formatRules(parseRules(spec));
    } catch (e) {
      throw usageError(`${where} ${name}: ${(e as Error).message}`);
    }
  }
  return policy;
}

/** The rules for a backup name: its own entry (INI keys are lower-cased), else `*`, else none. */
export function rulesFor(policy: RetentionPolicy, name: string): RetentionRules | null {
  const spec = policy[name] ?? policy[name.toLowerCase()] ?? policy['*'];
  return spec === undefined ? null : parseRules(spec);
}

/** `vm1: latest3,days7; *: latest7` (the CDK context form): entries separated by `;` or newlines. */
export function parseRetentionPolicyText(text: string, where: string): RetentionPolicy {
  const entries: Record<string, string> = {};
  for (const part of text.split(/[;\n]/).map((p) => p.trim())) {
    if (!part) continue;
    const m = /^([^:=]+?)\s*[:=]\s*(.+)$/.exec(part);
    if (!m) throw usageError(`${where}: expected "name: rules", got "${part}"`);
    entries[m[1]!] = m[2]!;
  }
  return parseRetentionPolicy(entries, where);
}

/** The policy as the stack hands it to the retention function (env RETENTION_POLICY, JSON); absent → none. */
export function retentionPolicyFromJson(json: string | undefined): RetentionPolicy {
  if (json === undefined || json.trim() === '') return {};
  const parsed: unknown = JSON.parse(json);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || Object.values(parsed).some((v) => typeof v !== 'string'))
    throw usageError('RETENTION_POLICY must be a JSON object of backup name → rules');
  return parseRetentionPolicy(parsed as Record<string, string>, 'RETENTION_POLICY');
}
