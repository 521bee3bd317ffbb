import * as v from 'valibot';
import { VersionImported, VersionStarted, VersionStatsSchema } from './events.ts';
import { instant, nonNegativeInt, positiveInt, tags, uid, variant } from './schema.ts';

/**
 * The command language of versions, defined once: the schema the api validates requests with
 * (shared/app/api.ts) and the type `decideVersion` decides (shared/domain/version.ts).
 */

/** What a version is started with: by a backup, or (with its original date) by an import. */
const VersionHeaderSchema = v.omit(VersionStarted, ['type', 'v', 'at']);
export type VersionHeader = v.InferOutput<typeof VersionHeaderSchema>;

export const VersionCommandSchema = variant('type', [
  v.object({ ...VersionHeaderSchema.entries, type: v.literal('StartVersion') }),
  /** A version exported elsewhere: same header as StartVersion plus its original date. */
  v.object({ ...v.omit(VersionImported, ['type', 'v', 'at']).entries, type: v.literal('ImportVersion') }),
  v.object({ type: v.literal('CommitVersion'), uid, stats: VersionStatsSchema }),
  v.object({ type: v.literal('FailVersion'), uid, reason: v.string() }),
  v.object({ type: v.literal('ResumeVersion'), uid, sizeBytes: nonNegativeInt(), blockSize: positiveInt(), host: v.string() }),
  v.object({ type: v.literal('RemoveVersion'), uid, force: v.boolean() }),
  v.object({ type: v.literal('ProtectVersion'), uid }),
  v.object({ type: v.literal('UnprotectVersion'), uid }),
  v.object({ type: v.literal('AddTags'), uid, tags }),
  v.object({ type: v.literal('RemoveTags'), uid, tags }),
  v.object({ type: v.literal('SetExpiry'), uid, expire: v.nullable(instant) }),
  v.object({
    type: v.literal('RecordScrub'),
    uid,
    verified: v.array(v.string()),
    failed: v.array(v.object({ id: v.string(), reason: v.string() })),
    complete: v.boolean(),
  }),
]);

export type VersionCommand = v.InferOutput<typeof VersionCommandSchema>;
