import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { InvokeCommand } from '@aws-sdk/client-lambda';
import { runRetention } from '../shared/app/retention.ts';
import { Backy2Error, ExitCode } from '../shared/domain/errors.ts';
import { retentionPolicyFromJson } from '../shared/domain/retention-rules.ts';
import type { VersionCommand } from '../shared/domain/version.ts';
import { clients, logger, policy, recoverInProgress, store } from './commons/deps.ts';

/** The per-name policy deployed with the stack (`[retention]` / context `retention`); validated at cold start. */
const byName = retentionPolicyFromJson(process.env['RETENTION_POLICY']);
const adminApi = process.env['ADMIN_API_FUNCTION_NAME'];

/**
 * Removals go through the admin api, which journals them (recover keeps them removed): this
 * function touches no object itself. Refusals come back as the same errors as in-process.
 */
async function throughAdminApi(command: VersionCommand): Promise<unknown> {
  const out = await clients.lambda.send(new InvokeCommand({ FunctionName: adminApi, Payload: Buffer.from(JSON.stringify({ kind: 'command', command })) }));
  const text = out.Payload ? Buffer.from(out.Payload).toString() : 'null';
  if (out.FunctionError) throw new Error(`admin api failed: ${text.slice(0, 500)}`);
  const answer = JSON.parse(text) as { ok: boolean; exitCode?: number; message?: string; version?: unknown };
  if (!answer.ok) throw new Backy2Error((answer.exitCode ?? ExitCode.unexpected) as ExitCode, answer.message ?? 'refused');
  return answer.version;
}

/** Scheduled: removes expired versions and applies the per-name policy (their blocks go at a later cleanup). */
export const handler = middy(async () => {
  if (await recoverInProgress()) {
    logger.info('a recover is rebuilding the metadata: this retention run is skipped');
    return { removed: [], refused: [], skipped: 'recover in progress' };
  }
  const run = await runRetention(store, policy, () => new Date(), byName, adminApi ? throughAdminApi : undefined);
  logger.info('retention run', { ...run });
  return run;
}).use(injectLambdaContext(logger));
