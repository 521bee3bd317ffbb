import { Command, CommanderError } from 'commander';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { classifyLastResort } from '../../shared/adapters/faults.ts';
import { globals, logFor } from './context.ts';
import { registerCommands } from './commands.ts';

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

await registerCommands(program, process.argv.slice(2));

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
