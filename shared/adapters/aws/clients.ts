import type { S3Client } from '@aws-sdk/client-s3';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { type AwsTarget, commonClientOptions, LAMBDA_MAX_ATTEMPTS, makeCoreClients, type S3Tuning } from './clients-core.ts';

export * from './clients-core.ts';

export interface AwsClients {
  s3: S3Client;
  dynamo: DynamoDBDocumentClient;
  sqs: SQSClient;
  lambda: LambdaClient;
  cloudformation: CloudFormationClient;
}

export function makeClients(target: AwsTarget = {}, s3Tuning: S3Tuning = {}): AwsClients {
  const common = commonClientOptions(target);
  return {
    ...makeCoreClients(target, s3Tuning),
    sqs: new SQSClient(common),
    lambda: new LambdaClient({ ...common, maxAttempts: LAMBDA_MAX_ATTEMPTS }),
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
