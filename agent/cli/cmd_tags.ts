import type { Command } from 'commander';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { parseTags } from './cmd_backup.ts';
import { withBackend } from './context.ts';
import { printChangedVersion } from './cmd_ls.ts';

/** add-tag / remove-tag UID TAGS: comma-separated; adding is idempotent, removing an absent tag is silent. */
export function register(program: Command): void {
  for (const [name, type, verb] of [
    ['add-tag', 'AddTags', 'Added'],
    ['remove-tag', 'RemoveTags', 'Removed'],
  ] as const) {
    program
      .command(name)
      .description(`${verb.slice(0, -1)} comma-separated tags ${name === 'add-tag' ? 'to' : 'from'} version UID`)
      .argument('<uid>', 'version uid (or a unique prefix)')
      .argument('<tags>', 'comma-separated tags')
      .action(async (uid: string, tags: string, _opts, cmd: Command) => {
        await withBackend(cmd, async (backend, g, log) => {
          const version = await resolveVersion(backend.catalog.reader, uid);
          const after = await backend.catalog.execute({ type, uid: version.uid, tags: parseTags(tags) });
          log.info(`${verb} tags; version ${version.uid} has tags [${after.tags.join(',')}]`);
          printChangedVersion(g, after);
        });
      });
  }
}
