/**
 * The S3 and DynamoDB clients every user of the stack needs, and how each client is configured.
 * The agent loads only this module: the Lambda, SQS and CloudFormation packages of the SDK are
 * loaded when first used (`makeLazyClients`; a restore uses neither Lambda nor SQS). clients.ts
 * adds them eagerly for the functions.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { LambdaClient } from '@aws-sdk/client-lambda';
import type { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { StandardRetryStrategy } from '@smithy/core/retry';
import type { RetryErrorInfo, RetryStrategyV2, StandardRetryToken } from '@smithy/types';

/** Where and as whom to talk to AWS (or an emulator such as MiniStack/LocalStack). */
export interface AwsTarget {
  region?: string | undefined;
  endpointUrl?: string | undefined;
  profile?: string | undefined;
}

/** Throttling and transient errors are retried with the SDK's exponential backoff. */
const MAX_ATTEMPTS = 8;

/** How the agent's S3 client talks to the bucket (defaults: `S3_DEFAULTS`). */
export interface S3Tuning {
  /** Keep-alive connections kept open: the pipeline's simultaneous reads + writes. */
  sockets?: number;
  /** Connecting may take this long. */
  connectTimeoutMs?: number;
  /** A request (sending the body and receiving the whole answer) may take this long, then it is retried. */
  requestTimeoutMs?: number;
  /** A connection that moves no byte for this long is abandoned (a stalled request), then retried. */
  idleTimeoutMs?: number;
  /** Attempts per request, the first included. */
  maxAttempts?: number;
  /** Each retry is reported here (the agent: as a warning). */
  onRetry?: (line: string) => void;
}

/**
 * A 4 MiB block crosses a slow link in seconds; a request that takes minutes, or a connection
 * silent for 30 s, is stalled: it is abandoned and retried rather than hanging a backup or a restore.
 * BACKY2_S3_TIMEOUT_SECONDS overrides the request timeout (the idle one follows it, at most 30 s).
 */
export const S3_DEFAULTS = { sockets: 8, connectTimeoutMs: 10_000, requestTimeoutMs: 120_000, idleTimeoutMs: 30_000, maxAttempts: MAX_ATTEMPTS } as const;

/**
 * The SDK's standard retry strategy (exponential backoff with full jitter: a random delay up to
 * 100 ms × 2^attempt, at most 20 s; a retry quota stops retry storms), telling `onRetry` about
 * every retry it decides on. A request that is not retried fails as before, without a warning.
 */
export class ReportedRetryStrategy implements RetryStrategyV2 {
  private readonly inner: StandardRetryStrategy;
  private readonly what: string;
  private readonly maxAttempts: number;
  private readonly onRetry: (line: string) => void;
  constructor(what: string, maxAttempts: number, onRetry: (line: string) => void) {
    this.inner = new StandardRetryStrategy(maxAttempts);
    this.what = what;
    this.maxAttempts = maxAttempts;
    this.onRetry = onRetry;
  }
  acquireInitialRetryToken(scope: string): Promise<StandardRetryToken> {
    return this.inner.acquireInitialRetryToken(scope);
  }
  async refreshRetryTokenForRetry(token: StandardRetryToken, info: RetryErrorInfo): Promise<StandardRetryToken> {
    // The standard strategy waits its backoff before it answers (older ones hand the wait to the caller in the token): both are the delay.
    const asked = performance.now();
    const next = await this.inner.refreshRetryTokenForRetry(token, info);
    const delayMs = performance.now() - asked + next.getRetryDelay();
    const e = info.error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } } | undefined;
    const status = e?.$metadata?.httpStatusCode ? ` (HTTP ${e.$metadata.httpStatusCode})` : '';
    const reason = `${e?.name ?? info.errorType}${status}${e?.message && e.message !== e.name ? `: ${e.message.split('\n')[0]!.slice(0, 160)}` : ''}`;
    this.onRetry(`${this.what} request failed, ${reason}; retry ${next.getRetryCount()} of ${this.maxAttempts - 1} after ${(delayMs / 1000).toFixed(1)} s`);
    return next;
  }
  recordSuccess(token: StandardRetryToken): void {
    this.inner.recordSuccess(token);
  }
}

