/**
 * CDK assertion tests of the synthesized stack (no emulator, no bundling).
 */
import { App } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.ts';
import { ADMIN_DYNAMODB_WRITE_ACTIONS, AGENT_DYNAMODB_ACTIONS } from '../../infra/policies.ts';
import type { Backy2Stack } from '../../infra/stack.ts';

type Json = Record<string, unknown>;

function synth(context: Record<string, unknown> = {}): { stack: Backy2Stack; template: Template } {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], 'aws:cdk:enable-path-metadata': true, ...context } });
  const { stack } = buildApp(app);
  return { stack, template: Template.fromStack(stack) };
}

function asArray<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

function statements(document: unknown): Json[] {
  return asArray((document as { Statement?: Json | Json[] }).Statement);
}

function actionsOf(document: unknown, effect = 'Allow'): string[] {
  return statements(document)
    .filter((s) => s.Effect === effect)
    .flatMap((s) => asArray(s.Action as string | string[]));
}

function logicalIdOf(template: Template, type: string, pathFragment: string): string {
  const found = Object.entries(template.findResources(type)).filter(([, r]) =>
    String((r as { Metadata?: Json }).Metadata?.['aws:cdk:path'] ?? '').includes(pathFragment),
  );
  expect(found, `${type} at *${pathFragment}*`).toHaveLength(1);
  return found[0]![0];
}

/** Every action allowed by the inline policies attached to a function's role. */
function functionActions(template: Template, functionId: string): string[] {
  const fnLogicalId = logicalIdOf(template, 'AWS::Lambda::Function', `/${functionId}/Function/Resource`);
  const fn = template.findResources('AWS::Lambda::Function')[fnLogicalId] as { Properties: { Role: { 'Fn::GetAtt': [string, string] } } };
  const roleId = fn.Properties.Role['Fn::GetAtt'][0];
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => asArray((p as { Properties: { Roles: Json[] } }).Properties.Roles).some((r) => (r as { Ref?: string }).Ref === roleId))
    .flatMap((p) => actionsOf((p as { Properties: { PolicyDocument: unknown } }).Properties.PolicyDocument));
}

function managedPolicy(template: Template, id: 'AgentPolicy' | 'AdminPolicy'): unknown {
  const logicalId = logicalIdOf(template, 'AWS::IAM::ManagedPolicy', `/Access/${id}/`);
  return (template.findResources('AWS::IAM::ManagedPolicy')[logicalId] as { Properties: { PolicyDocument: unknown } }).Properties.PolicyDocument;
}

/** The object pattern of an `arnForObjects` resource ({"Fn::Join": ["", [<bucket arn>, "/journal/*"]]}). */
function objectPrefix(resource: unknown): string {
  const parts = (resource as { 'Fn::Join'?: [string, unknown[]] })['Fn::Join']?.[1] ?? [resource];
  return String(parts[parts.length - 1]).replace(/^.*?\/(?=[a-z]+\/\*$)/, '');
}

function bucketPolicyStatements(template: Template): Json[] {
  return Object.values(template.findResources('AWS::S3::BucketPolicy')).flatMap((p) =>
    statements((p as { Properties: { PolicyDocument: unknown } }).Properties.PolicyDocument),
  );
}

const ENV_NAMES = [
  'BUCKET_NAME',
  'EVENTS_TABLE',
  'PROJECTIONS_TABLE',
  'BLOCK_QUEUE_URL',
  'SCRUB_QUEUE_URL',
  'CLEANUP_GRACE_SECONDS',
  'MAX_BACKUP_AGE_SECONDS',
  'MIN_AGE_DAYS_FOR_RM',
];
const FUNCTIONS = ['Api', 'AdminApi', 'Ingest', 'ScrubPlanner', 'ScrubWorker', 'Cleanup', 'Retention'];

