import type { Command } from 'commander';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { withBackend } from './context.ts';
import { printChangedVersion } from './cmd_ls.ts';

/** rm UID: marks a version removed (its blocks go at the next cleanup). */
export function register(program: Command): void {
  program
    .command('rm')
    .description('Remove version UID (refused when protected or younger than disallow_rm_when_younger_than_days)')
    .argument('<uid>', 'version uid (or a unique prefix)')
    .option('-f, --force', 'remove even if younger than the configured minimum age')
    .action(async (uid: string, opts: { force?: boolean }, cmd: Command) => {
      await withBackend(cmd, async (backend, g, log) => {
        const version = await resolveVersion(backend.catalog.reader, uid);
        const after = await backend.catalog.execute({ type: 'RemoveVersion', uid: version.uid, force: !!opts.force });
        log.info(`Removed backup version ${version.uid} with ${version.blockCount} blocks.`);
        printChangedVersion(g, after);
      });
    });
}
