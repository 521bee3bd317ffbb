import type { Command } from 'commander';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { withBackend } from './context.ts';
import { printChangedVersion } from './cmd_ls.ts';

/** protect / unprotect UID: a protected version cannot be removed. */
export function register(program: Command): void {
  for (const [name, type, verb] of [
    ['protect', 'ProtectVersion', 'Protected'],
    ['unprotect', 'UnprotectVersion', 'Unprotected'],
  ] as const) {
    program
      .command(name)
      .description(`${verb.slice(0, -2)} version UID`)
      .argument('<uid>', 'version uid (or a unique prefix)')
      .action(async (uid: string, _opts, cmd: Command) => {
        await withBackend(cmd, async (backend, g, log) => {
          const version = await resolveVersion(backend.catalog.reader, uid);
          const after = await backend.catalog.execute({ type, uid: version.uid });
          log.info(`${verb} version ${version.uid}`);
          printChangedVersion(g, after);
        });
      });
  }
}
