import type { Command } from 'commander';
import { usageError } from '../../shared/domain/errors.ts';
import { runRestore } from '../pipeline/restore.ts';
import { wantsBar, withBackend } from './context.ts';

/** restore UID TARGET: writes a version to a file or block device, verifying every block. */
export function register(program: Command): void {
  program
    .command('restore')
    .description('Restore version UID into file://TARGET')
    .argument('<uid>', 'version uid (or a unique prefix)')
    .argument('<target>', 'file://PATH of a file or block device')
    .option('-s, --sparse', 'do not write sparse (all-zero) blocks')
    .option('-f, --force', 'overwrite an existing target')
    .option('-c, --continue-from <block>', 'resume an interrupted restore from this block number')
    .action(async (uid: string, target: string, opts: { sparse?: boolean; force?: boolean; continueFrom?: string }, cmd: Command) => {
      const continueFrom = opts.continueFrom === undefined ? null : Number(opts.continueFrom);
      if (continueFrom !== null && (!Number.isInteger(continueFrom) || continueFrom < 0))
        throw usageError(`Invalid --continue-from "${opts.continueFrom}": a block number`);
      await withBackend(cmd, async (backend, g, log) => {
        const version = await runRestore(backend, { uid, targetUrl: target, sparse: !!opts.sparse, force: !!opts.force, continueFrom }, log, wantsBar(g));
        log.info(`Restored version ${version.uid} (${version.sizeBytes} bytes) to ${target}`);
      });
    });
}
