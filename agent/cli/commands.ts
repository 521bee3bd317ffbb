import type { Command } from 'commander';

/** A command's module (agent/cli/cmd_*.ts): it adds its command (or commands) to the program. */
export interface CommandModule {
  register(program: Command): void;
}

/**
 * Every command's module, in help order, with the names it registers: loaded on demand, so a
 * command line that names one command loads that module only (a restore does not load nbd,
 * import/export, recover…: ~0.05 s of start-up), and anything else (help, no command, a typo)
 * loads them all, as before.
 */
export const COMMANDS: readonly (readonly [names: readonly string[], load: () => Promise<CommandModule>])[] = [
  [['initdb'], () => import('./cmd_initdb.ts')],
  [['backup'], () => import('./cmd_backup.ts')],
  [['restore'], () => import('./cmd_restore.ts')],
  [['ls'], () => import('./cmd_ls.ts')],
  [['scrub'], () => import('./cmd_scrub.ts')],
  [['rm'], () => import('./cmd_rm.ts')],
  [['cleanup'], () => import('./cmd_cleanup.ts')],
  [['protect', 'unprotect'], () => import('./cmd_protect.ts')],
  [['add-tag', 'remove-tag'], () => import('./cmd_tags.ts')],
  [['expire'], () => import('./cmd_expire.ts')],
  [['rebuild-projections'], () => import('./cmd_rebuild.ts')],
  [['stats'], () => import('./cmd_stats.ts')],
  [['du'], () => import('./cmd_du.ts')],
  [['diff-meta'], () => import('./cmd_diff_meta.ts')],
  [['due'], () => import('./cmd_due.ts')],
  [['sla'], () => import('./cmd_sla.ts')],
  [['enforce'], () => import('./cmd_enforce.ts')],
  [['export'], () => import('./cmd_export.ts')],
  [['import'], () => import('./cmd_import.ts')],
  [['add-key'], () => import('./cmd_add_key.ts')],
  [['rekey'], () => import('./cmd_rekey.ts')],
  [['nbd'], () => import('./cmd_nbd.ts')],
  [['recover'], () => import('./cmd_recover.ts')],
];

/**
 * The command the arguments name: the first that is neither a global option nor -c's value
 * (global options come before the command: the program enables positional options).
 */
export function namedCommand(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return args[i + 1];
    if (arg === '-c' || arg === '--configfile') i++;
    // Short flags combine (-mc FILE): a -c last in the word takes the next argument as its value.
    else if (/^-[^-]/.test(arg)) i += arg.indexOf('c') === arg.length - 1 ? 1 : 0;
    else if (!arg.startsWith('--')) return arg;
  }
  return undefined;
}

/** Registers the command `args` name, or every command when they name none that is known. */
export async function registerCommands(program: Command, args: readonly string[]): Promise<void> {
  const name = namedCommand(args);
  const named = COMMANDS.filter(([names]) => name !== undefined && names.includes(name));
  const modules = await Promise.all((named.length ? named : COMMANDS).map(([, load]) => load()));
  for (const mod of modules) mod.register(program);
}
