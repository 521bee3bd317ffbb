import type { Command } from 'commander';
import { usageError } from '../../shared/domain/errors.ts';
import { EmbeddedBackend } from '../backend/embedded.ts';
import { withBackend } from './context.ts';

/** rebuild-projections: drops the derived tables and replays the event log (embedded). */
export function register(program: Command): void {
  program
    .command('rebuild-projections')
    .description('Drop and rebuild the metadata projections by replaying the event log')
    .action(async (_opts, cmd: Command) => {
      await withBackend(cmd, async (backend, _g, log) => {
        if (!(backend instanceof EmbeddedBackend)) throw usageError('rebuild-projections runs on the embedded backend only');
        backend.catalog.store.rebuildProjections();
        log.info('Projections rebuilt from the event log');
      });
    });
}
