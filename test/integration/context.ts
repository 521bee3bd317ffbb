/**
 * What the integration suite's global setup hands to the tests: where the
 * deployed test stack is and how to talk to it. Use `testStack()` in a test
 * file, and `clientConfig()` / `cliEnv()` to reach it with the AWS SDK or the
 * backy2 CLI.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';

export interface Backy2StackOutputs {
  readonly BucketName: string;
  readonly EventsTableName: string;
  readonly ProjectionsTableName: string;
  readonly BlockQueueUrl: string;
  readonly BlockDeadLetterQueueUrl: string;
  readonly ScrubQueueUrl: string;
  readonly ApiFunctionName: string;
  readonly AdminApiFunctionName: string;
  readonly IngestFunctionName: string;
  readonly ScrubPlannerFunctionName: string;
  readonly ScrubWorkerFunctionName: string;
  readonly CleanupFunctionName: string;
  readonly RetentionFunctionName: string;
  readonly AgentPolicyArn: string;
  readonly AdminPolicyArn: string;
  readonly CleanupGraceSeconds: string;
  readonly MaxBackupAgeSeconds: string;
  readonly [key: string]: string;
}

export interface Backy2TestStack {
  /** AWS endpoint of the emulator (or of BACKY2_TEST_ENDPOINT). */
  readonly endpoint: string;
  readonly region: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  readonly stackName: string;
  /** The stack's CloudFormation outputs, by output key. */
  readonly outputs: Backy2StackOutputs;
  /** The CDK context the test stack was deployed with (string values). */
  readonly context: Readonly<Record<string, string>>;
  /** True when the suite started its own MiniStack (not BACKY2_TEST_ENDPOINT). */
  readonly ministack: boolean;
  /** MiniStack's log file (Lambda output and ESM activity appear there), if it was started here. */
  readonly ministackLog?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    backy2: Backy2TestStack;
  }
}

export function testStack(): Backy2TestStack {
  return inject('backy2');
}

/**
 * Configuration for any AWS SDK v3 client. Includes `forcePathStyle` (S3:
 * emulators on an IP address cannot serve virtual-hosted bucket names;
 * ignored by other clients).
 */
export function clientConfig(): { endpoint: string; region: string; credentials: Backy2TestStack['credentials']; forcePathStyle: true } {
  const s = testStack();
  return { endpoint: s.endpoint, region: s.region, credentials: s.credentials, forcePathStyle: true };
}

let home: string | undefined;
/** One scratch BACKY2_HOME per test process (one cache file per stack endpoint in it). */
function scratchHome(): string {
  home ??= mkdtempSync(join(tmpdir(), 'backy2-int-home-'));
  return home;
}

/** Environment for running the backy2 CLI (or anything using the default AWS credential chain) against the test stack. */
export function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const s = testStack();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_ENDPOINT_URL: s.endpoint,
    AWS_REGION: s.region,
    AWS_DEFAULT_REGION: s.region,
    AWS_ACCESS_KEY_ID: s.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s.credentials.secretAccessKey,
    // Its stack-outputs cache goes to a scratch home, not the user's ~/.backy2.
    BACKY2_HOME: scratchHome(),
    ...extra,
  };
  if (s.credentials.sessionToken) env.AWS_SESSION_TOKEN = s.credentials.sessionToken;
  else delete env.AWS_SESSION_TOKEN;
  delete env.AWS_PROFILE;
  return env;
}

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 60_000, intervalMs = 500, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
