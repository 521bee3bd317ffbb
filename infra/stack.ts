import { CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import type { StackProps } from 'aws-cdk-lib';
import * as eventsources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as iam from 'aws-cdk-lib/aws-iam';
import { RemovalPolicy } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import type { Backy2Settings } from './config.ts';
import { Handler } from './functions.ts';
import { AccessPolicies, journalCreateOnly } from './policies.ts';
import { Schedules } from './schedules.ts';
import { Storage } from './storage.ts';
import { WorkQueue } from './queues.ts';
import { suppressNagFindings } from './nag.ts';

export interface Backy2StackProps extends StackProps {
  readonly settings: Backy2Settings;
}

/**
 * backy2, serverless: agents put encrypted blocks into the bucket, send block
 * records to the block queue and invoke `api` to start, commit and manage
 * versions; `ingest` projects the records; scheduled functions scrub, clean
 * up and apply retention. See docs/INFRA.md and docs/DESIGN-NOTES.md.
 *
 * The names in `environment` (below) and the stack outputs are the contract
 * the handlers and the agent are written against.
 */
export class Backy2Stack extends Stack {
  readonly storage: Storage;
  readonly blockRecords: WorkQueue;
  readonly scrubQueue: WorkQueue;
  readonly api: Handler;
  readonly adminApi: Handler;
  readonly ingest: Handler;
  readonly scrubPlanner: Handler;
  readonly scrubWorker: Handler;
  readonly cleanup: Handler;
  readonly retention: Handler;
  readonly policies: AccessPolicies;
  /** Wraps the repository's journal key (keys/journal) so the functions can journal their changes. */
  readonly journalKey: kms.Key;
  readonly schedules: Schedules;

  constructor(scope: Construct, id: string, props: Backy2StackProps) {
    super(scope, id, { description: 'backy2, serverless: block-device backups in S3 with event-sourced metadata', ...props });
    const { settings } = props;
    const retain = settings.retain;
    // Queue visibility timeouts derive from their consumers' timeouts.
    const INGEST_TIMEOUT = Duration.seconds(settings.ingestTimeoutSeconds);
    const SCRUB_WORKER_TIMEOUT = Duration.seconds(settings.scrubWorkerTimeoutSeconds);

    // --- where backups live
    this.storage = new Storage(this, 'Storage', { retain, existingBucket: settings.existingBucket });
    const { bucket, eventsTable, projectionsTable } = this.storage;
    // The functions hold no repository key; an admin enrolls the journal key wrapped by this one
    // (`backy2 initdb`, `backy2 recover`), so the changes they make are journaled too.
    this.journalKey = new kms.Key(this, 'JournalKey', {
      description: 'backy2: wraps the repository journal key (keys/journal) for the functions',
      enableKeyRotation: true,
      removalPolicy: retain ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    });

    // --- block records flow asynchronously; scrub work fans out
    this.blockRecords = new WorkQueue(this, 'BlockRecords', {
      consumerTimeout: INGEST_TIMEOUT,
      visibilityTimeoutFactor: settings.visibilityTimeoutFactor,
      maxMessageAge: Duration.minutes(15),
    });
    this.scrubQueue = new WorkQueue(this, 'Scrub', {
      consumerTimeout: SCRUB_WORKER_TIMEOUT,
      visibilityTimeoutFactor: settings.visibilityTimeoutFactor,
      maxMessageAge: Duration.hours(6),
    });

    const environment: Record<string, string> = {
      BUCKET_NAME: bucket.bucketName,
      EVENTS_TABLE: eventsTable.tableName,
      PROJECTIONS_TABLE: projectionsTable.tableName,
      BLOCK_QUEUE_URL: this.blockRecords.queue.queueUrl,
      SCRUB_QUEUE_URL: this.scrubQueue.queue.queueUrl,
      CLEANUP_GRACE_SECONDS: String(settings.cleanupGraceSeconds),
      MAX_BACKUP_AGE_SECONDS: String(settings.maxBackupAgeSeconds),
      MIN_AGE_DAYS_FOR_RM: String(settings.minAgeDaysForRm),
      JOURNAL_KEY_ARN: this.journalKey.keyArn,
    };
    const fn = (id: string, entry: string, description: string, timeout: Duration, memorySize: number, extra: Record<string, string> = {}) =>
      new Handler(this, id, { entry, description, timeout, memorySize, environment: { ...environment, ...extra }, retain });

    // --- commands decided synchronously (invoked directly, IAM-authorized)
    this.api = fn('Api', 'api.ts', 'backy2 api: start/commit/rm/protect/tags/expire, decided with optimistic concurrency', Duration.seconds(30), 512, {
      API_ROLE: 'agent',
    });
    // The same handler for the admin policy only: a direct Lambda invoke does not tell the
    // function who called it, so `--force` is authorized by which function the caller may invoke.
    this.adminApi = fn('AdminApi', 'api.ts', 'backy2 admin api: like api, and allows --force', Duration.seconds(30), 512, { API_ROLE: 'admin' });
    eventsTable.grantReadWriteData(this.api.fn);
    projectionsTable.grantReadWriteData(this.api.fn);
    bucket.grantRead(this.api.fn);
    eventsTable.grantReadWriteData(this.adminApi.fn);
    projectionsTable.grantReadWriteData(this.adminApi.fn);
    bucket.grantRead(this.adminApi.fn);

    // --- block records → projections
    this.ingest = fn('Ingest', 'ingest.ts', 'backy2 ingest: project batches of block records (partial batch failures reported)', INGEST_TIMEOUT, 512);
    eventsTable.grantReadWriteData(this.ingest.fn);
    projectionsTable.grantReadWriteData(this.ingest.fn);
    this.ingest.fn.addEventSource(
      new eventsources.SqsEventSource(this.blockRecords.queue, {
        batchSize: 10,
        reportBatchItemFailures: true,
      }),
    );

    // --- scrub: planner fans out over unique blocks, workers verify them
    this.scrubPlanner = fn(
      'ScrubPlanner',
      'scrub-planner.ts',
      'backy2 scrub planner: choose versions and queue their unique blocks',
      Duration.minutes(5),
      1024,
    );
    eventsTable.grantReadData(this.scrubPlanner.fn);
    projectionsTable.grantReadData(this.scrubPlanner.fn);
    this.scrubQueue.queue.grantSendMessages(this.scrubPlanner.fn);

    this.scrubWorker = fn(
      'ScrubWorker',
      'scrub-worker.ts',
      'backy2 scrub worker: verify blocks (existence, size, ciphertext checksum)',
      SCRUB_WORKER_TIMEOUT,
      1024,
    );
    bucket.grantRead(this.scrubWorker.fn);
    eventsTable.grantReadWriteData(this.scrubWorker.fn);
    projectionsTable.grantReadWriteData(this.scrubWorker.fn);
    this.scrubWorker.fn.addEventSource(
      new eventsources.SqsEventSource(this.scrubQueue.queue, {
        batchSize: 5,
        reportBatchItemFailures: true,
      }),
    );

    // --- garbage collection and retention
    this.cleanup = fn('Cleanup', 'cleanup.ts', 'backy2 cleanup: two-phase, grace-period deletion of unreferenced blocks', Duration.minutes(15), 1024);
    eventsTable.grantReadWriteData(this.cleanup.fn);
    projectionsTable.grantReadWriteData(this.cleanup.fn);
    bucket.grantRead(this.cleanup.fn);
    bucket.grantDelete(this.cleanup.fn);

    // The per-name policy travels as JSON in the environment; absent when none is configured.
    const retentionPolicy: Record<string, string> = Object.keys(settings.retention).length ? { RETENTION_POLICY: JSON.stringify(settings.retention) } : {};
    // Its removals go through the admin api, which journals them.
    this.retention = fn('Retention', 'retention.ts', 'backy2 retention: remove expired versions, apply the per-name policy', Duration.minutes(5), 512, {
      ...retentionPolicy,
      ADMIN_API_FUNCTION_NAME: this.adminApi.fn.functionName,
    });
    eventsTable.grantReadWriteData(this.retention.fn);
    projectionsTable.grantReadWriteData(this.retention.fn);
    this.retention.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [this.adminApi.fn.functionArn] }));

    // Every function that changes versions or records chunks journals the change first.
    // (Chunk records are journaled by the agent before it sends them; retention goes through the admin api.)
    for (const writer of [this.api, this.adminApi, this.scrubWorker, this.cleanup]) {
      this.journalKey.grantDecrypt(writer.fn);
      bucket.grantRead(writer.fn, 'keys/*');
      bucket.grantRead(writer.fn, 'journal/*');
      writer.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [bucket.arnForObjects('journal/*')] }));
    }
    // Journal entries are never overwritten, by anyone: every writer (agent, admin, these functions)
    // puts them with If-None-Match: *. AgentPolicy allows only such puts, but an identity policy
    // is only as strong as the host's other policies; an explicit Deny in the bucket policy wins
    // over any Allow. The stack cannot name the hosts' principals (AgentPolicy is attached outside
    // it), so it denies every principal. No backy2 writer uses multipart uploads, so multipart into
    // journal/ is denied as well (no s3:ObjectCreationOperation exemption). On an existing bucket
    // the stack owns no bucket policy: this is skipped and docs/INFRA.md gives the statement to add.
    bucket.addToResourcePolicy(journalCreateOnly(bucket));

    this.schedules = new Schedules(this, 'Schedules', {
      scrubPlanner: this.scrubPlanner.fn,
      cleanup: this.cleanup.fn,
      retention: this.retention.fn,
      rateMinutes: settings.scheduleRateMinutes,
    });

    // --- who may do what from outside
    this.policies = new AccessPolicies(this, 'Access', {
      bucket,
      journalKey: this.journalKey,
      tables: [eventsTable, projectionsTable],
      blockQueue: this.blockRecords.queue,
      agentInvocable: [this.api.fn, this.scrubPlanner.fn, this.cleanup.fn],
      allFunctions: [this.api.fn, this.adminApi.fn, this.ingest.fn, this.scrubPlanner.fn, this.scrubWorker.fn, this.cleanup.fn, this.retention.fn],
      deadLetterQueues: [this.blockRecords.deadLetterQueue, this.scrubQueue.deadLetterQueue],
      workQueues: [this.blockRecords.queue, this.scrubQueue.queue],
    });

    // --- what the agent learns from DescribeStacks
    const out = (key: string, value: string, description: string) => new CfnOutput(this, key, { value, description });
    out('BucketName', bucket.bucketName, 'S3 bucket of blocks (blocks/ab/cd/<id>) and manifests (manifests/<uid>)');
    out('EventsTableName', eventsTable.tableName, 'DynamoDB event log (stream, seq)');
    out('ProjectionsTableName', projectionsTable.tableName, 'DynamoDB projections (pk, sk)');
    out('BlockQueueUrl', this.blockRecords.queue.queueUrl, 'SQS queue for block records');
    out('BlockDeadLetterQueueUrl', this.blockRecords.deadLetterQueue.queueUrl, 'Dead-letter queue of block records');
    out('ScrubQueueUrl', this.scrubQueue.queue.queueUrl, 'SQS queue of scrub work');
    out('ApiFunctionName', this.api.fn.functionName, 'Function the agent invokes for start/commit/rm/protect/tags/expire');
    out('AdminApiFunctionName', this.adminApi.fn.functionName, 'Like Api, also allowing --force; invocable with AdminPolicy only');
    out('IngestFunctionName', this.ingest.fn.functionName, 'Function projecting block records');
    out('ScrubPlannerFunctionName', this.scrubPlanner.fn.functionName, 'Function planning a cloud scrub');
    out('ScrubWorkerFunctionName', this.scrubWorker.fn.functionName, 'Function verifying scrub work');
    out('CleanupFunctionName', this.cleanup.fn.functionName, 'Function running cleanup');
    out('RetentionFunctionName', this.retention.fn.functionName, 'Function applying retention');
    out('AgentPolicyArn', this.policies.agentPolicy.managedPolicyArn, 'Managed policy for source hosts');
    out('AdminPolicyArn', this.policies.adminPolicy.managedPolicyArn, 'Managed policy for administrators');
    out('CleanupGraceSeconds', String(settings.cleanupGraceSeconds), 'Cleanup grace period the functions apply');
    out('JournalKeyArn', this.journalKey.keyArn, 'KMS key wrapping the journal key for the functions (keys/journal)');
    out('MaxBackupAgeSeconds', String(settings.maxBackupAgeSeconds), 'Age after which a backup in progress is failed');

    suppressNagFindings(this, { bucket, tables: [eventsTable, projectionsTable] });
  }
}