describe('Backy2 stack (production defaults)', () => {
  let stack: Backy2Stack;
  let template: Template;
  beforeAll(() => {
    ({ stack, template } = synth());
  });

  it('is named by context, default Backy2', () => {
    expect(stack.stackName).toBe('Backy2');
    expect(synth({ stackName: 'Other' }).stack.stackName).toBe('Other');
  });

  it("has the architecture's resources", () => {
    template.resourceCountIs('AWS::S3::Bucket', 1);
    template.resourceCountIs('AWS::DynamoDB::Table', 2);
    template.resourceCountIs('AWS::SQS::Queue', 4);
    template.resourceCountIs('AWS::Lambda::Function', FUNCTIONS.length);
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 2);
    template.resourceCountIs('AWS::Events::Rule', 3);
    template.resourceCountIs('AWS::IAM::ManagedPolicy', 2);
    template.resourceCountIs('AWS::CloudWatch::Alarm', 4);
    template.resourceCountIs('AWS::Logs::LogGroup', FUNCTIONS.length);
  });

  it('bucket: public access blocked, TLS only, encrypted, aborts incomplete uploads, retained', () => {
    template.hasResource('AWS::S3::Bucket', {
      Properties: {
        PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
        BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
        LifecycleConfiguration: {
          Rules: Match.arrayWith([Match.objectLike({ Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } })]),
        },
      },
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
  });

  it('tables: keys, on-demand, point-in-time recovery, deletion protection', () => {
    for (const [pk, sk] of [
      [
        { AttributeName: 'stream', KeyType: 'HASH' },
        { AttributeName: 'seq', KeyType: 'RANGE' },
      ],
      [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    ]) {
      template.hasResource('AWS::DynamoDB::Table', {
        Properties: {
          KeySchema: [pk, sk],
          BillingMode: 'PAY_PER_REQUEST',
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          DeletionProtectionEnabled: true,
        },
        DeletionPolicy: 'Retain',
      });
    }
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'stream', KeyType: 'HASH' },
        { AttributeName: 'seq', KeyType: 'RANGE' },
      ],
      AttributeDefinitions: Match.arrayWith([{ AttributeName: 'seq', AttributeType: 'N' }]),
    });
  });

  it('block queue: DLQ after 5 receives, SQS-encrypted, TLS only, visibility 6x the ingest timeout', () => {
    const ingest = template.findResources('AWS::Lambda::Function', { Properties: { Description: Match.stringLikeRegexp('^backy2 ingest') } });
    const ingestTimeout = (Object.values(ingest)[0] as { Properties: { Timeout: number } }).Properties.Timeout;
    const dlq = logicalIdOf(template, 'AWS::SQS::Queue', '/BlockRecords/DeadLetterQueue/');
    template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlq, 'Arn'] }, maxReceiveCount: 5 },
      SqsManagedSseEnabled: true,
      VisibilityTimeout: ingestTimeout * 6,
    });
    for (const q of Object.values(template.findResources('AWS::SQS::Queue'))) {
      expect((q as { Properties: Json }).Properties.SqsManagedSseEnabled).toBe(true);
    }
    expect(
      Object.keys(
        template.findResources('AWS::SQS::QueuePolicy', {
          Properties: {
            PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
          },
        }),
      ),
    ).toHaveLength(4);
  });

  it('alarms on anything in a dead-letter queue and on old messages', () => {
    for (const group of ['BlockRecords', 'Scrub']) {
      const dlq = logicalIdOf(template, 'AWS::SQS::Queue', `/${group}/DeadLetterQueue/`);
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Namespace: 'AWS/SQS',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [dlq, 'QueueName'] } }],
        Threshold: 0,
        ComparisonOperator: 'GreaterThanThreshold',
      });
      const queue = logicalIdOf(template, 'AWS::SQS::Queue', `/${group}/Queue/`);
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        MetricName: 'ApproximateAgeOfOldestMessage',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queue, 'QueueName'] } }],
        ComparisonOperator: 'GreaterThanThreshold',
      });
    }
  });

  it('ingest and scrub worker consume their queues and report partial batch failures', () => {
    const ingest = logicalIdOf(template, 'AWS::Lambda::Function', '/Ingest/Function/Resource');
    const blockQueue = logicalIdOf(template, 'AWS::SQS::Queue', '/BlockRecords/Queue/');
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: ingest },
      EventSourceArn: { 'Fn::GetAtt': [blockQueue, 'Arn'] },
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    const worker = logicalIdOf(template, 'AWS::Lambda::Function', '/ScrubWorker/Function/Resource');
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: worker },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  it('functions: Node.js 24 on arm64, handler `handler` in an ESM bundle, JSON logs to their own log group, the shared environment', () => {
    for (const id of FUNCTIONS) {
      const logicalId = logicalIdOf(template, 'AWS::Lambda::Function', `/${id}/Function/Resource`);
      const props = (template.findResources('AWS::Lambda::Function')[logicalId] as { Properties: Json }).Properties;
      expect(props.Runtime, id).toBe('nodejs24.x');
      expect(props.Architectures, id).toEqual(['arm64']);
      expect(props.Handler, id).toBe('index.handler');
      const logGroup = logicalIdOf(template, 'AWS::Logs::LogGroup', `/${id}/Logs/`);
      expect(props.LoggingConfig, id).toEqual({ LogFormat: 'JSON', ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN', LogGroup: { Ref: logGroup } });
      const vars = (props.Environment as { Variables: Record<string, unknown> }).Variables;
      for (const name of ENV_NAMES) expect(vars, `${id} ${name}`).toHaveProperty(name);
      expect(vars.CLEANUP_GRACE_SECONDS).toBe('3600');
      expect(vars.MAX_BACKUP_AGE_SECONDS).toBe('86400');
      expect(vars.MIN_AGE_DAYS_FOR_RM).toBe('6');
    }
    const api = logicalIdOf(template, 'AWS::Lambda::Function', '/Api/Function/Resource');
    const adminApi = logicalIdOf(template, 'AWS::Lambda::Function', '/AdminApi/Function/Resource');
    const fns = template.findResources('AWS::Lambda::Function') as Record<string, { Properties: { Environment: { Variables: Json } } }>;
    expect(fns[api]!.Properties.Environment.Variables.API_ROLE).toBe('agent');
    expect(fns[adminApi]!.Properties.Environment.Variables.API_ROLE).toBe('admin');
  });

  it('least privilege: only cleanup deletes objects; ingest, planner and retention touch no objects', () => {
    const s3Deletes = (id: string) => functionActions(template, id).filter((a) => /^s3:Delete/.test(a));
    expect(s3Deletes('Cleanup')).not.toHaveLength(0);
    for (const id of FUNCTIONS.filter((f) => f !== 'Cleanup')) expect(s3Deletes(id), id).toEqual([]);
    for (const id of ['Ingest', 'ScrubPlanner', 'Retention']) {
      expect(
        functionActions(template, id).filter((a) => a.startsWith('s3:')),
        id,
      ).toEqual([]);
    }
    expect(functionActions(template, 'ScrubPlanner').filter((a) => /^dynamodb:(Put|Update|Delete|BatchWrite|TransactWrite)/.test(a))).toEqual([]);
    expect(functionActions(template, 'ScrubPlanner')).toContain('sqs:SendMessage');
    for (const id of FUNCTIONS) {
      expect(
        functionActions(template, id).filter((a) => a.endsWith(':*') || a === '*'),
        id,
      ).toEqual([]);
    }
  });

  it('schedules: daily scrub, hourly cleanup, daily retention', () => {
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(17 3 * * ? *)', State: 'ENABLED' });
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(41 * * * ? *)' });
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(7 2 * * ? *)' });
    for (const id of ['ScrubPlanner', 'Cleanup', 'Retention']) {
      const fn = logicalIdOf(template, 'AWS::Lambda::Function', `/${id}/Function/Resource`);
      template.hasResourceProperties('AWS::Events::Rule', {
        Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fn, 'Arn'] }, Input: Match.stringLikeRegexp('"source":"backy2.schedule"') })],
      });
    }
  });

  it('outputs name every resource the agent needs', () => {
    const outputs = Object.keys(template.findOutputs('*'));
    for (const key of [
      'BucketName',
      'EventsTableName',
      'ProjectionsTableName',
      'BlockQueueUrl',
      'ScrubQueueUrl',
      'ApiFunctionName',
      'AdminApiFunctionName',
      'ScrubPlannerFunctionName',
      'CleanupFunctionName',
      'RetentionFunctionName',
      'AgentPolicyArn',
      'AdminPolicyArn',
    ]) {
      expect(outputs).toContain(key);
    }
  });

  describe('AgentPolicy', () => {
    it('cannot delete objects, write tables or purge queues, and has no wildcard actions', () => {
      const doc = managedPolicy(template, 'AgentPolicy');
      const actions = actionsOf(doc);
      const forbidden = actions.filter(
        (a) =>
          /^s3:(DeleteObject|DeleteObjectVersion|DeleteBucket|PutBucket|PutLifecycle|PutObjectAcl)/i.test(a) ||
          /^dynamodb:(PutItem|UpdateItem|DeleteItem|BatchWriteItem|TransactWriteItems|PartiQL|DeleteTable|UpdateTable|RestoreTable)/i.test(a) ||
          /^sqs:(PurgeQueue|DeleteMessage|DeleteQueue|SetQueueAttributes|ReceiveMessage)/i.test(a) ||
          /^lambda:(Update|Delete|Put|Create|AddPermission)/i.test(a) ||
          /^iam:/i.test(a),
      );
      expect(forbidden).toEqual([]);
      expect(actions.filter((a) => a.includes('*'))).toEqual([]);
      expect(statements(doc).filter((s) => s.NotAction !== undefined || s.NotResource !== undefined)).toEqual([]);
      expect(
        statements(doc)
          .flatMap((s) => asArray(s.Resource))
          .filter((r) => r === '*'),
      ).toEqual([]);
    });

    it('can put blocks, manifests and journal entries only, read, send block records, invoke api/planner/cleanup and describe the stack', () => {
      const doc = managedPolicy(template, 'AgentPolicy');
      const byAction = (action: string) => statements(doc).filter((s) => asArray(s.Action as string | string[]).includes(action));
      const put = byAction('s3:PutObject');
      expect(put).toHaveLength(2);
      expect(
        put
          .flatMap((s) => asArray(s.Resource))
          .map(objectPrefix)
          .sort(),
      ).toEqual(['blocks/*', 'journal/*', 'manifests/*']);
      expect(byAction('s3:GetObject')).toHaveLength(1);
      expect(byAction('sqs:SendMessage')).toHaveLength(1);
      const blockQueue = logicalIdOf(template, 'AWS::SQS::Queue', '/BlockRecords/Queue/');
      expect(byAction('sqs:SendMessage')[0]!.Resource).toEqual({ 'Fn::GetAtt': [blockQueue, 'Arn'] });
      const invoke = byAction('lambda:InvokeFunction');
      expect(invoke).toHaveLength(1);
      const invocable = asArray(invoke[0]!.Resource).map((r) => (r as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0]);
      expect(invocable.sort()).toEqual(
        ['Api', 'ScrubPlanner', 'Cleanup'].map((id) => logicalIdOf(template, 'AWS::Lambda::Function', `/${id}/Function/Resource`)).sort(),
      );
      for (const a of AGENT_DYNAMODB_ACTIONS) expect(byAction(a), a).toHaveLength(1);
      expect(byAction('cloudformation:DescribeStacks')[0]!.Resource).toEqual({ Ref: 'AWS::StackId' });
    });

    it('may only create journal entries: its put on journal/* requires If-None-Match; blocks and manifests stay overwritable (repair, rekey)', () => {
      const puts = statements(managedPolicy(template, 'AgentPolicy')).filter((s) => asArray(s.Action as string | string[]).includes('s3:PutObject'));
      const journal = puts.filter((s) => asArray(s.Resource).map(objectPrefix).includes('journal/*'));
      expect(journal).toHaveLength(1);
      expect(asArray(journal[0]!.Resource)).toHaveLength(1);
      expect(journal[0]!.Effect).toBe('Allow');
      expect(journal[0]!.Condition).toEqual({ Null: { 's3:if-none-match': 'false' } });
      const others = puts.filter((s) => s !== journal[0]);
      expect(
        others
          .flatMap((s) => asArray(s.Resource))
          .map(objectPrefix)
          .sort(),
      ).toEqual(['blocks/*', 'manifests/*']);
      expect(others.map((s) => s.Condition)).toEqual([undefined]);
    });
  });

  it('bucket policy: a put into journal/ without If-None-Match is denied to every principal', () => {
    const denies = bucketPolicyStatements(template).filter((s) => s.Effect === 'Deny' && asArray(s.Action as string | string[]).includes('s3:PutObject'));
    expect(denies).toHaveLength(1);
    expect(denies[0]!.Principal).toEqual({ AWS: '*' });
    expect(asArray(denies[0]!.Resource).map(objectPrefix)).toEqual(['journal/*']);
    expect(denies[0]!.Condition).toEqual({ Null: { 's3:if-none-match': 'true' } });
  });

  it("AdminPolicy: its copy of the agent's journal put keeps the If-None-Match condition", () => {
    const journal = statements(managedPolicy(template, 'AdminPolicy')).filter(
      (s) => asArray(s.Action as string | string[]).includes('s3:PutObject') && asArray(s.Resource).map(objectPrefix).includes('journal/*'),
    );
    expect(journal).toHaveLength(1);
    expect(journal[0]!.Condition).toEqual({ Null: { 's3:if-none-match': 'false' } });
  });

  it("AdminPolicy: the agent's rights plus invoking every function and running cleanup locally, still no purge or wildcard", () => {
    const agent = new Set(actionsOf(managedPolicy(template, 'AgentPolicy')));
    const adminDoc = managedPolicy(template, 'AdminPolicy');
    const admin = new Set(actionsOf(adminDoc));
    for (const a of agent) expect(admin.has(a), a).toBe(true);
    const invoke = statements(adminDoc).filter((s) => s.Sid === 'InvokeAllFunctions');
    expect(asArray(invoke[0]?.Resource)).toHaveLength(FUNCTIONS.length);
    expect([...admin].filter((a) => a.includes('*'))).toEqual([]);
    for (const a of ADMIN_DYNAMODB_WRITE_ACTIONS) expect(admin.has(a), a).toBe(true);
    const deletes = statements(adminDoc).filter((s) => asArray(s.Action as string | string[]).includes('s3:DeleteObject'));
    expect(deletes).toHaveLength(1);
    expect(JSON.stringify(deletes[0]!.Resource)).toMatch(/\/blocks\/\*.*\/manifests\/\*/);
    // Key rotation: only the admin may write the key ring (keys/*); the agent's puts stop at blocks/ and manifests/.
    const ringPuts = statements(adminDoc).filter((s) => s.Sid === 'AddKeysToKeyRing');
    expect(ringPuts).toHaveLength(1);
    expect(asArray(ringPuts[0]!.Action as string | string[])).toEqual(['s3:PutObject']);
    expect(JSON.stringify(ringPuts[0]!.Resource)).toMatch(/\/keys\/\*/);
    expect(
      JSON.stringify(statements(managedPolicy(template, 'AgentPolicy')).filter((s) => asArray(s.Action as string | string[]).includes('s3:PutObject'))),
    ).not.toMatch(/keys/);
    expect([...admin].filter((a) => /^(sqs:PurgeQueue|sqs:DeleteQueue|s3:DeleteBucket|dynamodb:DeleteTable|dynamodb:UpdateTable)$/.test(a))).toEqual([]);
  });

  it('cdk-nag AwsSolutions: no unsuppressed errors or warnings, and every suppression says why', () => {
    const errors = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(errors.map((e) => `${e.id}: ${String(e.entry.data).slice(0, 120)}`)).toEqual([]);
    expect(warnings.map((e) => `${e.id}: ${String(e.entry.data).slice(0, 120)}`)).toEqual([]);
    const suppressions =
      (stack.templateOptions.metadata?.cdk_nag as { rules_to_suppress?: Json[] } | undefined)?.rules_to_suppress ??
      (template.toJSON() as { Metadata?: { cdk_nag?: { rules_to_suppress: Json[] } } }).Metadata?.cdk_nag?.rules_to_suppress ??
      [];
    expect(suppressions.length).toBeGreaterThan(0);
    for (const s of suppressions) expect(String(s.reason).length, String(s.id)).toBeGreaterThan(40);
  });
});

