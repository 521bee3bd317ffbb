import { z } from 'zod';
import { parseIni, type IniSections } from './ini.ts';
import { usageError } from '../domain/errors.ts';
import { parseDuration, type Scheduler } from '../domain/schedules.ts';
import { parseRetentionPolicy, type RetentionPolicy } from '../domain/retention-rules.ts';

/**
 * backy2's config keys where they apply, validated with a schema so a malformed config
 * is one clear line naming the key. `[aws]` selects the serverless backend.
 */
/** An integer key that may be absent (undefined), for keys read from more than one section. */
const optionalIntKey = (name: string, min: number) =>
  z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined || s.trim() === '') return undefined;
      const n = Number(s.trim());
      if (!Number.isInteger(n) || n < min) {
        ctx.addIssue({ code: 'custom', message: `${name} must be an integer >= ${min}, got "${s}"` });
        return z.NEVER;
      }
      return n;
    });

const intKey = (name: string, min: number, def: number) => optionalIntKey(name, min).transform((n) => n ?? def);

const DefaultsSchema = z.object({
  block_size: intKey('block_size', 4096, 4 * 1024 * 1024).refine((n) => n % 4096 === 0 && n <= 64 * 1024 * 1024, {
    message: 'block_size must be a multiple of 4096 and at most 64 MiB',
  }),
  encryption_key: z.string().optional(),
  /** Key rotation: older keys (comma-separated hex), read-only until `rekey` moved their blocks. */
  old_encryption_keys: z.string().optional(),
  disallow_rm_when_younger_than_days: intKey('disallow_rm_when_younger_than_days', 0, 6),
  simultaneous_reads: optionalIntKey('simultaneous_reads', 1),
  simultaneous_writes: optionalIntKey('simultaneous_writes', 1),
  lock_dir: z.string().optional(),
  cleanup_grace_seconds: intKey('cleanup_grace_seconds', 0, 3600),
  max_backup_age_seconds: intKey('max_backup_age_seconds', 60, 86400),
});

const MetaSchema = z.object({
  engine: z
    .string()
    .regex(/^sqlite:\/\/\/\/?.+/, 'engine must look like sqlite:////absolute/path.sqlite')
    .optional(),
});

const DataSchema = z.object({
  type: z.enum(['file', 'backy2.data_backends.file'], { message: 'type must be "file" (or backy2.data_backends.file)' }).optional(),
  path: z.string().optional(),
  // backy2's shipped config sets the parallelism here; [DEFAULTS] wins when both do.
  simultaneous_reads: optionalIntKey('simultaneous_reads', 1),
  simultaneous_writes: optionalIntKey('simultaneous_writes', 1),
});

const AwsSchema = z.object({
  stack_name: z.string().min(1, 'stack_name must not be empty'),
  region: z.string().optional(),
  endpoint_url: z.string().url('endpoint_url must be a URL').optional(),
  profile: z.string().optional(),
});

/** `interval`/`sla` as backy2: N followed by s, m, h or d. */
const durationKey = (name: string, min: number) =>
  z
    .string()
    .optional()
    .transform((s, ctx) => {
      const seconds = s === undefined ? null : parseDuration(s);
      if (seconds === null || seconds < min) {
        const shape = `N followed by s, m, h or d (e.g. 6h)${min > 0 ? ', more than 0' : ''}`;
        ctx.addIssue({ code: 'custom', message: s === undefined ? `${name} is missing: ${shape}` : `${name} must be ${shape}, got "${s}"` });
        return z.NEVER;
      }
      return seconds;
    });

const SchedulerSchema = z.object({
  interval: durationKey('interval', 1),
  keep: optionalIntKey('keep', 0).refine((n) => n !== undefined, { message: 'keep is missing: how many versions to keep (an integer >= 0)' }),
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
  const pick = <T extends z.ZodType>(schema: T, name: string): z.infer<T> => {
    const result = schema.safeParse(sections[name] ?? {});
    if (!result.success) {
      const issue = result.error.issues[0]!;
      const key = issue.path.join('.');
      throw usageError(`Malformed config ${source}: [${name}] ${key ? key + ': ' : ''}${issue.message}`);
    }
    return result.data;
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
