/**
 * Running the real CLI in cloud mode against the test stack: a config with an [aws] section in a
 * scratch directory, and the CLI started with the test environment (endpoint, credentials).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEnv, testStack } from './context.ts';

const CLI = join(import.meta.dirname, '..', '..', 'agent', 'cli', 'main.ts');

export interface CloudRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Starts `backy2 ARGS…` (main.ts on this Node) in `cwd` with the test stack's environment. */
export function startCloudCli(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = cliEnv({ BACKY2_RECORD_TIMEOUT_SECONDS: '240' }),
): { child: ChildProcess; result: Promise<CloudRun> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const result = new Promise<CloudRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
  return { child, result };
}

export const runCloudCli = (args: string[], cwd: string, env?: NodeJS.ProcessEnv): Promise<CloudRun> => startCloudCli(args, cwd, env).result;

export class CloudCli {
  readonly dir: string;
  readonly config: string;
  /** The AWS endpoint this CLI talks to: the emulator's, or a proxy's in front of it. */
  readonly endpoint: string;
  /** Further environment of every run (e.g. BACKY2_S3_TIMEOUT_SECONDS). */
  readonly env: NodeJS.ProcessEnv = {};

  /** A scratch directory with a cloud config; `defaults` are extra [DEFAULTS] lines. */
  constructor(defaults: string[] = [], key = randomBytes(32).toString('hex'), endpoint = testStack().endpoint) {
    const stack = testStack();
    this.endpoint = endpoint;
    this.dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-cli-'));
    this.config = join(this.dir, 'backy.cfg');
    writeFileSync(
      this.config,
      [
        '[DEFAULTS]',
        `encryption_key: ${key}`,
        ...defaults,
        '',
        '[aws]',
        `stack_name: ${stack.stackName}`,
        `region: ${stack.region}`,
        `endpoint_url: ${endpoint}`,
        '',
      ].join('\n'),
    );
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** `backy2 -c CONFIG ARGS…` (global flags such as --json may lead ARGS). */
  start(...args: string[]): { child: ChildProcess; result: Promise<CloudRun> } {
    return startCloudCli(
      ['-c', this.config, ...args],
      this.dir,
      cliEnv({ AWS_ENDPOINT_URL: this.endpoint, BACKY2_RECORD_TIMEOUT_SECONDS: '240', ...this.env }),
    );
  }

  run(...args: string[]): Promise<CloudRun> {
    return this.start(...args).result;
  }

  /** Backs up and returns the new version's uid. */
  async backup(...args: string[]): Promise<string> {
    const r = await this.run('-m', 'backup', ...args);
    if (r.code !== 0) throw new Error(`backup ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout.trim().split('\n').pop()!;
  }

  async json<T = Record<string, unknown>>(...args: string[]): Promise<T> {
    const r = await this.run('--json', ...args);
    if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }
}
