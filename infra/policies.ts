import { Stack } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface AccessPoliciesProps {
  readonly bucket: s3.IBucket;
  /** Wraps the journal key for the functions: admins enroll it (`initdb`, `recover`). */
  readonly journalKey: kms.IKey;
  readonly tables: dynamodb.ITable[];
  readonly blockQueue: sqs.IQueue;
  /** Functions an agent may invoke: api, scrub planner, cleanup (they enforce the rules). */
  readonly agentInvocable: lambda.IFunction[];
  /** Every function of the stack (the admin may invoke any). */
  readonly allFunctions: lambda.IFunction[];
  /** Dead-letter queues an admin may inspect and redrive ... */
  readonly deadLetterQueues: sqs.IQueue[];
  /** ... back into these queues. */
  readonly workQueues: sqs.IQueue[];
}

/** The S3 condition key of the If-None-Match request header (present only on a create-only put). */
export const IF_NONE_MATCH = 's3:if-none-match';

/** The bucket-policy statement that refuses any put into journal/ without If-None-Match. */
export function journalCreateOnly(bucket: s3.IBucket): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'JournalEntriesAreNeverOverwritten',
    effect: iam.Effect.DENY,
    principals: [new iam.AnyPrincipal()],
    actions: ['s3:PutObject'],
    resources: [bucket.arnForObjects('journal/*')],
    conditions: { Null: { [IF_NONE_MATCH]: 'true' } },
  });
}

/** Read-only DynamoDB actions given to agents: never a write. */
export const AGENT_DYNAMODB_ACTIONS = ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query', 'dynamodb:Scan', 'dynamodb:DescribeTable'];

/** DynamoDB item writes given to admins (for `cleanup --local`); transactions are authorized per item action. */
export const ADMIN_DYNAMODB_WRITE_ACTIONS = [
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
  'dynamodb:BatchWriteItem',
  'dynamodb:ConditionCheckItem',
];

/**
 * The managed policies to attach to the IAM users or roles of source hosts
 * (`AgentPolicy`) and of operators (`AdminPolicy`).
 *
 * The agent policy is the security model: it can add blocks and manifests,
 * create (never overwrite) journal entries, read everything, send block records and invoke the functions that decide,
 * but it cannot delete an object, write a table or purge a queue — so a
 * compromised source host cannot destroy backups. Deletions happen only in
 * functions, under the age-guard, protection and grace-period rules.
 */
export class AccessPolicies extends Construct {
  readonly agentPolicy: iam.ManagedPolicy;
  readonly adminPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: AccessPoliciesProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const tableArns = props.tables.flatMap((t) => [t.tableArn, `${t.tableArn}/index/*`]);

    const agentStatements = [
      new iam.PolicyStatement({
        // Unconditional: the agent overwrites these by design. A backup replaces a block copy a
        // scrub found bad ('replace invalid copy', agent/pipeline/store-block.ts) and re-uploads one
        // a cleanup deleted under it; rekey rewrites blocks and manifests; a manifest is put plainly.
        sid: 'PutBlocksAndManifests',
        actions: ['s3:PutObject'],
        resources: [props.bucket.arnForObjects('blocks/*'), props.bucket.arnForObjects('manifests/*')],
      }),
      new iam.PolicyStatement({
        // journal/: history. Every journal write sends If-None-Match: * (Journal.append), so the
        // agent may only create an entry, never overwrite one: a request without the header is not
        // allowed (S3 "Enforce conditional writes"). The agent never uses multipart uploads, so no
        // s3:ObjectCreationOperation exemption: a multipart upload into journal/ is refused too.
        // The bucket policy denies the same to every principal (infra/stack.ts).
        sid: 'CreateJournalEntriesOnly',
        actions: ['s3:PutObject'],
        resources: [props.bucket.arnForObjects('journal/*')],
        conditions: { Null: { [IF_NONE_MATCH]: 'false' } },
      }),
      new iam.PolicyStatement({
        sid: 'ReadObjects',
        actions: ['s3:GetObject'],
        resources: [props.bucket.arnForObjects('*')],
      }),
      new iam.PolicyStatement({
        // Without ListBucket a missing object reads as 403 instead of 404.
        sid: 'ListBucket',
        actions: ['s3:ListBucket'],
        resources: [props.bucket.bucketArn],
      }),
      new iam.PolicyStatement({
        sid: 'SendBlockRecords',
        actions: ['sqs:SendMessage', 'sqs:GetQueueAttributes'],
        resources: [props.blockQueue.queueArn],
      }),
      new iam.PolicyStatement({
        sid: 'InvokeDecidingFunctions',
        actions: ['lambda:InvokeFunction'],
        resources: props.agentInvocable.map((f) => f.functionArn),
      }),
      new iam.PolicyStatement({
        sid: 'ReadMetadata',
        actions: AGENT_DYNAMODB_ACTIONS,
        resources: tableArns,
      }),
      new iam.PolicyStatement({
        sid: 'ReadStackOutputs',
        actions: ['cloudformation:DescribeStacks'],
        resources: [stack.stackId],
      }),
    ];

