import { Logger } from '@aws-lambda-powertools/logger';
import { makeClients, resourcesFromEnv } from '../../shared/adapters/aws/clients.ts';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { DynamoScrubLedger } from '../../shared/adapters/aws/dynamo-scrub-ledger.ts';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import type { Policy } from '../../shared/domain/version.ts';

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
