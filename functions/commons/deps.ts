import { Logger } from '@aws-lambda-powertools/logger';
import { makeClients, resourcesFromEnv } from '../../shared/adapters/aws/clients.ts';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { DynamoScrubLedger } from '../../shared/adapters/aws/dynamo-scrub-ledger.ts';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import type { Policy } from '../../shared/domain/version.ts';
import { kmsClient, loadJournalKey, readRecoverMarker } from '../../shared/adapters/aws/journal-key.ts';
import { Journal } from '../../shared/app/journal.ts';
import { journaled } from '../../shared/app/journaled-store.ts';
import type { MetadataStore } from '../../shared/ports/metadata-store.ts';

/** Built once per container: the stores every handler works with, from the stack's environment. */
export const resources = resourcesFromEnv();
export const clients = makeClients({ region: process.env['AWS_REGION'], endpointUrl: process.env['AWS_ENDPOINT_URL'] });
export const store = new DynamoMetadataStore(clients.dynamo, resources);
export const blocks = new S3BlockStore(clients.s3, resources.bucketName);
export const scrubLedger = new DynamoScrubLedger(clients.dynamo, resources.projectionsTable);
export const logger = new Logger({ serviceName: 'backy2' });

const intEnv = (name: string, fallback: number) => {
  const n = Number(process.env[name]);
  return Number.isFinite(n) && process.env[name] !== undefined && process.env[name] !== '' ? n : fallback;
};

export const policy: Policy = {
  minAgeDaysForRm: intEnv('MIN_AGE_DAYS_FOR_RM', 6),
  maxBackupAgeSeconds: intEnv('MAX_BACKUP_AGE_SECONDS', 86_400),
};
export const cleanupGraceSeconds = intEnv('CLEANUP_GRACE_SECONDS', 3600);

/**
 * The store every handler that changes versions writes through: journaled (recover) once an admin
 * has enrolled the journal key for this stack. Without it the functions work as before and warn.
 * Only a key found is kept: the answer "none" is asked again on every invocation (one S3 GET, on
 * a stack nobody ran initdb on), because a change a warm container made after an enrollment
 * without journaling it would be missing from every later recover.
 */
let writer: { store: Promise<MetadataStore>; journaled: boolean } | undefined;
export async function writerStore(): Promise<MetadataStore> {
  if (writer?.journaled) return writer.store;
  const keyArn = process.env['JOURNAL_KEY_ARN'];
  const key = keyArn
    ? await loadJournalKey(blocks, kmsClient({ region: process.env['AWS_REGION'], endpointUrl: process.env['AWS_ENDPOINT_URL'] }), keyArn)
    : null;
  if (!key) logger.warn('No journal key is enrolled for this stack (keys/journal): changes are not journaled; run "backy2 initdb" with AdminPolicy');
  writer = { store: Promise.resolve(key ? journaled(store, new Journal(blocks, key)) : store), journaled: !!key };
  return writer.store;
}

/** A recover is rebuilding the tables: scheduled cleanup and retention wait for it to finish. */
export const recoverInProgress = async () => (await readRecoverMarker(clients.dynamo, resources.projectionsTable)) !== null;
