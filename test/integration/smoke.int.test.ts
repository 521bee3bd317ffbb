/**
 * Smoke test of the deployed stack's wiring. The first part holds for any
 * handlers; the second runs only while a handler is still the infra
 * placeholder (functions/*.ts marked "PLACEHOLDER (infra wiring)") and is
 * skipped once the real handler replaces it.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CloudFormationClient, DescribeStackResourcesCommand } from '@aws-sdk/client-cloudformation';
import { DescribeContinuousBackupsCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { GetFunctionConfigurationCommand, InvokeCommand, LambdaClient, ListEventSourceMappingsCommand } from '@aws-sdk/client-lambda';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { clientConfig, eventually, testStack } from './context.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const isPlaceholder = (handler: string): boolean =>
  readFileSync(path.join(REPO, 'functions', `${handler}.ts`), 'utf8').includes('PLACEHOLDER (infra wiring)');

const stack = testStack();
const cfg = clientConfig();
const lambda = new LambdaClient(cfg);
const sqs = new SQSClient(cfg);
const ddb = new DynamoDBClient(cfg);
const doc = DynamoDBDocumentClient.from(ddb);
const o = stack.outputs;

const queueArn = async (QueueUrl: string): Promise<string> =>
  (await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;

async function placeholderItems(name: string): Promise<Record<string, unknown>[]> {
  const out = await doc.send(new QueryCommand({
    TableName: o.ProjectionsTableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': `placeholder#${name}` }, ConsistentRead: true,
  }));
  return out.Items ?? [];
}

describe('deployed stack wiring', () => {
  it('every function runs Node.js 24 on arm64 with the environment naming the stack\'s resources', async () => {
    const expected = {
      BUCKET_NAME: o.BucketName,
      EVENTS_TABLE: o.EventsTableName,
      PROJECTIONS_TABLE: o.ProjectionsTableName,
      BLOCK_QUEUE_URL: o.BlockQueueUrl,
      SCRUB_QUEUE_URL: o.ScrubQueueUrl,
      CLEANUP_GRACE_SECONDS: stack.context.cleanupGraceSeconds,
      MAX_BACKUP_AGE_SECONDS: stack.context.maxBackupAgeSeconds,
    };
    for (const key of ['ApiFunctionName', 'AdminApiFunctionName', 'IngestFunctionName', 'ScrubPlannerFunctionName', 'ScrubWorkerFunctionName', 'CleanupFunctionName', 'RetentionFunctionName']) {
      const c = await lambda.send(new GetFunctionConfigurationCommand({ FunctionName: o[key] }));
      expect(c.Runtime, key).toBe('nodejs24.x');
      expect(c.Architectures, key).toEqual(['arm64']);
      expect(c.Environment?.Variables, key).toMatchObject(expected);
    }
  });

  it('the bucket and the tables exist with their keys and point-in-time recovery', async () => {
    await new S3Client(cfg).send(new HeadBucketCommand({ Bucket: o.BucketName }));
    const events = await ddb.send(new DescribeTableCommand({ TableName: o.EventsTableName }));
    expect(events.Table?.KeySchema).toEqual([{ AttributeName: 'stream', KeyType: 'HASH' }, { AttributeName: 'seq', KeyType: 'RANGE' }]);
    const projections = await ddb.send(new DescribeTableCommand({ TableName: o.ProjectionsTableName }));
    expect(projections.Table?.KeySchema).toEqual([{ AttributeName: 'pk', KeyType: 'HASH' }, { AttributeName: 'sk', KeyType: 'RANGE' }]);
    // MiniStack's CloudFormation ignores PointInTimeRecoverySpecification (docs/EMULATOR.md);
    // the template test asserts it, and a real endpoint is checked here.
    if (stack.ministack) return;
    for (const TableName of [o.EventsTableName, o.ProjectionsTableName]) {
      const b = await ddb.send(new DescribeContinuousBackupsCommand({ TableName }));
      expect(b.ContinuousBackupsDescription?.PointInTimeRecoveryDescription?.PointInTimeRecoveryStatus, TableName).toBe('ENABLED');
    }
  });

  it('the block queue dead-letters after 5 receives; ingest and scrub worker consume with partial batch responses', async () => {
    const attrs = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: o.BlockQueueUrl, AttributeNames: ['RedrivePolicy', 'VisibilityTimeout'] }))).Attributes!;
    expect(JSON.parse(attrs.RedrivePolicy!)).toMatchObject({ deadLetterTargetArn: await queueArn(o.BlockDeadLetterQueueUrl), maxReceiveCount: 5 });
    expect(Number(attrs.VisibilityTimeout)).toBe(Number(stack.context.ingestTimeoutSeconds) * Number(stack.context.visibilityTimeoutFactor));
    for (const [fn, queue, batch] of [[o.IngestFunctionName, o.BlockQueueUrl, 10], [o.ScrubWorkerFunctionName, o.ScrubQueueUrl, 5]] as const) {
      const m = await lambda.send(new ListEventSourceMappingsCommand({ FunctionName: fn }));
      expect(m.EventSourceMappings).toHaveLength(1);
      expect(m.EventSourceMappings![0]).toMatchObject({
        EventSourceArn: await queueArn(queue), BatchSize: batch, FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
    }
  });

  it('the schedules and alarms exist', async () => {
    const r = await new CloudFormationClient(cfg).send(new DescribeStackResourcesCommand({ StackName: stack.stackName }));
    const count = (type: string) => (r.StackResources ?? []).filter((x) => x.ResourceType === type && x.ResourceStatus === 'CREATE_COMPLETE').length;
    expect(count('AWS::Events::Rule')).toBe(3);
    expect(count('AWS::CloudWatch::Alarm')).toBe(4);
  });
});

describe('with the placeholder handlers', () => {
  it.runIf(isPlaceholder('api'))('api and admin api answer a RequestResponse invoke, knowing their role', async () => {
    for (const [FunctionName, role] of [[o.ApiFunctionName, 'agent'], [o.AdminApiFunctionName, 'admin']] as const) {
      const out = await lambda.send(new InvokeCommand({ FunctionName, InvocationType: 'RequestResponse', Payload: JSON.stringify({ op: 'ping' }) }));
      expect(out.FunctionError).toBeUndefined();
      const body = JSON.parse(new TextDecoder().decode(out.Payload)) as { placeholder: string; env: Record<string, string>; event: unknown };
      expect(body).toMatchObject({ placeholder: 'api', env: { API_ROLE: role, BUCKET_NAME: o.BucketName }, event: { op: 'ping' } });
    }
  });

  it.runIf(isPlaceholder('ingest'))('block records sent to the queue are projected by ingest; a poisoned one alone goes to the DLQ', async () => {
    const run = randomUUID().slice(0, 8);
    const ids = ['a', 'b', 'c', 'poison', 'd'].map((x) => `${run}-${x}`);
    await sqs.send(new SendMessageBatchCommand({
      QueueUrl: o.BlockQueueUrl,
      Entries: ids.map((id, i) => ({ Id: String(i), MessageBody: JSON.stringify({ id, fail: id.endsWith('poison') }) })),
    }));
    const good = ids.filter((id) => !id.endsWith('poison'));
    await eventually(async () => {
      const sks = (await placeholderItems('ingest')).map((i) => String(i.sk));
      return good.every((id) => sks.includes(`${id}#1`)) ? true : undefined;
    }, 60_000, 500, 'the good records to be projected');
    const t0 = Date.now();
    const dead = await eventually(async () => {
      const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: o.BlockDeadLetterQueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
      return r.Messages?.find((m) => m.Body?.includes(`${run}-poison`));
    }, 240_000, 1000, 'the poisoned record in the DLQ');
    expect(dead).toBeDefined();
    const sks = (await placeholderItems('ingest')).map((i) => String(i.sk)).filter((sk) => sk.startsWith(run));
    // The good ones were processed exactly once; the poisoned one was tried maxReceiveCount (5) times.
    expect(sks.sort()).toEqual([...good.map((id) => `${id}#1`), ...[1, 2, 3, 4, 5].map((n) => `${run}-poison#${n}`)].sort());
    console.info(`poisoned record dead-lettered ${((Date.now() - t0) / 1000).toFixed(0)} s after the good ones were projected`);
  });

  it.runIf(isPlaceholder('scrub-planner') && isPlaceholder('scrub-worker'))('a scrub planned on request reaches the scrub worker through the scrub queue', async () => {
    const out = await lambda.send(new InvokeCommand({ FunctionName: o.ScrubPlannerFunctionName, Payload: JSON.stringify({ versions: [] }) }));
    expect(out.FunctionError).toBeUndefined();
    const { at } = JSON.parse(new TextDecoder().decode(out.Payload)) as { at: string };
    await eventually(async () => (await placeholderItems('scrub-worker')).find((i) => String(i.body).includes(at)), 60_000, 500, 'the scrub worker');
  });

  it.runIf(isPlaceholder('cleanup') && isPlaceholder('retention') && isPlaceholder('scrub-planner'))('the 1-minute test schedules run scrub, cleanup and retention', async () => {
    for (const name of ['scrub-planner', 'cleanup', 'retention']) {
      const run = await eventually(async () => (await placeholderItems(name)).find((i) => String(i.event).includes('backy2.schedule')), 150_000, 2000, `a scheduled ${name} run`);
      expect(JSON.parse(String(run.event))).toMatchObject({ source: 'backy2.schedule' });
    }
  });
});
