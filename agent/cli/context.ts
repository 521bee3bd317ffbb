import type { Command } from 'commander';
import type { Backend } from '../backend/backend.ts';
import { openBackend } from '../backend/open.ts';
import { Log } from '../ui/log.ts';
import type { OutputMode } from '../ui/table.ts';

/** The global flags, as backy2 (`-c -m -s -r -v -d -V`) plus `--json`. */
export interface Globals {
  configfile?: string;
  machineOutput: boolean;
  skipHeader: boolean;
  humanReadable: boolean;
  verbose: boolean;
  debug: boolean;
  json: boolean;
}

export function globals(cmd: Command): Globals {
  const o = cmd.optsWithGlobals();
  return {
    configfile: o['configfile'],
    machineOutput: !!o['machineOutput'],
    skipHeader: !!o['skipHeader'],
    humanReadable: !!o['humanReadable'],
    verbose: !!o['verbose'],
    debug: !!o['debug'],
    json: !!o['json'],
  };
}

export const logFor = (g: Globals) => new Log(g.debug ? 'debug' : g.machineOutput || g.json ? 'error' : 'info');
export const outputMode = (g: Globals): OutputMode => ({ machine: g.machineOutput, skipHeader: g.skipHeader, json: g.json });
/** Progress bars only for a person at a terminal. */
export const wantsBar = (g: Globals) => !g.machineOutput && !g.json && !!process.stderr.isTTY;

/** Opens the configured backend, runs `fn`, and always closes it. */
export async function withBackend<T>(cmd: Command, fn: (backend: Backend, g: Globals, log: Log) => Promise<T>, opts: { initdb?: boolean } = {}): Promise<T> {
  const g = globals(cmd);
  const log = logFor(g);
  log.debug(`${cmd.name()}: command line parsed`);
  const backend = await openBackend(g.configfile, log, opts);
  log.debug(`${backend.kind} repository open (codec: ${backend.codec.workers} worker threads)`);
  try {
    return await fn(backend, g, log);
  } catch (e) {
    throw backend.explain?.(e) ?? e;
  } finally {
    await backend.close().catch((e: unknown) => {
      // A close that fails (the database's final checkpoint on a full disk) must not hide the first error.
      log.debug(`closing the repository failed: ${(e as Error).message}`);
    });
    log.debug('repository closed');
  }
}

export const print = (text: string) => process.stdout.write(text);
