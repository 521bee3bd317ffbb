import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { CloudFormationClient } from '@aws-sdk/client-cloudformation';

/** Where and as whom to talk to AWS (or an emulator such as MiniStack/LocalStack). */
export interface AwsTarget {
  region?: string | undefined;
  endpointUrl?: string | undefined;
  profile?: string | undefined;
}

export interface AwsClients {
  s3: S3Client;
  dynamo: DynamoDBDocumentClient;
  sqs: SQSClient;
  lambda: LambdaClient;
  cloudformation: CloudFormationClient;
}

/** Throttling and transient errors are retried with the SDK's exponential backoff. */
const MAX_ATTEMPTS = 8;

export function makeClients(target: AwsTarget = {}): AwsClients {
  const common = {
    ...(target.region ? { region: target.region } : {}),
    ...(target.endpointUrl ? { endpoint: target.endpointUrl } : {}),
    ...(target.profile ? { profile: target.profile } : {}),
    maxAttempts: MAX_ATTEMPTS,
  };
  return {
    s3: new S3Client({ ...common, forcePathStyle: !!target.endpointUrl }),
    dynamo: DynamoDBDocumentClient.from(new DynamoDBClient(common), { marshallOptions: { removeUndefinedValues: true } }),
    sqs: new SQSClient(common),
    lambda: new LambdaClient({ ...common, maxAttempts: 3 }),
    cloudformation: new CloudFormationClient(common),
  };
}

/** Environment of the Lambda functions (set by the CDK stack). */
export interface StackResources {
  bucketName: string;
  eventsTable: string;
  projectionsTable: string;
  blockQueueUrl: string;
  scrubQueueUrl?: string | undefined;
  apiFunctionName?: string | undefined;
  scrubPlannerFunctionName?: string | undefined;
  cleanupFunctionName?: string | undefined;
  retentionFunctionName?: string | undefined;
}

export function resourcesFromEnv(env: NodeJS.ProcessEnv = process.env): StackResources {
  const need = (name: string) => {
    const value = env[name];
    if (!value) throw new Error(`Environment variable ${name} is not set`);
    return value;
  };
  return {
    bucketName: need('BUCKET_NAME'),
    eventsTable: need('EVENTS_TABLE'),
    projectionsTable: need('PROJECTIONS_TABLE'),
    blockQueueUrl: need('BLOCK_QUEUE_URL'),
    scrubQueueUrl: env['SCRUB_QUEUE_URL'],
  };
}
