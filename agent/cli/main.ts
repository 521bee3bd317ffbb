import { Command, CommanderError } from 'commander';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { classifyLastResort } from '../../shared/adapters/faults.ts';
import { globals, logFor } from './context.ts';
import * as initdb from './cmd_initdb.ts';
import * as backup from './cmd_backup.ts';
import * as restore from './cmd_restore.ts';
import * as ls from './cmd_ls.ts';
import * as scrub from './cmd_scrub.ts';
import * as rm from './cmd_rm.ts';
import * as cleanup from './cmd_cleanup.ts';
import * as protect from './cmd_protect.ts';
import * as tags from './cmd_tags.ts';
import * as expire from './cmd_expire.ts';
import * as rebuild from './cmd_rebuild.ts';
import * as stats from './cmd_stats.ts';
import * as du from './cmd_du.ts';
import * as diffMeta from './cmd_diff_meta.ts';
import * as due from './cmd_due.ts';
import * as sla from './cmd_sla.ts';
import * as enforce from './cmd_enforce.ts';
import * as exportCmd from './cmd_export.ts';
import * as importCmd from './cmd_import.ts';
import * as addKey from './cmd_add_key.ts';
import * as rekey from './cmd_rekey.ts';
import * as nbd from './cmd_nbd.ts';
import * as recover from './cmd_recover.ts';

const VERSION = '0.1.0';

const program = new Command('backy2')
  .description('Block-based, deduplicating, encrypted backup of block devices and images (backy2-compatible)')
  .enablePositionalOptions()
  .option('-c, --configfile <file>', 'use this config file only')
  .option('-m, --machine-output', 'machine-readable output (| separated); console log shows errors only')
  .option('-s, --skip-header', 'omit the header row of tables')
  .option('-r, --human-readable', 'byte counts in KiB/MiB/GiB')
  .option('-v, --verbose', 'verbose output')
  .option('-d, --debug', 'debug output')
  .option('--json', 'JSON output for scripts')
  .version(VERSION, '-V, --version')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

const commands = [
  initdb,
  backup,
  restore,
  ls,
  scrub,
  rm,
  cleanup,
  protect,
  tags,
  expire,
  rebuild,
  stats,
  du,
  diffMeta,
  due,
  sla,
  enforce,
  exportCmd,
  importCmd,
  addKey,
  rekey,
  nbd,
  recover,
];
for (const command of commands) command.register(program);

try {
  await program.parseAsync(process.argv);
  const log = logFor(globals(program));
  log.info('Backy complete.');
  process.exitCode = process.exitCode ?? ExitCode.ok;
} catch (e) {
  process.exitCode = exitCodeOf(e);
}

function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) {
    // --help and --version are successes; anything else is a usage error (backy2: 1).
    return e.exitCode === 0 ? 0 : ExitCode.usage;
  }
  const g = globals(program);
  const log = logFor(g);
  // What no adapter classified: an operating-system or SQLite error still gets its one line and code.
  const known = e instanceof Backy2Error ? e : classifyLastResort(e);
  if (known) {
    log.error(known.message);
    if (known !== e && e instanceof Error) log.debug(e.stack ?? String(e));
    if (known.exitCode !== ExitCode.scrubErrors) log.info('Backy failed.');
    return known.exitCode;
  }
  // A bug: the stack trace is for the report, so it comes with -d only.
  const err = e as Error;
  log.error(
    `Unexpected exception: ${g.debug ? (err?.stack ?? String(e)) : `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`} (a bug: please report it with the output of -d)`,
  );
  log.info('Backy failed.');
  return ExitCode.unexpected;
}