describe('Backy2 stack (test context)', () => {
  let template: Template;
  beforeAll(() => {
    ({ template } = synth({
      stackName: 'Backy2Test',
      retain: 'false',
      scheduleRateMinutes: '1',
      cleanupGraceSeconds: '10',
      ingestTimeoutSeconds: '10',
      visibilityTimeoutFactor: '1',
    }));
  });

  it('is destroyable: no retained data, no deletion protection', () => {
    for (const type of ['AWS::S3::Bucket', 'AWS::DynamoDB::Table', 'AWS::Logs::LogGroup']) {
      for (const [id, r] of Object.entries(template.findResources(type))) {
        expect((r as Json).DeletionPolicy, id).toBe('Delete');
      }
    }
    for (const r of Object.values(template.findResources('AWS::DynamoDB::Table'))) {
      expect((r as { Properties: Json }).Properties.DeletionProtectionEnabled).toBe(false);
    }
  });

  it('runs every schedule each minute and passes the overrides on', () => {
    const rules = Object.values(template.findResources('AWS::Events::Rule')) as { Properties: Json }[];
    expect(rules.map((r) => r.Properties.ScheduleExpression)).toEqual(['rate(1 minute)', 'rate(1 minute)', 'rate(1 minute)']);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ CLEANUP_GRACE_SECONDS: '10' }) },
    });
    template.hasResourceProperties('AWS::SQS::Queue', { VisibilityTimeout: 10, RedrivePolicy: Match.objectLike({ maxReceiveCount: 5 }) });
  });

  it('rejects a malformed context value', () => {
    expect(() => synth({ retain: 'maybe' })).toThrow(/retain/);
    expect(() => synth({ scheduleRateMinutes: '0' })).toThrow(/scheduleRateMinutes/);
  });
});

