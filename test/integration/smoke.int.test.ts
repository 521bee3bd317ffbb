/**
 * Smoke test of the deployed stack's wiring (runtime, environment, tables, queues, schedules,
 * alarms). What the functions do is tested through the CLI in the other integration files.
 */
import { describe, expect, it } from 'vitest';
import { CloudFormationClient, DescribeStackResourcesCommand } from '@aws-sdk/client-cloudformation';
import { DescribeContinuousBackupsCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetFunctionConfigurationCommand, LambdaClient, ListEventSourceMappingsCommand } from '@aws-sdk/client-lambda';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { clientConfig, testStack } from './context.ts';

const stack = testStack();
const cfg = clientConfig();
const lambda = new LambdaClient(cfg);
const sqs = new SQSClient(cfg);
const ddb = new DynamoDBClient(cfg);
const o = stack.outputs;

const queueArn = async (QueueUrl: string): Promise<string> =>
  (await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;

describe('deployed stack wiring', () => {
  it("every function runs Node.js 24 on arm64 with the environment naming the stack's resources", async () => {
    const expected = {
      BUCKET_NAME: o.BucketName,
      EVENTS_TABLE: o.EventsTableName,
      PROJECTIONS_TABLE: o.ProjectionsTableName,
      BLOCK_QUEUE_URL: o.BlockQueueUrl,
      SCRUB_QUEUE_URL: o.ScrubQueueUrl,
      CLEANUP_GRACE_SECONDS: stack.context.cleanupGraceSeconds,
      MAX_BACKUP_AGE_SECONDS: stack.context.maxBackupAgeSeconds,
    };
    for (const key of [
      'ApiFunctionName',
      'AdminApiFunctionName',
      'IngestFunctionName',
      'ScrubPlannerFunctionName',
      'ScrubWorkerFunctionName',
      'CleanupFunctionName',
      'RetentionFunctionName',
    ]) {
      const c = await lambda.send(new GetFunctionConfigurationCommand({ FunctionName: o[key] }));
      expect(c.Runtime, key).toBe('nodejs24.x');
      expect(c.Architectures, key).toEqual(['arm64']);
      expect(c.Environment?.Variables, key).toMatchObject(expected);
    }
  });

  it('the bucket and the tables exist with their keys and point-in-time recovery', async () => {
    await new S3Client(cfg).send(new HeadBucketCommand({ Bucket: o.BucketName }));
    const events = await ddb.send(new DescribeTableCommand({ TableName: o.EventsTableName }));
    expect(events.Table?.KeySchema).toEqual([
      { AttributeName: 'stream', KeyType: 'HASH' },
      { AttributeName: 'seq', KeyType: 'RANGE' },
    ]);
    const projections = await ddb.send(new DescribeTableCommand({ TableName: o.ProjectionsTableName }));
    expect(projections.Table?.KeySchema).toEqual([
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    // MiniStack's CloudFormation ignores PointInTimeRecoverySpecification (docs/EMULATOR.md);
    // the template test asserts it, and a real endpoint is checked here.
    if (stack.ministack) return;
    for (const TableName of [o.EventsTableName, o.ProjectionsTableName]) {
      const b = await ddb.send(new DescribeContinuousBackupsCommand({ TableName }));
      expect(b.ContinuousBackupsDescription?.PointInTimeRecoveryDescription?.PointInTimeRecoveryStatus, TableName).toBe('ENABLED');
    }
  });

  it('the block queue dead-letters after 5 receives; ingest and scrub worker consume with partial batch responses', async () => {
    const attrs = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: o.BlockQueueUrl, AttributeNames: ['RedrivePolicy', 'VisibilityTimeout'] })))
      .Attributes!;
    expect(JSON.parse(attrs.RedrivePolicy!)).toMatchObject({ deadLetterTargetArn: await queueArn(o.BlockDeadLetterQueueUrl), maxReceiveCount: 5 });
    expect(Number(attrs.VisibilityTimeout)).toBe(Number(stack.context.ingestTimeoutSeconds) * Number(stack.context.visibilityTimeoutFactor));
    for (const [fn, queue, batch] of [
      [o.IngestFunctionName, o.BlockQueueUrl, 10],
      [o.ScrubWorkerFunctionName, o.ScrubQueueUrl, 5],
    ] as const) {
      const m = await lambda.send(new ListEventSourceMappingsCommand({ FunctionName: fn }));
      expect(m.EventSourceMappings).toHaveLength(1);
      expect(m.EventSourceMappings![0]).toMatchObject({
        EventSourceArn: await queueArn(queue),
        BatchSize: batch,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
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
