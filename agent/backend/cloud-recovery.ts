import { makeClients } from '../../shared/adapters/aws/clients.ts';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { clearRecoverMarker, enrollJournalKey, kmsClient, readRecoverMarker, writeRecoverMarker } from '../../shared/adapters/aws/journal-key.ts';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import { deriveJournalKey, Journal } from '../../shared/app/journal.ts';
import { loadRepositoryKeys, oldMasterKeys } from '../../shared/app/rekey.ts';
import { parseMasterKey } from '../../shared/blocks/keys.ts';
import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode, integrityError } from '../../shared/domain/errors.ts';
import type { Log } from '../ui/log.ts';
import { cloudError, describeOutputs } from './cloud.ts';
import type { Recovery } from './recovery.ts';

/**
 * Cloud recover (AdminPolicy): the journal and blocks in the bucket, the tables of the deployed
 * stack (fresh ones, or the same stack deployed with `-c existingBucket=NAME`). A marker item
 * in the projections table makes scheduled cleanup and retention wait, and lets an interrupted
 * recover continue. The journal key is enrolled for this stack's functions on the way.
 */
export async function openCloudRecovery(config: Config, log: Log): Promise<Recovery> {
  const aws = config.aws!;
  const target = { region: aws.region, endpointUrl: aws.endpointUrl, profile: aws.profile };
  const clients = makeClients(target, { sockets: config.simultaneousReads + 2, onRetry: (line) => log.warn(line) });
  const where = `region ${aws.region ?? process.env['AWS_REGION'] ?? '(default)'}${aws.endpointUrl ? ` at ${aws.endpointUrl}` : ''}`;
  const master = parseMasterKey(config.encryptionKeyHex, `[DEFAULTS] encryption_key in ${config.source}`);
  const outputs = await describeOutputs(clients.cloudformation, aws.stackName, where);
  const blocks = new S3BlockStore(clients.s3, outputs.BucketName);
  const keys = await loadRepositoryKeys(blocks, master, oldMasterKeys(config)).catch((e) => {
    throw cloudError(e, 'the key ring');
  });
  const journalKey = deriveJournalKey(keys.dedupKey);
  const table = outputs.ProjectionsTableName;
  return {
    where: `bucket ${outputs.BucketName} (stack ${aws.stackName})`,
    config,
    blocks,
    journal: new Journal(blocks, journalKey),
    async begin(merge) {
      const store = new DynamoMetadataStore(clients.dynamo, { eventsTable: outputs.EventsTableName, projectionsTable: table });
      try {
        const marker = await readRecoverMarker(clients.dynamo, table);
        const held = (await store.listVersions()).length;
        if (held && !marker && !merge)
          throw new Backy2Error(
            ExitCode.recoverNotEmpty,
            `The tables of stack ${aws.stackName} already hold ${held} versions; recover rebuilds empty tables (deploy fresh ones), or add --merge to add what the journal holds beyond them`,
          );
        if (outputs.JournalKeyArn) {
          const enrolled = await enrollJournalKey(blocks, kmsClient(target), outputs.JournalKeyArn, journalKey);
          if (enrolled === 'foreign') throw integrityError(`Stack ${aws.stackName} journals for another repository key (keys/journal); not recovering into it`);
          if (enrolled === 'enrolled') log.info('Enrolled the journal key for the functions of this stack (keys/journal)');
        } else log.warn(`Stack ${aws.stackName} has no JournalKeyArn output: its functions will not journal their changes; update it with "npx cdk deploy"`);
        if (marker) log.info(`Continuing the interrupted recover (started ${marker.startedAt})`);
        let state = { startedAt: marker?.startedAt ?? new Date().toISOString(), lastIndexEvent: marker?.lastIndexEvent ?? null };
        await writeRecoverMarker(clients.dynamo, table, state);
        return {
          store,
          lastIndexEvent: state.lastIndexEvent,
          async indexEventApplied(key) {
            state = { ...state, lastIndexEvent: key };
            await writeRecoverMarker(clients.dynamo, table, state);
          },
          async finish() {
            await clearRecoverMarker(clients.dynamo, table);
          },
          async close() {},
        };
      } catch (e) {
        throw cloudError(e, `the tables of stack ${aws.stackName}`);
      }
    },
    explain: (e) => cloudError(e, `recover from bucket ${outputs.BucketName}`),
    async close() {},
  };
}
