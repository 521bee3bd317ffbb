import type { Command } from 'commander';
import { print, withBackend } from './context.ts';

/** cleanup: deletes blocks no version references (after the grace period, or now with -f). */
export function register(program: Command): void {
  program
    .command('cleanup')
    .description('Delete blocks that no version references (grace period 1 h; -f: now, under the repository lock)')
    .option('-f, --full', 'ignore the grace period; refuses while a backup is in progress')
    .option('--local', 'cloud backend: run the cleanup on this host (needs AdminPolicy) instead of invoking the cleanup function')
    .action(async (opts: { full?: boolean; local?: boolean }, cmd: Command) => {
      await withBackend(cmd, async (backend, g, log) => {
        const report = await backend.cleanup(!!opts.full, log.debug, !!opts.local);
        log.info(`Cleanup finished. ${report.marked} blocks newly unreferenced, ${report.deleted} data deletions (${report.deletedBytes} bytes).`);
        if (g.json) print(JSON.stringify(report) + '\n');
      });
    });
}
