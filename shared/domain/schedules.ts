import { usageError } from './errors.ts';
import type { Version } from './types.ts';
import { autoTags } from './version.ts';

/**
 * backy2's schedulers: a config section such as `[daily] interval: 1d, keep: 8, sla: 6h`.
 * A version counts for scheduler X when it is committed, valid and tagged `b_X` (what backup
 * tags automatically) or `X` (what backy2's `due` looked for).
 */
export interface Scheduler {
  name: string;
  intervalSeconds: number;
  keep: number;
  slaSeconds: number;
}

/** backy2's `-s` default for due and sla. */
export const DEFAULT_SCHEDULER_NAMES = ['daily', 'weekly', 'monthly'];

/** Used for daily/weekly/monthly when the config has no such section: backy2's shipped etc/backy.cfg. */
export const BUILTIN_SCHEDULERS: Readonly<Record<string, Scheduler>> = {
  daily: { name: 'daily', intervalSeconds: 86_400, keep: 8, slaSeconds: 6 * 3600 },
  weekly: { name: 'weekly', intervalSeconds: 7 * 86_400, keep: 5, slaSeconds: 12 * 3600 },
  monthly: { name: 'monthly', intervalSeconds: 30 * 86_400, keep: 3, slaSeconds: 3 * 86_400 },
};

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `N s/m/h/d` as backy2 (`convert_to_timedelta`), in seconds; null when malformed. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*([smhd])$/.exec(text.trim());
  return m ? Number(m[1]) * UNIT_SECONDS[m[2]!]! : null;
}

/** The schedulers named by `-s` (default daily,weekly,monthly): configured sections first, then the built-ins. */
export function resolveSchedulers(names: string | undefined, configured: Scheduler[]): Scheduler[] {
  const wanted =
    names === undefined
      ? DEFAULT_SCHEDULER_NAMES
      : names
          .split(',')
          .map((n) => n.trim())
          .filter((n) => n !== '');
  if (wanted.length === 0) throw usageError('No scheduler named: give -s daily,weekly,… or leave -s out');
  return [...new Set(wanted)].map((name) => {
    const found = configured.find((s) => s.name === name) ?? BUILTIN_SCHEDULERS[name];
    if (!found) throw usageError(`Unknown scheduler "${name}": the config has no [${name}] section with interval, keep and sla`);
    return found;
  });
}

export const countsFor = (v: Version, scheduler: Scheduler) => v.tags.includes(`b_${scheduler.name}`) || v.tags.includes(scheduler.name);

/** The valid committed versions of `name` that count for the scheduler, oldest first. */
export function versionsFor(name: string, scheduler: Scheduler, versions: Version[]): Version[] {
  return versions.filter((v) => v.name === name && v.status === 'committed' && v.valid && countsFor(v, scheduler)).sort((a, b) => a.date.localeCompare(b.date));
}

const ms = (seconds: number) => seconds * 1000;
export const EPOCH = new Date(0);

/**
 * Since when a backup of `name` is due for the scheduler, or null when none is: keep 0 never;
 * no counting version → since 1970-01-01; else due once now > last + interval − sla.
 */
export function dueSince(name: string, scheduler: Scheduler, versions: Version[], now: Date): Date | null {
  if (scheduler.keep === 0) return null;
  const counted = versionsFor(name, scheduler, versions);
  if (counted.length === 0) return EPOCH;
  const due = Date.parse(counted[counted.length - 1]!.date) + ms(scheduler.intervalSeconds - scheduler.slaSeconds);
  return now.getTime() > due ? new Date(due) : null;
}

export interface DueBackup {
  name: string;
  schedulers: string[];
  /** The expiry a backup made now should get: the longest keep among the due schedulers. */
  expireDate: Date;
  dueSince: Date;
}

/** `due`: for each name, the schedulers a backup is due for; sorted by due_since (then name). */
export function planDue(names: string[], schedulers: Scheduler[], versions: Version[], now: Date): DueBackup[] {
  const rows: DueBackup[] = [];
  for (const name of names) {
    const due = schedulers.map((s) => ({ s, since: dueSince(name, s, versions, now) })).filter((d) => d.since !== null);
    if (due.length === 0) continue;
    rows.push({
      name,
      schedulers: due.map((d) => d.s.name),
      expireDate: new Date(Math.max(now.getTime(), ...due.map((d) => now.getTime() + ms((d.s.keep + 1) * d.s.intervalSeconds)))),
      dueSince: new Date(Math.min(...due.map((d) => d.since!.getTime()))),
    });
  }
  return rows.sort((a, b) => a.dueSince.getTime() - b.dueSince.getTime() || a.name.localeCompare(b.name));
}

const fmt = (t: number) => new Date(t).toISOString().slice(0, 19).replace('T', ' ');

/** backy2's `sla` checks for one name and scheduler; each breach is one line of text. */
export function slaBreaches(name: string, scheduler: Scheduler, versions: Version[], now: Date): string[] {
  const counted = versionsFor(name, scheduler, versions);
  const { name: s, keep } = scheduler;
  const interval = ms(scheduler.intervalSeconds);
  const sla = ms(scheduler.slaSeconds);
  const breaches: string[] = [];
  if (counted.length < keep) breaches.push(`${s}: Too few backups. Found ${counted.length}, should be ${keep}.`);
  // Two more are allowed while old ones wait for removal.
  if (counted.length > keep + 2) breaches.push(`${s}: Too many backups. Found ${counted.length}, should be ${keep}.`);
  const newest = counted[counted.length - 1];
  if (newest && Date.parse(newest.date) + interval + sla < now.getTime()) {
    const d = Date.parse(newest.date);
    breaches.push(`${s}: Latest backup is too old. Version ${newest.uid} has date ${fmt(d)}, new backup due since ${fmt(d + interval + sla)}.`);
  }
  for (let i = 1; i < counted.length; i++) {
    const previous = Date.parse(counted[i - 1]!.date);
    const d = Date.parse(counted[i]!.date);
    if (d < previous + interval - sla || d > previous + interval + sla)
      breaches.push(
        `${s}: Version ${counted[i]!.uid} is not in SLA range. It was created at ${fmt(d)} and should be between ${fmt(previous + interval - sla)} and ${fmt(previous + interval + sla)}.`,
      );
  }
  // One more day of slack for lazy removal, as backy2.
  const oldestAllowed = now.getTime() - keep * interval - sla - ms(86_400);
  const oldest = counted[0];
  if (oldest && Date.parse(oldest.date) < oldestAllowed)
    breaches.push(
      `${s}: Backup too old. Found version_uid ${oldest.uid} with backup date ${fmt(Date.parse(oldest.date))}. Oldest allowed date is ${fmt(oldestAllowed)}.`,
    );
  return breaches;
}

/**
 * The tags a backup without `-t` gets. With scheduler sections in the config: `b_X` for each
 * configured scheduler X that `due` finds due for the name. Without: backy2's own rule
 * (b_daily after a day, b_weekly after 7 days, b_monthly after a calendar month).
 */
export function scheduleTags(name: string, versions: Version[], now: Date, configured: Scheduler[]): string[] {
  if (configured.length === 0) return autoTags(name, versions, now);
  return configured.filter((s) => dueSince(name, s, versions, now) !== null).map((s) => `b_${s.name}`);
}
