import { notFound } from '../domain/errors.ts';
import type { Version } from '../domain/types.ts';
import type { MetadataReader } from '../ports/catalog.ts';

/** Finds a version by full uid or by a unique prefix; removed versions are not found. */
export async function resolveVersion(reader: MetadataReader, uidOrPrefix: string): Promise<Version> {
  const wanted = uidOrPrefix.trim().toLowerCase();
  const exact = await reader.getVersion(wanted);
  if (exact && exact.status !== 'removed') return exact;
  if (wanted.length < 4) throw notFound(`Version ${uidOrPrefix} not found`);
  const matches = (await reader.listVersions()).filter((v) => v.status !== 'removed' && v.uid.startsWith(wanted));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw notFound(`Version uid ${uidOrPrefix} is ambiguous: ${matches.map((v) => v.uid).join(', ')}`);
  throw notFound(`Version ${uidOrPrefix} not found`);
}
