/**
 * MiniStack (PyPI `ministack`, MIT), a LocalStack-compatible AWS emulator that
 * runs as a plain Python process: installed (pinned, see requirements.txt) into
 * the project-local virtualenv `.venv/`, started on a free loopback port, and
 * stopped again. Used by the integration suite's global setup; also runnable by
 * hand: `node test/emulator/ministack.ts [port]` starts one in the foreground.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');
export const VENV_DIR = path.join(REPO_ROOT, '.venv');
export const REQUIREMENTS = path.join(import.meta.dirname, 'requirements.txt');
export const TMP_DIR = path.join(REPO_ROOT, '.tmp');

/** The pinned MiniStack version (kept in step with requirements.txt). */
export const MINISTACK_VERSION = /^ministack==(\S+)$/m.exec(readFileSync(REQUIREMENTS, 'utf8'))?.[1] ?? 'unknown';

const venvPython = (): string => path.join(VENV_DIR, 'bin', 'python');

async function installedVersion(): Promise<string | undefined> {
  if (!existsSync(venvPython())) return undefined;
  try {
    const { stdout } = await execFileP(venvPython(), ['-c', 'import importlib.metadata as m; print(m.version("ministack"))']);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

async function runs(python: string): Promise<boolean> {
  try {
    await execFileP(python, ['-c', 'import sys']);
    return true;
  } catch {
    return false;
  }
}

async function findPython(): Promise<string> {
  for (const candidate of [process.env.BACKY2_PYTHON, 'python3', 'python3.13', 'python3.12', 'python3.11', 'python3.10', 'python']) {
    if (!candidate) continue;
    try {
      const { stdout } = await execFileP(candidate, ['-c', 'import sys, venv; print("%d.%d" % sys.version_info[:2])']);
      const [major, minor] = stdout.trim().split('.').map(Number);
      if (major === 3 && (minor ?? 0) >= 10) return candidate;
    } catch {
      /* try the next one */
    }
  }
  throw new Error('MiniStack needs Python >= 3.10 with the venv module (set BACKY2_PYTHON to its path)');
}

/** Creates `.venv/` and installs the pinned MiniStack into it, unless it is already there. */
export async function install(log: (line: string) => void = () => {}): Promise<void> {
  const have = await installedVersion();
  if (have === MINISTACK_VERSION) return;
  const started = Date.now();
  if (existsSync(venvPython()) && !(await runs(venvPython()))) {
    // e.g. made by a Python that is gone: start over.
    log(`${VENV_DIR} is broken; recreating it`);
    rmSync(VENV_DIR, { recursive: true, force: true });
  }
  if (!existsSync(venvPython())) {
    const python = await findPython();
    log(`creating ${VENV_DIR} with ${python}`);
    await execFileP(python, ['-m', 'venv', VENV_DIR]);
  }
  log(`installing ministack ${MINISTACK_VERSION} into ${VENV_DIR}${have ? ` (had ${have})` : ''}`);
  await execFileP(venvPython(), ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', REQUIREMENTS], {
    maxBuffer: 16 * 1024 * 1024,
  });
  log(`ministack installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export interface RunningMiniStack {
  readonly endpoint: string;
  readonly port: number;
  readonly logFile: string;
  readonly process: ChildProcess;
  /** MiniStack's TMPDIR (Lambda code and workers); removed by stop(). */
  readonly stateDir: string;
}

export interface StartOptions {
  readonly port?: number;
  /** Seconds to wait for the health endpoint. */
  readonly timeoutSeconds?: number;
  readonly log?: (line: string) => void;
}

/**
 * Starts MiniStack in its own process group on 127.0.0.1 and waits until it
 * answers its health check. Its Lambda workers run the `node` first on PATH,
 * so the directory of the Node.js running this code (the project's pinned
 * Node 24) is put first.
 */
export async function start(options: StartOptions = {}): Promise<RunningMiniStack> {
  const port = options.port ?? (await freePort());
  mkdirSync(TMP_DIR, { recursive: true });
  // Outside the repository: MiniStack writes its Lambda workers' `_worker.js`
  // under TMPDIR, and below this repo's package.json ("type": "module") Node
  // would load that CommonJS script as ESM and the worker would die at once.
  const stateDir = mkdtempSync(path.join(os.tmpdir(), `backy2-ministack-${port}-`));
  const logFile = path.join(TMP_DIR, `ministack-${port}.log`);
  const fd = openSync(logFile, 'w');
  const nodeBin = path.dirname(process.execPath);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: [nodeBin, path.join(REPO_ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(path.delimiter),
    GATEWAY_PORT: String(port),
    BIND_HOST: '127.0.0.1',
    MINISTACK_REGION: 'us-east-1',
    TMPDIR: stateDir,
    LOG_LEVEL: process.env.MINISTACK_LOG_LEVEL ?? 'INFO',
  };
  // Lambda workers inherit MiniStack's environment: keep the test runner's own
  // settings (endpoint overrides, node loader options) out of it.
  for (const key of Object.keys(env)) {
    if (/^(AWS_ENDPOINT_URL|NODE_OPTIONS|VITEST|TEST$|NODE_V8_COVERAGE)/.test(key)) delete env[key];
  }
  const child = spawn(venvPython(), ['-m', 'ministack'], {
    cwd: stateDir,
    env,
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  closeSync(fd);
  const endpoint = `http://127.0.0.1:${port}`;
  const running: RunningMiniStack = { endpoint, port, logFile, process: child, stateDir };
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
  });
  // Should this process end without calling stop(), do not leave the emulator behind.
  const killOnExit = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    rmSync(stateDir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);
  child.once('exit', () => process.removeListener('exit', killOnExit));

  const deadline = Date.now() + (options.timeoutSeconds ?? 60) * 1000;
  for (;;) {
    if (exited) throw new Error(`MiniStack ${exited} before it was ready; see ${logFile}:\n${tail(logFile)}`);
    try {
      const res = await fetch(`${endpoint}/_ministack/health`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) {
      await stop(running);
      throw new Error(`MiniStack did not answer on ${endpoint} in time; see ${logFile}:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  options.log?.(`ministack ${MINISTACK_VERSION} on ${endpoint} (pid ${child.pid}, log ${logFile})`);
  return running;
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Stops MiniStack and everything it started (its Lambda workers share its process group). */
export async function stop(running: RunningMiniStack, timeoutSeconds = 10): Promise<void> {
  const pid = running.process.pid;
  if (pid === undefined || running.process.exitCode !== null || running.process.signalCode !== null) {
    rmSync(running.stateDir, { recursive: true, force: true });
    return;
  }
  const exited = new Promise<void>((resolve) => running.process.once('exit', () => resolve()));
  const signalGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-pid, signal);
    } catch {
      /* already gone */
    }
  };
  signalGroup('SIGTERM');
  const timer = setTimeout(() => signalGroup('SIGKILL'), timeoutSeconds * 1000);
  await exited;
  clearTimeout(timer);
  signalGroup('SIGKILL'); // stragglers of the group (workers that ignored SIGTERM)
  rmSync(running.stateDir, { recursive: true, force: true });
}

if (import.meta.main) {
  const port = process.argv[2] ? Number(process.argv[2]) : 4566;
  await install((l) => console.log(l));
  const running = await start({ port, log: (l) => console.log(l) });
  const shutdown = (): void => {
    void stop(running).then(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
  console.log(`export AWS_ENDPOINT_URL=${running.endpoint} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1`);
}
