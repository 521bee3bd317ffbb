/**
 * Global setup of the `integration` vitest project: an AWS endpoint with the
 * real CDK stack deployed into it.
 *
 * - Without BACKY2_TEST_ENDPOINT: installs the pinned MiniStack into .venv/
 *   (if missing), starts it on a free loopback port, and stops it at the end.
 * - With BACKY2_TEST_ENDPOINT (e.g. http://localhost:4566 for LocalStack):
 *   deploys there instead, and destroys the test stack at the end unless
 *   BACKY2_TEST_KEEP_STACK=1. Credentials come from the environment, or
 *   test/test.
 *
 * Then `cdk bootstrap` and `cdk deploy` of infra/app.ts as stack
 * BACKY2_TEST_STACK (default Backy2Test) with test context: destroyable,
 * 1-minute schedules, short grace period and queue timeouts. Tests get the
 * endpoint and the stack outputs with `testStack()` from ./context.ts.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, openSync, closeSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import type { TestProject } from 'vitest/node';
import { install, start, stop, REPO_ROOT, TMP_DIR } from '../emulator/ministack.ts';
import type { RunningMiniStack } from '../emulator/ministack.ts';
import type { Backy2StackOutputs, Backy2TestStack } from './context.ts';
import './context.ts';

/** CDK context of the test stack. */
export const TEST_CONTEXT: Readonly<Record<string, string>> = {
  retain: 'false',
  scheduleRateMinutes: '1',
  cleanupGraceSeconds: '10',
  maxBackupAgeSeconds: '900',
  ingestTimeoutSeconds: '10',
  scrubWorkerTimeoutSeconds: '30',
  visibilityTimeoutFactor: '1',
  // Per-name retention for retention.int.test.ts only (no `*`: other files' names are untouched).
  retention: 'sched-retention-int: latest1',
};

const log = (line: string): void => {
  process.stderr.write(`[integration setup] ${line}\n`);
};

async function cdk(args: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<void> {
  const fd = openSync(logFile, 'a');
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'aws-cdk', 'bin', 'cdk'), ...args], {
        cwd: REPO_ROOT,
        env,
        stdio: ['ignore', fd, fd],
      });
      child.on('error', reject);
      child.on('exit', (c) => resolve(c));
    });
    if (code !== 0) {
      const tail = readFileSync(logFile, 'utf8').split('\n').slice(-40).join('\n');
      throw new Error(`cdk ${args[0]} failed (exit ${code}); log ${logFile}:\n${tail}`);
    }
  } finally {
    closeSync(fd);
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  const secs = (since: number): string => `${((Date.now() - since) / 1000).toFixed(1)} s`;
  let ministack: RunningMiniStack | undefined;
  let endpoint = process.env.BACKY2_TEST_ENDPOINT;
  if (!endpoint) {
    await install(log);
    ministack = await start({ log });
    endpoint = ministack.endpoint;
  }
  const region = process.env.BACKY2_TEST_REGION ?? 'us-east-1';
  const credentials =
    ministack || !process.env.AWS_ACCESS_KEY_ID
      ? { accessKeyId: 'test', secretAccessKey: 'test' }
      : {
          accessKeyId: process.env.AWS_ACCESS_KEY_ID,
          secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? '',
          ...(process.env.AWS_SESSION_TOKEN ? { sessionToken: process.env.AWS_SESSION_TOKEN } : {}),
        };
  const stackName = process.env.BACKY2_TEST_STACK ?? 'Backy2Test';

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // cdk runs `node infra/app.ts`: that must be this (pinned) Node, not the machine's.
    PATH: [path.dirname(process.execPath), path.join(REPO_ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(path.delimiter),
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: region,
    AWS_DEFAULT_REGION: region,
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    CDK_DISABLE_VERSION_CHECK: 'true',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
  };
  if (credentials.sessionToken) env.AWS_SESSION_TOKEN = credentials.sessionToken;
  else delete env.AWS_SESSION_TOKEN;
  delete env.AWS_PROFILE;
  delete env.NODE_OPTIONS;

  // One directory per run, so that two runs in one checkout do not share a cdk.out.
  const runDir = path.join(TMP_DIR, `${stackName}-${ministack ? `ministack-${ministack.port}` : new URL(endpoint).host.replace(/[^A-Za-z0-9.-]/g, '_')}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const outDir = path.join(runDir, 'cdk.out');
  const outputsFile = path.join(runDir, 'outputs.json');
  const logFile = path.join(runDir, 'deploy.log');
  closeSync(openSync(logFile, 'w'));
  const contextArgs = Object.entries({ ...TEST_CONTEXT, stackName }).flatMap(([k, v]) => ['--context', `${k}=${v}`]);
  const common = ['--output', outDir, '--no-notices', '--no-version-reporting', ...contextArgs];

  const stopAll = async (): Promise<void> => {
    if (ministack) {
      await stop(ministack);
      log(`ministack stopped`);
    } else if (process.env.BACKY2_TEST_KEEP_STACK !== '1') {
      const t = Date.now();
      await cdk(['destroy', '--force', ...common], env, logFile).catch((e: unknown) => log(`destroy failed: ${String(e)}`));
      log(`stack ${stackName} destroyed in ${secs(t)}`);
    }
  };

  try {
    let t = Date.now();
    await cdk(['bootstrap', ...common], env, logFile);
    log(`bootstrapped in ${secs(t)}`);
    t = Date.now();
    await cdk(['deploy', '--require-approval', 'never', '--outputs-file', outputsFile, ...common], env, logFile);
    log(`deployed ${stackName} to ${endpoint} in ${secs(t)} (setup total ${secs(t0)}; log ${logFile})`);
  } catch (e) {
    await stopAll();
    throw e;
  }

  const all = JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, Backy2StackOutputs>;
  const outputs = all[stackName];
  if (!outputs) throw new Error(`no outputs for ${stackName} in ${outputsFile}`);
  const provided: Backy2TestStack = {
    endpoint,
    region,
    credentials,
    stackName,
    outputs,
    context: { ...TEST_CONTEXT, stackName },
    ministack: ministack !== undefined,
    ...(ministack ? { ministackLog: ministack.logFile } : {}),
  };
  project.provide('backy2', provided);
  return stopAll;
}