describe('disaster recovery: the journal key and an existing bucket', () => {
  it('a KMS key (rotated) wraps the journal key; the functions that change versions may decrypt it and put journal/*, the agent may not decrypt it', () => {
    const { template } = synth();
    template.resourceCountIs('AWS::KMS::Key', 1);
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    template.hasOutput('JournalKeyArn', {});
    for (const fn of ['Api', 'AdminApi', 'ScrubWorker', 'Cleanup']) {
      const actions = functionActions(template, fn);
      expect(actions, fn).toContain('kms:Decrypt');
      expect(actions, fn).toContain('s3:PutObject');
      expect(actions, fn).not.toContain('kms:Encrypt');
    }
    for (const fn of ['ScrubPlanner', 'Ingest', 'Retention']) expect(functionActions(template, fn), fn).not.toContain('kms:Decrypt');
    // Retention's removals go through the admin api (which journals them).
    expect(functionActions(template, 'Retention')).toContain('lambda:InvokeFunction');
    const agent = actionsOf(managedPolicy(template, 'AgentPolicy'));
    expect(agent.filter((a) => a.startsWith('kms:'))).toEqual([]);
    expect(actionsOf(managedPolicy(template, 'AdminPolicy'))).toEqual(expect.arrayContaining(['kms:Encrypt', 'kms:Decrypt']));
  });

  it('-c existingBucket=NAME: no bucket is created, the functions and outputs use NAME, cdk-nag stays clean', () => {
    const { stack, template } = synth({ existingBucket: 'backy2-kept-bucket' });
    template.resourceCountIs('AWS::S3::Bucket', 0);
    // No bucket policy on a bucket it does not own; the agent's identity policy still requires If-None-Match on journal/.
    template.resourceCountIs('AWS::S3::BucketPolicy', 0);
    const journalPut = statements(managedPolicy(template, 'AgentPolicy')).filter((s) => asArray(s.Resource).map(objectPrefix).includes('journal/*'));
    expect(journalPut.map((s) => s.Condition)).toEqual([{ Null: { 's3:if-none-match': 'false' } }]);
    template.hasOutput('BucketName', { Value: 'backy2-kept-bucket' });
    template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ BUCKET_NAME: 'backy2-kept-bucket' }) } });
    const errors = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(errors.map((e) => String(e.entry.data))).toEqual([]);
    expect(() => synth({ existingBucket: 'Not_A_Bucket' })).toThrow(/existingBucket/);
  });
});
