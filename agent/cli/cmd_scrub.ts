import type { Command } from 'commander';
import { Backy2Error, ExitCode, usageError } from '../../shared/domain/errors.ts';
import { runScrub } from '../pipeline/scrub.ts';
import { resolveVersion } from '../../shared/app/resolve.ts';
import type { Backend } from '../backend/backend.ts';
import type { CloudBackend } from '../backend/cloud.ts';
import type { Log } from '../ui/log.ts';
import { print, wantsBar, withBackend } from './context.ts';

/** scrub UID: verifies a version's blocks (all, or -p percent), optionally against the source. */
export function register(program: Command): void {
  program
    .command('scrub')
    .description('Verify the blocks of version UID; exit 20 if any is missing or altered')
    .argument('<uid>', 'version uid (or a unique prefix)')
    .option('-p, --percentile <percent>', 'check each block with this probability (percent)', '100')
    .option('-s, --source <source>', 'also compare with file://SOURCE')
    .option('--in-cloud', 'cloud backend: let the scrub functions verify the stored objects (no key needed, no data leaves AWS)')
    .action(async (uid: string, opts: { percentile: string; source?: string; inCloud?: boolean }, cmd: Command) => {
      const percent = Number(opts.percentile);
      if (!Number.isFinite(percent) || percent <= 0 || percent > 100) throw usageError(`Invalid -p "${opts.percentile}": a percentage in (0, 100]`);
      await withBackend(cmd, async (backend, g, log) => {
        if (opts.inCloud) return scrubInCloud(backend, uid, percent, opts.source, g.json, log);
        const outcome = await runScrub(backend, { uid, percent, sourceUrl: opts.source ?? null }, log, wantsBar(g));
        if (g.json)
          print(
            JSON.stringify({
              uid: outcome.version.uid,
              checked: outcome.checked,
              failures: outcome.failures,
              sourceMismatches: outcome.sourceMismatches,
              invalidated: outcome.invalidated,
            }) + '\n',
          );
        if (outcome.failures.length) throw new Backy2Error(ExitCode.scrubErrors, `Marked version invalid because it has errors: ${outcome.version.uid}`);
        if (outcome.sourceMismatches)
          throw new Backy2Error(ExitCode.scrubErrors, `Version ${outcome.version.uid} differs from the source in ${outcome.sourceMismatches} block(s)`);
        log.info(`Scrub of ${outcome.version.uid} found no errors (${outcome.checked} blocks checked); version is valid`);
      });
    });
}

async function scrubInCloud(backend: Backend, uid: string, percent: number, source: string | undefined, json: boolean, log: Log): Promise<void> {
  if (backend.kind !== 'cloud') throw usageError('--in-cloud needs a config with an [aws] section');
  const cloud = backend as CloudBackend;
  if (source) throw usageError('--in-cloud cannot compare with a source; scrub -s runs on the host');
  const version = await resolveVersion(cloud.catalog.reader, uid);
  const result = await cloud.scrubInCloud(version.uid, percent, log);
  for (const f of result.failures) log.error(`${f.reason}: Block(id=${f.id}, version_uid=${version.uid})`);
  if (json) print(JSON.stringify({ uid: version.uid, checked: result.checked, failures: result.failures }) + '\n');
  if (result.failures.length) throw new Backy2Error(ExitCode.scrubErrors, `Marked version invalid because it has errors: ${version.uid}`);
  log.info(`Cloud scrub of ${version.uid} found no errors (${result.checked} blocks checked)`);
}
