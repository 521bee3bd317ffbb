import type { Command } from 'commander';
import { enforceRetention, type RetentionOutcome } from '../../shared/app/retention.ts';
import { formatDateTime } from '../../shared/domain/dates.ts';
import { usageError } from '../../shared/domain/errors.ts';
import { parseRules, rulesFor } from '../../shared/domain/retention-rules.ts';
import { humanBytes, renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

const columns = (human: boolean): Column<RetentionOutcome>[] => [
  { name: 'date', align: 'l', value: (o) => formatDateTime(o.version.date) },
  { name: 'name', align: 'l', value: (o) => o.version.name },
  { name: 'size_bytes', align: 'r', value: (o) => (human ? humanBytes(o.version.sizeBytes) : o.version.sizeBytes) },
  { name: 'uid', align: 'l', value: (o) => o.version.uid },
  { name: 'action', align: 'l', value: (o) => o.action },
  { name: 'reason', align: 'l', value: (o) => o.reason },
];

/** enforce NAME [RULES] [--dry-run]: Benji's retention rules, applied through rm's rules (no force). */
export function register(program: Command): void {
  program
    .command('enforce')
    .description('Remove the versions of NAME that retention RULES (latestN,hoursN,daysN,weeksN,monthsN,yearsN) do not keep')
    .argument('<name>', 'backup name')
    .argument('[rules]', 'e.g. latest3,days7,weeks4,months12 (default: the [retention] entry for NAME, or *)')
    .option('-n, --dry-run', 'list what would be removed; change nothing')
    .action(async (name: string, spec: string | undefined, opts: { dryRun?: boolean }, cmd: Command) => {
      await withBackend(cmd, async (backend, g, log) => {
        const rules = spec !== undefined ? parseRules(spec) : rulesFor(backend.config.retention, name);
        if (!rules) throw usageError(`No retention rules for ${name}: give RULES (e.g. latest3,days7) or a [retention] entry for it (or *) in the config`);
        const versions = (await backend.catalog.reader.listVersions()).filter((v) => v.name === name && v.status !== 'removed');
        const remove = (uid: string) => backend.catalog.execute({ type: 'RemoveVersion', uid, force: false });
        const { outcomes, kept } = await enforceRetention(versions, rules, new Date(), remove, !!opts.dryRun);
        for (const k of kept.filter((k) => k.reason === 'protected' || k.reason.startsWith('invalid')))
          log.info(`Version ${k.version.uid} is ${k.reason}; kept.`);
        const refused = outcomes.filter((o) => o.action === 'refused').length;
        if (refused)
          log.info(`${refused} version(s) refused by rm's rules (e.g. younger than disallow_rm_when_younger_than_days); a later enforce retries them.`);
        if (opts.dryRun) log.info('Dry run: nothing was removed.');
        print(renderRows(columns(g.humanReadable), outcomes, outputMode(g)));
      });
    });
}
