import * as v from 'valibot';
import { parseIni, type IniSections } from './ini.ts';
import { usageError } from '../domain/errors.ts';
import { check } from '../domain/schema.ts';
import { parseDuration, type Scheduler } from '../domain/schedules.ts';
import { parseRetentionPolicy, type RetentionPolicy } from '../domain/retention-rules.ts';

/**
 * backy2's config keys where they apply, validated with a schema so a malformed config
 * is one clear line naming the key. `[aws]` selects the serverless backend.
 */
/**
 * A string key whose pipe also runs when the key is absent (as undefined): valibot skips an absent
 * optional key unless it has a default, and this default is undefined.
 */
const absentOrString = () => v.optional(v.string(), () => undefined);

/** An integer key that may be absent (undefined), for keys read from more than one section. */
const optionalIntKey = (name: string, min: number) =>
  v.pipe(
    absentOrString(),
    v.rawTransform(({ dataset: { value: s }, addIssue, NEVER }) => {
      if (s === undefined || s.trim() === '') return undefined;
      const n = Number(s.trim());
      if (!Number.isInteger(n) || n < min) {
        addIssue({ message: `${name} must be an integer >= ${min}, got "${s}"` });
        return NEVER;
      }
      return n;
    }),
  );

const intKey = (name: string, min: number, def: number) =>
  v.pipe(
    optionalIntKey(name, min),
    v.transform((n) => n ?? def),
  );

const DefaultsSchema = v.object({
  block_size: v.pipe(
    intKey('block_size', 4096, 4 * 1024 * 1024),
    v.check((n) => n % 4096 === 0 && n <= 64 * 1024 * 1024, 'block_size must be a multiple of 4096 and at most 64 MiB'),
  ),
  encryption_key: v.optional(v.string()),
  /** Key rotation: older keys (comma-separated hex), read-only until `rekey` moved their blocks. */
  old_encryption_keys: v.optional(v.string()),
  disallow_rm_when_younger_than_days: intKey('disallow_rm_when_younger_than_days', 0, 6),
  simultaneous_reads: optionalIntKey('simultaneous_reads', 1),
  simultaneous_writes: optionalIntKey('simultaneous_writes', 1),
  lock_dir: v.optional(v.string()),
  cleanup_grace_seconds: intKey('cleanup_grace_seconds', 0, 3600),
  max_backup_age_seconds: intKey('max_backup_age_seconds', 60, 86400),
});

const MetaSchema = v.object({
  engine: v.optional(v.pipe(v.string(), v.regex(/^sqlite:\/\/\/\/?.+/, 'engine must look like sqlite:////absolute/path.sqlite'))),
});

const DataSchema = v.object({
  type: v.optional(v.picklist(['file', 'backy2.data_backends.file'], 'type must be "file" (or backy2.data_backends.file)')),
  path: v.optional(v.string()),
  // backy2's shipped config sets the parallelism here; [DEFAULTS] wins when both do.
  simultaneous_reads: optionalIntKey('simultaneous_reads', 1),
  simultaneous_writes: optionalIntKey('simultaneous_writes', 1),
});

const AwsSchema = v.object({
  stack_name: v.pipe(v.string(), v.minLength(1, 'stack_name must not be empty')),
  region: v.optional(v.string()),
  // As WHATWG URL parsing accepts it, surrounding blanks trimmed.
  endpoint_url: v.optional(
    v.pipe(
      v.string(),
      v.check((s) => URL.canParse(s.trim()), 'endpoint_url must be a URL'),
      v.transform((s) => s.trim().replace(/[\t\n\r]/g, '')),
    ),
  ),
  profile: v.optional(v.string()),
});

/** `interval`/`sla` as backy2: N followed by s, m, h or d. */
const durationKey = (name: string, min: number) =>
  v.pipe(
    absentOrString(),
    v.rawTransform(({ dataset: { value: s }, addIssue, NEVER }) => {
      const seconds = s === undefined ? null : parseDuration(s);
      if (seconds === null || seconds < min) {
        const shape = `N followed by s, m, h or d (e.g. 6h)${min > 0 ? ', more than 0' : ''}`;
        addIssue({ message: s === undefined ? `${name} is missing: ${shape}` : `${name} must be ${shape}, got "${s}"` });
        return NEVER;
      }
      return seconds;
    }),
  );

