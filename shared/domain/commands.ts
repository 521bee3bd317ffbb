import { z } from 'zod';
import { VersionImported, VersionStarted, VersionStatsSchema } from './events.ts';
import { instant, tags, uid } from './schema.ts';

/**
 * The command language of versions, defined once: the schema the api validates requests with
 * (shared/app/api.ts) and the type `decideVersion` decides (shared/domain/version.ts).
 */

/** What a version is started with: by a backup, or (with its original date) by an import. */
const VersionHeaderSchema = VersionStarted.omit({ type: true, v: true, at: true });
export type VersionHeader = z.infer<typeof VersionHeaderSchema>;

export const VersionCommandSchema = z.discriminatedUnion('type', [
  VersionHeaderSchema.extend({ type: z.literal('StartVersion') }),
  /** A version exported elsewhere: same header as StartVersion plus its original date. */
  VersionImported.omit({ type: true, v: true, at: true }).extend({ type: z.literal('ImportVersion') }),
  z.object({ type: z.literal('CommitVersion'), uid, stats: VersionStatsSchema }),
  z.object({ type: z.literal('FailVersion'), uid, reason: z.string() }),
  z.object({ type: z.literal('ResumeVersion'), uid, sizeBytes: z.number().int().nonnegative(), blockSize: z.number().int().positive(), host: z.string() }),
  z.object({ type: z.literal('RemoveVersion'), uid, force: z.boolean() }),
  z.object({ type: z.literal('ProtectVersion'), uid }),
  z.object({ type: z.literal('UnprotectVersion'), uid }),
  z.object({ type: z.literal('AddTags'), uid, tags }),
  z.object({ type: z.literal('RemoveTags'), uid, tags }),
  z.object({ type: z.literal('SetExpiry'), uid, expire: instant.nullable() }),
  z.object({
    type: z.literal('RecordScrub'),
    uid,
    verified: z.array(z.string()),
    failed: z.array(z.object({ id: z.string(), reason: z.string() })),
    complete: z.boolean(),
  }),
]);

export type VersionCommand = z.infer<typeof VersionCommandSchema>;
