/**
 * The AWS behaviours the product relies on, checked against the endpoint the
 * suite runs on (MiniStack, or BACKY2_TEST_ENDPOINT). Uses a probe function
 * and probe queues of its own, so it does not depend on the product's
 * handlers. What it found is written up in docs/EMULATOR.md.
 */
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CloudFormationClient,
  CreateStackCommand,
  DeleteStackCommand,
  DescribeStacksCommand,
  waitUntilStackCreateComplete,
} from '@aws-sdk/client-cloudformation';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DeleteTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  waitUntilTableExists,
} from '@aws-sdk/client-dynamodb';
import {
  CreateEventSourceMappingCommand,
  CreateFunctionCommand,
  DeleteEventSourceMappingCommand,
  DeleteFunctionCommand,
  GetFunctionConfigurationCommand,
  InvokeCommand,
  LambdaClient,
  waitUntilFunctionActiveV2,
} from '@aws-sdk/client-lambda';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { zip } from '../emulator/zip.ts';
import { clientConfig, eventually, testStack } from './context.ts';

const RUN = randomUUID().slice(0, 8);
const PROBE_FUNCTION = `backy2-probe-${RUN}`;
const PROBE_TABLE = `backy2-probe-${RUN}`;

describe('emulator behaviour the product relies on', () => {
  const stack = testStack();
  const cfg = clientConfig();
  const lambda = new LambdaClient(cfg);
  const ddb = new DynamoDBClient(cfg);
  const s3 = new S3Client(cfg);
  const sqs = new SQSClient(cfg);
  const cleanups: (() => Promise<unknown>)[] = [];
  let probeArn = '';

  const items = async (pk: string): Promise<{ sk: string; data: Record<string, unknown> }[]> => {
    const out = await ddb.send(
      new QueryCommand({
        TableName: PROBE_TABLE,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': { S: pk } },
        ConsistentRead: true,
      }),
    );
    return (out.Items ?? []).map((i) => ({ sk: i.sk!.S!, data: JSON.parse(i.data!.S!) as Record<string, unknown> }));
  };

  beforeAll(async () => {
    await ddb.send(
      new CreateTableCommand({
        TableName: PROBE_TABLE,
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    cleanups.push(() => ddb.send(new DeleteTableCommand({ TableName: PROBE_TABLE })));
    await waitUntilTableExists({ client: ddb, maxWaitTime: 60 }, { TableName: PROBE_TABLE });

    const bundle = await build({
      entryPoints: [path.join(import.meta.dirname, '..', 'emulator', 'probe-handler.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node24',
      write: false,
      minify: true,
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    });
    // Any role of the stack will do: the probe only needs to exist.
    const role = (await lambda.send(new GetFunctionConfigurationCommand({ FunctionName: stack.outputs.ApiFunctionName }))).Role!;
    const created = await lambda.send(
      new CreateFunctionCommand({
        FunctionName: PROBE_FUNCTION,
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        Role: role,
        Timeout: 20,
        MemorySize: 256,
        Code: { ZipFile: zip({ 'index.mjs': bundle.outputFiles[0]!.contents }) },
        Environment: { Variables: { PROBE_TABLE, PROBE_MARKER: 'hello' } },
      }),
    );
    probeArn = created.FunctionArn!;
    cleanups.push(() => lambda.send(new DeleteFunctionCommand({ FunctionName: PROBE_FUNCTION })));
    await waitUntilFunctionActiveV2({ client: lambda, maxWaitTime: 60 }, { FunctionName: PROBE_FUNCTION });
  });

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  describe('Lambda', () => {
    it('runs a bundled ESM Node.js handler synchronously (RequestResponse) and returns its result', async () => {
      const t0 = Date.now();
      const out = await lambda.send(
        new InvokeCommand({ FunctionName: PROBE_FUNCTION, InvocationType: 'RequestResponse', Payload: JSON.stringify({ ping: 1 }) }),
      );
      const coldMs = Date.now() - t0;
      expect(out.StatusCode).toBe(200);
      expect(out.FunctionError).toBeUndefined();
      const result = JSON.parse(new TextDecoder().decode(out.Payload)) as {
        node: string;
        env: Record<string, string>;
        event: unknown;
        remainingMs: number;
        functionName: string;
      };
      expect(result.event).toEqual({ ping: 1 });
      expect(result.env.PROBE_MARKER).toBe('hello');
      expect(result.env.AWS_REGION).toBe(stack.region);
      expect(result.functionName).toBe(PROBE_FUNCTION);
      expect(result.remainingMs).toBeGreaterThan(0);
      if (stack.ministack) {
        // MiniStack runs the `node` first on its PATH: the project's Node 24.
        expect(result.node).toMatch(/^v24\./);
      }
      const t1 = Date.now();
      await lambda.send(new InvokeCommand({ FunctionName: PROBE_FUNCTION, Payload: '{}' }));
      console.info(`probe invoke: cold ${coldMs} ms, warm ${Date.now() - t1} ms; node ${result.node}`);
    });

    it('reports a thrown error as FunctionError "Unhandled" with the error in the payload', async () => {
      const out = await lambda.send(new InvokeCommand({ FunctionName: PROBE_FUNCTION, Payload: JSON.stringify({ throw: true }) }));
      expect(out.StatusCode).toBe(200);
      expect(out.FunctionError).toBe('Unhandled');
      expect(new TextDecoder().decode(out.Payload)).toMatch(/probe asked to fail/);
    });

    it('accepts an asynchronous (Event) invocation and runs it', async () => {
      const marker = randomUUID();
      const out = await lambda.send(new InvokeCommand({ FunctionName: PROBE_FUNCTION, InvocationType: 'Event', Payload: JSON.stringify({ marker }) }));
      expect(out.StatusCode).toBe(202);
      await eventually(async () => (await items('event')).find((i) => JSON.stringify(i.data).includes(marker)), 30_000, 500, 'the async invocation');
    });
  });

  describe('SQS event source mapping', () => {
    it('delivers batches, deletes what succeeded, redelivers only the reported failures, and dead-letters them after maxReceiveCount', async () => {
      const dlq = await sqs.send(new CreateQueueCommand({ QueueName: `backy2-probe-dlq-${RUN}` }));
      cleanups.push(() => sqs.send(new DeleteQueueCommand({ QueueUrl: dlq.QueueUrl })));
      const dlqArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
      const queue = await sqs.send(
        new CreateQueueCommand({
          QueueName: `backy2-probe-${RUN}`,
          Attributes: { VisibilityTimeout: '3', RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }) },
        }),
      );
      cleanups.push(() => sqs.send(new DeleteQueueCommand({ QueueUrl: queue.QueueUrl })));
      const queueArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queue.QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;

      // Messages first, mapping second: the first poll then sees a full batch.
      const ids = Array.from({ length: 8 }, (_, i) => `m${i}`);
      await sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: queue.QueueUrl,
          Entries: ids.map((id) => ({ Id: id, MessageBody: JSON.stringify({ id, fail: id === 'm3' }) })),
        }),
      );
      const esm = await lambda.send(
        new CreateEventSourceMappingCommand({
          FunctionName: PROBE_FUNCTION,
          EventSourceArn: queueArn,
          BatchSize: 10,
          FunctionResponseTypes: ['ReportBatchItemFailures'],
        }),
      );
      cleanups.push(() => lambda.send(new DeleteEventSourceMappingCommand({ UUID: esm.UUID })));

      const dead = await eventually(
        async () => {
          const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlq.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
          return r.Messages?.length ? r.Messages : undefined;
        },
        90_000,
        1000,
        'the failed message in the DLQ',
      );
      expect(dead.map((m) => (JSON.parse(m.Body!) as { id: string }).id)).toEqual(['m3']);

      const seen = await items('sqs');
      const sks = seen.map((i) => i.sk).sort();
      // Each good message exactly once (first receive), the failing one on receives 1 and 2.
      expect(sks).toEqual([...ids.filter((i) => i !== 'm3').map((i) => `${i}#1`), 'm3#1', 'm3#2'].sort());
      const firstBatch = Math.max(...seen.map((i) => i.data.batchSize as number));
      expect(firstBatch).toBeGreaterThan(1);
      console.info(`ESM: largest batch ${firstBatch} of ${ids.length}; DLQ received the failure`);
    });
  });

  describe('DynamoDB', () => {
    it('refuses a conditional append to an existing sequence number (optimistic concurrency on the events table)', async () => {
      const TableName = stack.outputs.EventsTableName;
      const stream = `probe-${RUN}`;
      const put = (seq: number) =>
        ddb.send(
          new PutItemCommand({
            TableName,
            Item: { stream: { S: stream }, seq: { N: String(seq) }, type: { S: 'Probe' } },
            ConditionExpression: 'attribute_not_exists(seq)',
          }),
        );
      await put(1);
      await expect(put(1)).rejects.toBeInstanceOf(ConditionalCheckFailedException);
      await put(2);
    });

    it('supports conditional updates with expressions', async () => {
      const TableName = stack.outputs.ProjectionsTableName;
      const Key = { pk: { S: `probe#${RUN}` }, sk: { S: 'counter' } };
      await ddb.send(new PutItemCommand({ TableName, Item: { ...Key, n: { N: '1' } } }));
      await ddb.send(
        new UpdateItemCommand({
          TableName,
          Key,
          UpdateExpression: 'SET n = n + :one',
          ConditionExpression: 'n = :expected',
          ExpressionAttributeValues: { ':one': { N: '1' }, ':expected': { N: '1' } },
        }),
      );
      await expect(
        ddb.send(
          new UpdateItemCommand({
            TableName,
            Key,
            UpdateExpression: 'SET n = n + :one',
            ConditionExpression: 'n = :expected',
            ExpressionAttributeValues: { ':one': { N: '1' }, ':expected': { N: '1' } },
          }),
        ),
      ).rejects.toBeInstanceOf(ConditionalCheckFailedException);
      const got = await ddb.send(new GetItemCommand({ TableName, Key, ConsistentRead: true }));
      expect(got.Item?.n?.N).toBe('2');
    });

    it('cancels a whole TransactWriteItems when one condition fails, with per-item reasons', async () => {
      const events = stack.outputs.EventsTableName;
      const projections = stack.outputs.ProjectionsTableName;
      const stream = `probe-tx-${RUN}`;
      const tx = (seq: number, marker: string) =>
        ddb.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              { Put: { TableName: events, Item: { stream: { S: stream }, seq: { N: String(seq) } }, ConditionExpression: 'attribute_not_exists(seq)' } },
              { Put: { TableName: projections, Item: { pk: { S: `probe#${RUN}` }, sk: { S: `tx#${marker}` } } } },
            ],
          }),
        );
      await tx(1, 'a');
      const err = await tx(1, 'b').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TransactionCanceledException);
      expect((err as TransactionCanceledException).CancellationReasons?.map((r) => r.Code)).toEqual(['ConditionalCheckFailed', 'None']);
      // Nothing of the cancelled transaction was written.
      const b = await ddb.send(new GetItemCommand({ TableName: projections, Key: { pk: { S: `probe#${RUN}` }, sk: { S: 'tx#b' } }, ConsistentRead: true }));
      expect(b.Item).toBeUndefined();
      const a = await ddb.send(new GetItemCommand({ TableName: projections, Key: { pk: { S: `probe#${RUN}` }, sk: { S: 'tx#a' } }, ConsistentRead: true }));
      expect(a.Item).toBeDefined();
    });
  });

  describe('S3', () => {
    it('refuses to overwrite an object with If-None-Match: * (412), and round-trips a 4 MiB block', async () => {
      const Bucket = stack.outputs.BucketName;
      const Key = `blocks/pr/ob/${RUN}`;
      const body = Buffer.alloc(4 * 1024 * 1024, 7);
      const t0 = Date.now();
      await s3.send(new PutObjectCommand({ Bucket, Key, Body: body, IfNoneMatch: '*' }));
      const putMs = Date.now() - t0;
      const err = await s3.send(new PutObjectCommand({ Bucket, Key, Body: Buffer.from('other'), IfNoneMatch: '*' })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(S3ServiceException);
      expect((err as S3ServiceException).$metadata.httpStatusCode).toBe(412);
      expect((err as S3ServiceException).name).toBe('PreconditionFailed');
      const t1 = Date.now();
      const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
      const bytes = await got.Body!.transformToByteArray();
      const getMs = Date.now() - t1;
      expect(Buffer.from(bytes).equals(body)).toBe(true);
      console.info(`S3 4 MiB: put ${putMs} ms, get ${getMs} ms`);
      await s3.send(new DeleteObjectCommand({ Bucket, Key }));
    });

    it('answers a missing object with NoSuchKey (GET) and NotFound (HEAD)', async () => {
      const Bucket = stack.outputs.BucketName;
      const Key = `blocks/no/ne/${RUN}`;
      const get = await s3.send(new GetObjectCommand({ Bucket, Key })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((get as S3ServiceException).name).toBe('NoSuchKey');
      const head = await s3.send(new HeadObjectCommand({ Bucket, Key })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((head as S3ServiceException).$metadata.httpStatusCode).toBe(404);
    });
  });

  describe('CloudFormation', () => {
    it('describes the stack with the outputs the agent reads', async () => {
      const cfn = new CloudFormationClient(cfg);
      const out = await cfn.send(new DescribeStacksCommand({ StackName: stack.stackName }));
      const outputs = Object.fromEntries((out.Stacks?.[0]?.Outputs ?? []).map((o) => [o.OutputKey, o.OutputValue]));
      expect(outputs).toEqual(stack.outputs);
      const missing = await cfn.send(new DescribeStacksCommand({ StackName: `NoSuchStack${RUN}` })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(String((missing as Error).message)).toMatch(/does not exist/);
    });
  });

  describe('EventBridge', () => {
    it("fires a rate(1 minute) rule at its Lambda target with the rule's input", async () => {
      // The rule is made with CloudFormation, as the stack's are (and no EventBridge client is needed).
      const cfn = new CloudFormationClient(cfg);
      const StackName = `backy2-probe-rule-${RUN}`;
      const task = `probe-${RUN}`;
      await cfn.send(
        new CreateStackCommand({
          StackName,
          TemplateBody: JSON.stringify({
            Resources: {
              Rule: {
                Type: 'AWS::Events::Rule',
                Properties: {
                  ScheduleExpression: 'rate(1 minute)',
                  State: 'ENABLED',
                  Targets: [{ Id: 'probe', Arn: probeArn, Input: JSON.stringify({ source: 'backy2.schedule', task }) }],
                },
              },
              Permission: {
                Type: 'AWS::Lambda::Permission',
                Properties: {
                  FunctionName: probeArn,
                  Action: 'lambda:InvokeFunction',
                  Principal: 'events.amazonaws.com',
                  SourceArn: { 'Fn::GetAtt': ['Rule', 'Arn'] },
                },
              },
            },
          }),
        }),
      );
      cleanups.push(() => cfn.send(new DeleteStackCommand({ StackName })));
      await waitUntilStackCreateComplete({ client: cfn, maxWaitTime: 120 }, { StackName });
      const t0 = Date.now();
      const fired = await eventually(
        async () => (await items('event')).find((i) => JSON.stringify(i.data).includes(task)),
        150_000,
        2000,
        'the scheduled invocation',
      );
      expect(fired.data.event).toEqual({ source: 'backy2.schedule', task });
      console.info(`EventBridge rate(1 minute) fired after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    });
  });
});