const SchedulerSchema = v.object({
  interval: durationKey('interval', 1),
  keep: v.pipe(
    optionalIntKey('keep', 0),
    v.check((n) => n !== undefined, 'keep is missing: how many versions to keep (an integer >= 0)'),
  ),
  sla: durationKey('sla', 0),
});

/** Sections that configure something else; any other section with interval, keep or sla is a scheduler. */
const NON_SCHEDULER_SECTIONS = new Set(['DEFAULTS', 'MetaBackend', 'DataBackend', 'aws', 'retention']);

export interface Config {
  source: string;
  blockSize: number;
  encryptionKeyHex: string | undefined;
  /** `old_encryption_keys`: keys that wrote blocks not yet rekeyed (decrypt only). */
  oldEncryptionKeysHex: string[];
  minAgeDaysForRm: number;
  simultaneousReads: number;
  simultaneousWrites: number;
  lockDir: string | undefined;
  cleanupGraceSeconds: number;
  maxBackupAgeSeconds: number;
  /** Embedded backend: SQLite file and block directory. */
  sqlitePath: string | undefined;
  dataPath: string | undefined;
  aws: { stackName: string; region?: string | undefined; endpointUrl?: string | undefined; profile?: string | undefined } | undefined;
  /** Scheduler sections (`[daily] interval: 1d, keep: 8, sla: 6h`); empty when none are configured. */
  schedulers: Scheduler[];
  /** `[retention]`: backup name (or `*`) → rules, for `enforce NAME` and the cloud retention function. */
  retention: RetentionPolicy;
}

export function parseConfig(text: string, source: string): Config {
  let sections: IniSections;
  try {
    sections = parseIni(text, source);
  } catch (e) {
    throw usageError(`Malformed config ${(e as Error).message}`);
  }
  const pick = <T extends v.GenericSchema>(schema: T, name: string): v.InferOutput<T> => {
    const result = check(schema, sections[name] ?? {});
    if (!result.success) {
      const key = result.issue.path.join('.');
      throw usageError(`Malformed config ${source}: [${name}] ${key ? key + ': ' : ''}${result.issue.message}`);
    }
    return result.output;
  };
  const defaults = pick(DefaultsSchema, 'DEFAULTS');
  const meta = pick(MetaSchema, 'MetaBackend');
  const data = pick(DataSchema, 'DataBackend');
  const aws = sections['aws'] ? pick(AwsSchema, 'aws') : undefined;
  const schedulers = Object.entries(sections)
    .filter(([name, keys]) => !NON_SCHEDULER_SECTIONS.has(name) && ('interval' in keys || 'keep' in keys || 'sla' in keys))
    .map(([name]): Scheduler => {
      const s = pick(SchedulerSchema, name);
      return { name, intervalSeconds: s.interval, keep: s.keep!, slaSeconds: s.sla };
    });
  const retention = sections['retention'] ? parseRetentionPolicy(sections['retention'], `Malformed config ${source}: [retention]`) : {};
  const sqlitePath = meta.engine?.replace(/^sqlite:\/\/\//, '');
  if (sqlitePath && !sqlitePath.startsWith('/')) throw usageError(`Malformed config ${source}: [MetaBackend] engine must name an absolute path`);
  return {
    source,
    blockSize: defaults.block_size,
    encryptionKeyHex: defaults.encryption_key,
    oldEncryptionKeysHex: (defaults.old_encryption_keys ?? '')
      .split(',')
      .map((k) => k.trim())
      .filter((k) => k !== ''),
    minAgeDaysForRm: defaults.disallow_rm_when_younger_than_days,
    simultaneousReads: defaults.simultaneous_reads ?? data.simultaneous_reads ?? 4,
    simultaneousWrites: defaults.simultaneous_writes ?? data.simultaneous_writes ?? 4,
    lockDir: defaults.lock_dir,
    cleanupGraceSeconds: defaults.cleanup_grace_seconds,
    maxBackupAgeSeconds: defaults.max_backup_age_seconds,
    sqlitePath,
    dataPath: data.path,
    aws: aws && { stackName: aws.stack_name, region: aws.region, endpointUrl: aws.endpoint_url, profile: aws.profile },
    schedulers,
    retention,
  };
}
