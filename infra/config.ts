import { readFileSync } from 'node:fs';
import type { Node } from 'constructs';
import { parseIni } from '../shared/config/ini.ts';
import { parseRetentionPolicy, parseRetentionPolicyText, type RetentionPolicy } from '../shared/domain/retention-rules.ts';

/**
 * Deploy-time settings of the stack, read from CDK context
 * (`cdk.json` or `npx cdk deploy -c key=value`).
 */
export interface Backy2Settings {
  /** CloudFormation stack name (context `stackName`, default `Backy2`). */
  readonly stackName: string;
  /**
   * Keep the bucket, tables and log groups when the stack is deleted, and turn
   * on DynamoDB deletion protection (context `retain`, default true).
   * Test stacks set `retain=false` so they can be destroyed.
   */
  readonly retain: boolean;
  /**
   * Override every schedule with `rate(N minutes)` (context `scheduleRateMinutes`).
   * Unset in production; integration tests use 1 so a scheduled run can be watched.
   */
  readonly scheduleRateMinutes: number | undefined;
  /** Cleanup phase-2 grace period (context `cleanupGraceSeconds`, default 3600 as backy2). */
  readonly cleanupGraceSeconds: number;
  /** A backup in progress older than this is failed (context `maxBackupAgeSeconds`, default 86400). */
  readonly maxBackupAgeSeconds: number;
  /** `rm` refuses versions younger than this without --force, as backy2's disallow_rm_when_younger_than_days (context `minAgeDaysForRm`, default 6). */
  readonly minAgeDaysForRm: number;
  /** Timeout of the ingest function (context `ingestTimeoutSeconds`, default 60). */
  readonly ingestTimeoutSeconds: number;
  /** Timeout of the scrub worker (context `scrubWorkerTimeoutSeconds`, default 300). */
  readonly scrubWorkerTimeoutSeconds: number;
  /**
   * Queue visibility timeout as a multiple of its consumer's timeout (context
   * `visibilityTimeoutFactor`, default 6 as AWS recommends for SQS event
   * sources). A failed record is retried after one visibility timeout and
   * dead-lettered after 5 receives, so test stacks use 1 with short timeouts.
   */
  readonly visibilityTimeoutFactor: number;
  /**
   * Per-name retention rules applied by the retention schedule, validated at synth: context
   * `retention` (`"vm1: latest3,days7; *: latest7"`) or `retentionConfig` (a backy config file
   * whose `[retention]` section is used). Default none (only expired versions are removed).
   */
  readonly retention: RetentionPolicy;
  /**
   * Deploy onto an existing bucket instead of creating one (context `existingBucket`): the
   * disaster where the tables are gone but the bucket with its blocks and journal is intact is a
   * deploy with `-c existingBucket=NAME` and `backy2 recover`. The stack never deletes that bucket.
   */
  readonly existingBucket: string | undefined;
}

export const DEFAULT_SETTINGS: Backy2Settings = {
  stackName: 'Backy2',
  retain: true,
  scheduleRateMinutes: undefined,
  cleanupGraceSeconds: 3600,
  maxBackupAgeSeconds: 86400,
  minAgeDaysForRm: 6,
  ingestTimeoutSeconds: 60,
  scrubWorkerTimeoutSeconds: 300,
  visibilityTimeoutFactor: 6,
  retention: {},
  existingBucket: undefined,
};

function retentionPolicy(text: unknown, configFile: unknown): RetentionPolicy {
  const fail = (key: string, e: unknown) => new Error(`context ${key}: ${(e as Error).message}`);
  if (text !== undefined && text !== null && text !== '') {
    try {
      return parseRetentionPolicyText(String(text), 'retention');
    } catch (e) {
      throw fail('retention', e);
    }
  }
  if (configFile === undefined || configFile === null || configFile === '') return DEFAULT_SETTINGS.retention;
  try {
    const file = String(configFile);
    return parseRetentionPolicy(parseIni(readFileSync(file, 'utf8'), file)['retention'] ?? {}, `${file} [retention]`);
  } catch (e) {
    throw fail('retentionConfig', e);
  }
}

function bool(value: unknown, fallback: boolean, key: string): boolean {
  if (value === undefined || value === null || value === '') return fallback;
  if (typeof value === 'boolean') return value;
  const s = String(value).toLowerCase();
  if (s === 'true' || s === '1' || s === 'yes') return true;
  if (s === 'false' || s === '0' || s === 'no') return false;
  throw new Error(`context ${key}: expected true or false, got ${JSON.stringify(value)}`);
}

function int(value: unknown, fallback: number | undefined, key: string, min: number): number | undefined {
  if (value === undefined || value === null || value === '') return fallback;
  const n = typeof value === 'number' ? value : Number(String(value));
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`context ${key}: expected an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return n;
}

function bucketName(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const name = String(value);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name)) throw new Error(`context existingBucket: not a valid S3 bucket name: ${JSON.stringify(name)}`);
  return name;
}

/** Reads and validates the settings from the CDK context of `node`. */
export function readSettings(node: Node): Backy2Settings {
  const c = (k: string): unknown => node.tryGetContext(k);
  const stackName = String(c('stackName') ?? DEFAULT_SETTINGS.stackName);
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(stackName)) {
    throw new Error(`context stackName: not a valid CloudFormation stack name: ${stackName}`);
  }
  return {
    stackName,
    retain: bool(c('retain'), DEFAULT_SETTINGS.retain, 'retain'),
    scheduleRateMinutes: int(c('scheduleRateMinutes'), undefined, 'scheduleRateMinutes', 1),
    cleanupGraceSeconds: int(c('cleanupGraceSeconds'), DEFAULT_SETTINGS.cleanupGraceSeconds, 'cleanupGraceSeconds', 0)!,
    maxBackupAgeSeconds: int(c('maxBackupAgeSeconds'), DEFAULT_SETTINGS.maxBackupAgeSeconds, 'maxBackupAgeSeconds', 60)!,
    minAgeDaysForRm: int(c('minAgeDaysForRm'), DEFAULT_SETTINGS.minAgeDaysForRm, 'minAgeDaysForRm', 0)!,
    ingestTimeoutSeconds: int(c('ingestTimeoutSeconds'), DEFAULT_SETTINGS.ingestTimeoutSeconds, 'ingestTimeoutSeconds', 3)!,
    scrubWorkerTimeoutSeconds: int(c('scrubWorkerTimeoutSeconds'), DEFAULT_SETTINGS.scrubWorkerTimeoutSeconds, 'scrubWorkerTimeoutSeconds', 3)!,
    visibilityTimeoutFactor: int(c('visibilityTimeoutFactor'), DEFAULT_SETTINGS.visibilityTimeoutFactor, 'visibilityTimeoutFactor', 1)!,
    retention: retentionPolicy(c('retention'), c('retentionConfig')),
    existingBucket: bucketName(c('existingBucket')),
  };
}