/** How long an S3 request, and a silent connection, may take (`S3Tuning`, BACKY2_S3_TIMEOUT_SECONDS, the defaults). */
export function s3Timeouts(tuning: S3Tuning = {}): { requestTimeoutMs: number; idleTimeoutMs: number } {
  const envTimeout = Number(process.env['BACKY2_S3_TIMEOUT_SECONDS'] ?? 0) * 1000;
  const requestTimeoutMs = tuning.requestTimeoutMs ?? (envTimeout || S3_DEFAULTS.requestTimeoutMs);
  return { requestTimeoutMs, idleTimeoutMs: tuning.idleTimeoutMs ?? Math.min(S3_DEFAULTS.idleTimeoutMs, requestTimeoutMs) };
}

/** The S3 client's connection handling: bounded timeouts, a keep-alive pool of `sockets` connections. */
export function s3ClientOptions(tuning: S3Tuning = {}) {
  const { requestTimeoutMs: requestTimeout, idleTimeoutMs: idleTimeout } = s3Timeouts(tuning);
  const sockets = Math.max(1, tuning.sockets ?? S3_DEFAULTS.sockets);
  const agent = { keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets };
  const maxAttempts = tuning.maxAttempts ?? S3_DEFAULTS.maxAttempts;
  return {
    maxAttempts,
    ...(tuning.onRetry ? { retryStrategy: new ReportedRetryStrategy('S3', maxAttempts, tuning.onRetry) } : {}),
    requestHandler: {
      connectionTimeout: tuning.connectTimeoutMs ?? S3_DEFAULTS.connectTimeoutMs,
      requestTimeout,
      throwOnRequestTimeout: true,
      socketTimeout: idleTimeout,
      httpAgent: agent,
      httpsAgent: agent,
    },
  };
}

/** Region, endpoint, profile and attempts of every client. */
export function commonClientOptions(target: AwsTarget = {}) {
  return {
    ...(target.region ? { region: target.region } : {}),
    ...(target.endpointUrl ? { endpoint: target.endpointUrl } : {}),
    ...(target.profile ? { profile: target.profile } : {}),
    maxAttempts: MAX_ATTEMPTS,
  };
}

/** Attempts of a Lambda invoke (the first included). */
export const LAMBDA_MAX_ATTEMPTS = 3;

export interface CoreClients {
  s3: S3Client;
  dynamo: DynamoDBDocumentClient;
}

export function makeCoreClients(target: AwsTarget = {}, s3Tuning: S3Tuning = {}): CoreClients {
  const common = commonClientOptions(target);
  return {
    // Responses' checksums are validated where a read asks (S3BlockStore: every read but a restore's, which verifies each block itself).
    s3: new S3Client({ ...common, ...s3ClientOptions(s3Tuning), responseChecksumValidation: 'WHEN_REQUIRED', forcePathStyle: !!target.endpointUrl }),
    dynamo: DynamoDBDocumentClient.from(new DynamoDBClient(common), { marshallOptions: { removeUndefinedValues: true } }),
  };
}

/** S3 and DynamoDB at once; each other client made (and its SDK package loaded) when first asked for. */
export interface LazyAwsClients extends CoreClients {
  sqs(): Promise<SQSClient>;
  lambda(): Promise<LambdaClient>;
  cloudformation(): Promise<CloudFormationClient>;
}

const once = <T>(make: () => Promise<T>): (() => Promise<T>) => {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
};

export function makeLazyClients(target: AwsTarget = {}, s3Tuning: S3Tuning = {}): LazyAwsClients {
  const common = commonClientOptions(target);
  return {
    ...makeCoreClients(target, s3Tuning),
    sqs: once(async () => new (await import('@aws-sdk/client-sqs')).SQSClient(common)),
    lambda: once(async () => new (await import('@aws-sdk/client-lambda')).LambdaClient({ ...common, maxAttempts: LAMBDA_MAX_ATTEMPTS })),
    cloudformation: once(async () => new (await import('@aws-sdk/client-cloudformation')).CloudFormationClient(common)),
  };
}
