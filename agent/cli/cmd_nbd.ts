import type { Command } from 'commander';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { Backy2Error, ExitCode, usageError } from '../../shared/domain/errors.ts';
import { removeStaleOverlays } from '../nbd/export.ts';
import { ServedRepository } from '../nbd/served.ts';
import { NbdServer } from '../nbd/server.ts';
import { globals, logFor, withBackend } from './context.ts';
import type { Log } from '../ui/log.ts';

const DEFAULT_PORT = 10809;
/**
 * Enough for the read-ahead of a sequential reader (4 blocks) and the blocks being replied: the
 * server's peak RSS stays under 256 MiB (a copy of 1 GiB from S3: 219-224 MiB; 256 MiB of cache:
 * 434-437 MiB, no faster). Random access over a larger working set wants more (--cache-mib).
 */
const DEFAULT_CACHE_MIB = 32;
const LEASE_SECONDS = 120;

interface NbdOptions {
  bindAddress: string;
  bindPort: string;
  readOnly?: boolean;
  discardChanges?: boolean;
  cacheMib: string;
  readAhead: string;
  cowDir?: string;
}

/** nbd: serves the repository's versions over the NBD protocol until SIGINT/SIGTERM (as Benji's `nbd`). */
export function register(program: Command): void {
  program
    .command('nbd')
    .description('Serve committed versions over NBD (export name: version uid or a unique prefix)')
    .argument('[uid...]', 'serve only these versions (default: every committed version)')
    .option('-a, --bind-address <address>', 'address to listen on', '127.0.0.1')
    .option('-p, --bind-port <port>', 'port to listen on (0: any free port)', String(DEFAULT_PORT))
    .option('-r, --read-only', 'refuse writes (EPERM)')
    .option('-d, --discard-changes', 'keep writes for the connection only, never create a version')
    .option('--cache-mib <n>', 'memory for verified blocks shared by all connections', String(DEFAULT_CACHE_MIB))
    .option('--read-ahead <blocks>', 'blocks fetched ahead of a sequential reader', '4')
    .option('--cow-dir <dir>', 'directory for copy-on-write files (default: the system temp directory)')
    .action(async (uids: string[], opts: NbdOptions, cmd: Command) => {
      const port = integer(opts.bindPort, '--bind-port', 0, 65535);
      const cacheMib = integer(opts.cacheMib, '--cache-mib', 1, 1024 * 1024);
      const readAhead = integer(opts.readAhead, '--read-ahead', 0, 64);
      if (opts.readOnly && opts.discardChanges) throw usageError('-r and -d exclude each other');
      // Handlers first: a signal that arrives while the server starts stops it once it listens.
      const signalled = untilSignal(logFor(globals(cmd)));
      await withBackend(cmd, async (backend, _g, log) => {
        const only = new Set<string>();
        for (const uid of uids) {
          const v = await resolveVersion(backend.catalog.reader, uid);
          if (v.status !== 'committed')
            throw new Backy2Error(
              ExitCode.refused,
              `Version ${v.uid} is ${v.status === 'pending' ? 'a backup in progress' : v.status}; only committed versions are served`,
            );
          only.add(v.uid);
        }
        const cowDir = opts.cowDir ?? tmpdir();
        const stale = await removeStaleOverlays(cowDir);
        if (stale.dirs) log.info(`Removed ${stale.dirs} copy-on-write overlays of NBD servers that were killed (${stale.bytes} bytes) from ${cowDir}`);
        const served = new ServedRepository(
          backend,
          {
            readOnly: !!opts.readOnly,
            discard: !!opts.discardChanges,
            cacheBytes: cacheMib * 1024 * 1024,
            readAheadBlocks: readAhead,
            cowDir,
            leaseSeconds: LEASE_SECONDS,
            only: only.size ? only : null,
          },
          log,
        );
        const server = new NbdServer(served, { log });
        const bound = await server.listen(opts.bindAddress, port).catch((e: NodeJS.ErrnoException) => {
          throw listenError(e, opts.bindAddress, port);
        });
        if (!isLoopback(opts.bindAddress))
          log.warn(
            `NBD traffic is not encrypted or authenticated: anyone who can reach ${opts.bindAddress}:${bound.port} can read${opts.readOnly ? '' : ' and write'} the served versions`,
          );
        const mode = opts.readOnly ? 'read-only' : opts.discardChanges ? 'writes discarded on disconnect' : 'copy-on-write';
        log.info(`NBD server listening on ${bound.address}:${bound.port} (${mode}); export name = version uid; stop with Ctrl-C`);
        await signalled;
        log.info('Stopping the NBD server: finishing open connections');
        await server.close();
      });
    });
}

function integer(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw usageError(`Invalid ${flag} "${text}": a whole number from ${min} to ${max}`);
  return n;
}

function listenError(e: NodeJS.ErrnoException, address: string, port: number): Backy2Error {
  const where = `${address}:${port}`;
  if (e.code === 'EADDRINUSE')
    return new Backy2Error(ExitCode.listen, `Cannot listen on ${where}: the port is in use (another NBD server?); choose another with -p`);
  if (e.code === 'EACCES') return new Backy2Error(ExitCode.listen, `Cannot listen on ${where}: permission denied (ports below 1024 need privileges)`);
  if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN')
    return new Backy2Error(ExitCode.listen, `Cannot listen on ${where}: no such address on this host`);
  return new Backy2Error(ExitCode.listen, `Cannot listen on ${where}: ${e.message}`);
}

const isLoopback = (address: string) => address === 'localhost' || address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));

/**
 * Resolves on the first SIGINT/SIGTERM. The handlers stay installed until the process exits: a
 * later signal must not kill a server that is still committing copy-on-write versions.
 */
function untilSignal(log: Log): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = () => {
      if (stopping) log.warn('Still stopping (committing open copy-on-write versions); SIGKILL aborts them, leaving them pending');
      stopping = true;
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
