import type { Command } from 'commander';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { parseBackyDate } from '../../shared/domain/dates.ts';
import { withBackend } from './context.ts';
import { printChangedVersion } from './cmd_ls.ts';

/** expire UID DATE: sets the expiry date ("" clears it); retention removes expired versions. */
export function register(program: Command): void {
  program
    .command('expire')
    .description('Set (or with "" clear) the expiry date of version UID')
    .argument('<uid>', 'version uid (or a unique prefix)')
    .argument('<date>', 'YYYY-MM-DD or "YYYY-MM-DD HH:MM:SS"; "" clears')
    .action(async (uid: string, date: string, _opts, cmd: Command) => {
      const expire = date.trim() === '' ? null : parseBackyDate(date, 'expire date');
      await withBackend(cmd, async (backend, g, log) => {
        const version = await resolveVersion(backend.catalog.reader, uid);
        const after = await backend.catalog.execute({ type: 'SetExpiry', uid: version.uid, expire });
        log.info(expire ? `Version ${version.uid} expires ${expire}` : `Version ${version.uid} no longer expires`);
        printChangedVersion(g, after);
      });
    });
}
