/**
 * The stack's outputs kept in BACKY2_HOME, so a cloud command need not ask CloudFormation
 * (DescribeStacks, and loading its SDK package, cost 0.2-0.25 s per command). One small JSON file
 * per endpoint + region + profile + stack name; written atomically (temp file + rename). A file
 * that cannot be read or does not hold a complete set of outputs is ignored (and rewritten).
 * BACKY2_STACK_OUTPUTS_CACHE=0 turns the cache off.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What names the stack a cache file is for: a different endpoint, region, profile or name is another file. */
export interface StackTarget {
  stackName: string;
  region: string | undefined;
  endpoint: string | undefined;
  profile: string | undefined;
}

interface CacheFile {
  format: 1;
  target: StackTarget;
  savedAt: string;
  outputs: Record<string, string>;
}

export const outputsCacheEnabled = (): boolean => !/^(0|false|no|off)$/i.test(process.env['BACKY2_STACK_OUTPUTS_CACHE'] ?? '');

/** BACKY2_HOME/stack-outputs/STACK-HASH.json, the hash over the whole target. */
export function outputsCachePath(home: string, target: StackTarget): string {
  const key = JSON.stringify([target.endpoint ?? '', target.region ?? '', target.profile ?? '', target.stackName]);
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 16);
  return join(home, 'stack-outputs', `${target.stackName.replace(/[^A-Za-z0-9_-]/g, '_')}-${hash}.json`);
}

const sameTarget = (a: StackTarget, b: StackTarget): boolean =>
  a.stackName === b.stackName && (a.region ?? '') === (b.region ?? '') && (a.endpoint ?? '') === (b.endpoint ?? '') && (a.profile ?? '') === (b.profile ?? '');

/** The cached outputs when the file is there, parses, is for this target and has every `required` output; else undefined. */
export function readCachedOutputs(file: string, target: StackTarget, required: readonly string[]): Record<string, string> | undefined {
  let parsed: Partial<CacheFile>;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<CacheFile>;
  } catch {
    return undefined;
  }
  if (parsed?.format !== 1 || !parsed.target || !sameTarget(parsed.target, target)) return undefined;
  const outputs = parsed.outputs;
  if (!outputs || typeof outputs !== 'object') return undefined;
  if (!Object.values(outputs).every((v) => typeof v === 'string')) return undefined;
  if (!required.every((k) => typeof outputs[k] === 'string' && outputs[k] !== '')) return undefined;
  return outputs;
}

/** Writes the file atomically (a reader sees the old file or the new one, never half of one). */
export function writeCachedOutputs(file: string, target: StackTarget, outputs: Record<string, string>): void {
  const dir = join(file, '..');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const body: CacheFile = { format: 1, target, savedAt: new Date().toISOString(), outputs };
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(temp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
    renameSync(temp, file);
  } catch (e) {
    rmSync(temp, { force: true });
    throw e;
  }
}

export function dropCachedOutputs(file: string): void {
  rmSync(file, { force: true });
}
