import type { Command } from 'commander';
import { withBackend } from './context.ts';

/** initdb: creates the repository; a second initdb fails without touching data. */
export function register(program: Command): void {
  program
    .command('initdb')
    .description('Initialise the repository (fails if it already exists)')
    .action(async (_opts, cmd: Command) => {
      await withBackend(cmd, async (backend, _g, log) => log.info(`Initialised ${backend.kind} repository`), { initdb: true });
    });
}
