import * as v from 'valibot';
import { Backy2Error, ExitCode } from '../domain/errors.ts';
import type { Policy } from '../domain/version.ts';
import { BlocksRecorded, StoredBlockSchema } from '../domain/events.ts';
import { VersionCommandSchema } from '../domain/commands.ts';
import { boundedArray, check, label, positiveInt, uid, variant } from '../domain/schema.ts';
import type { Version } from '../domain/types.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { executeVersionCommand } from './execute.ts';
import { leaseExpiry, MAX_LEASE_SECONDS } from '../domain/cleanup.ts';

/**
 * The synchronous command API (cloud: the `api` function, invoked with IAM auth). Requests are
 * validated here, at the boundary; domain refusals travel back as { ok: false, exitCode, message }
 * so the agent prints the same error and exits with the same code as in embedded mode.
 */
export const ApiRequestSchema = variant('kind', [
  // `record`: the last block-map chunk of the version, projected before its CommitVersion is decided.
  v.object({ kind: v.literal('command'), command: VersionCommandSchema, record: v.optional(BlocksRecorded) }),
  v.object({ kind: v.literal('touch'), blocks: boundedArray(StoredBlockSchema, 1000) }),
  v.object({ kind: v.literal('lease'), uid, holder: label, seconds: v.pipe(positiveInt(), v.maxValue(MAX_LEASE_SECONDS)) }),
  v.object({ kind: v.literal('release'), uid, holder: label }),
]);

/** `spentMs`: where a commit that carried a chunk record spent its time (the agent's debug log shows it). */
export type ApiResponse =
  | { ok: true; version?: Version; touched?: Record<string, string>; spentMs?: { record: number; commit: number } }
  | { ok: false; exitCode: number; message: string };

/** The agent's api cannot force: a compromised host must not remove young versions (DESIGN: security model). */
export type ApiRole = 'agent' | 'admin';

/**
 * `recorder` projects a chunk record carried by a commit, as the ingest function does (the agent
 * journaled it before sending it).
 */
export async function handleApiRequest(
  raw: unknown,
  store: MetadataStore,
  policy: Policy,
  role: ApiRole = 'admin',
  recorder: Pick<MetadataStore, 'recordChunk'> = store,
): Promise<ApiResponse> {
  const checked = check(ApiRequestSchema, raw);
  if (!checked.success) return { ok: false, exitCode: ExitCode.usage, message: `Invalid request: ${checked.issue.path.join('.')} ${checked.issue.message}` };
  const parsed = { data: checked.output };
  try {
    if (parsed.data.kind === 'touch') {
      const results = await store.touchBlocks(parsed.data.blocks, new Date().toISOString());
      return { ok: true, touched: Object.fromEntries(results) };
    }
    if (parsed.data.kind === 'lease') {
      // The expiry is this function's clock, the one cleanup compares it with.
      await store.putLease({ uid: parsed.data.uid, holder: parsed.data.holder, expiresAt: leaseExpiry(new Date(), parsed.data.seconds) });
      return { ok: true };
    }
    if (parsed.data.kind === 'release') {
      await store.dropLease(parsed.data.uid, parsed.data.holder);
      return { ok: true };
    }
    const { command, record } = parsed.data;
    if (role === 'agent' && command.type === 'RemoveVersion' && command.force)
      return { ok: false, exitCode: ExitCode.refused, message: `rm --force of ${command.uid} needs the admin api (AdminPolicy)` };
    if (record) {
      if (command.type !== 'CommitVersion' || record.uid !== command.uid)
        return { ok: false, exitCode: ExitCode.usage, message: `Invalid request: a block record travels only with the CommitVersion of its own version` };
      // Only a backup in progress records (a committed one's retried commit is a no-op; any other is refused below).
      const started = Date.now();
      if ((await store.getVersion(command.uid))?.status === 'pending') await recorder.recordChunk(record);
      const recorded = Date.now();
      const version = await executeVersionCommand(store, command, policy);
      return { ok: true, version, spentMs: { record: recorded - started, commit: Date.now() - recorded } };
    }
    const version = await executeVersionCommand(store, command, policy);
    return { ok: true, version };
  } catch (e) {
    if (e instanceof Backy2Error) return { ok: false, exitCode: e.exitCode, message: e.message };
    throw e;
  }
}