    this.agentPolicy = new iam.ManagedPolicy(this, 'AgentPolicy', {
      description: `backy2 agent on a source host (stack ${stack.stackName}): add and read blocks, send block records, invoke api/scrub/cleanup, read metadata. No deletes, no table writes, no purges.`,
      statements: agentStatements,
    });

    this.adminPolicy = new iam.ManagedPolicy(this, 'AdminPolicy', {
      description: `backy2 administrator (stack ${stack.stackName}): the agent's rights plus invoking every function (--force, retention, reprocessing), running cleanup locally (delete blocks/manifests, write metadata) and redriving dead-letter queues.`,
      statements: [
        ...agentStatements.map((s) => s.copy({ sid: `Agent${s.sid ?? ''}` })),
        new iam.PolicyStatement({
          sid: 'InvokeAllFunctions',
          actions: ['lambda:InvokeFunction'],
          resources: props.allFunctions.map((f) => f.functionArn),
        }),
        // `backy2 cleanup --local`: the cleanup, run on an admin's host, applies the same
        // rules as the cleanup function and needs the same data rights. Still no purge,
        // no bucket or table deletion, no wildcard action.
        new iam.PolicyStatement({
          sid: 'LocalCleanupDeleteObjects',
          actions: ['s3:DeleteObject'],
          resources: [props.bucket.arnForObjects('blocks/*'), props.bucket.arnForObjects('manifests/*')],
        }),
        // Key rotation (`add-key`): only an admin may add a master key to the key ring; an agent
        // that could would let a stolen host key stay valid after rotation.
        new iam.PolicyStatement({
          sid: 'AddKeysToKeyRing',
          actions: ['s3:PutObject'],
          resources: [props.bucket.arnForObjects('keys/*')],
        }),
        // Journal (disaster recovery): `initdb` and `recover` enroll the journal key for the
        // functions (what an admin changes from its host is journaled with the agent's journal/ rights).
        new iam.PolicyStatement({
          sid: 'EnrollJournalKey',
          actions: ['kms:Encrypt', 'kms:Decrypt'],
          resources: [props.journalKey.keyArn],
        }),
        new iam.PolicyStatement({
          sid: 'LocalCleanupWriteMetadata',
          actions: ADMIN_DYNAMODB_WRITE_ACTIONS,
          resources: tableArns,
        }),
        new iam.PolicyStatement({
          sid: 'RedriveDeadLetters',
          actions: [
            'sqs:ReceiveMessage',
            'sqs:GetQueueAttributes',
            'sqs:StartMessageMoveTask',
            'sqs:ListMessageMoveTasks',
            'sqs:CancelMessageMoveTask',
            'sqs:DeleteMessage',
          ],
          resources: props.deadLetterQueues.map((q) => q.queueArn),
        }),
        new iam.PolicyStatement({
          sid: 'RedriveIntoWorkQueues',
          actions: ['sqs:SendMessage', 'sqs:GetQueueAttributes'],
          resources: props.workQueues.map((q) => q.queueArn),
        }),
      ],
    });
  }
}
