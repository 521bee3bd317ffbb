import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { runRetention } from '../shared/app/retention.ts';
import { retentionPolicyFromJson } from '../shared/domain/retention-rules.ts';
import { logger, policy, store } from './commons/deps.ts';

/** The per-name policy deployed with the stack (`[retention]` / context `retention`); validated at cold start. */
const byName = retentionPolicyFromJson(process.env['RETENTION_POLICY']);

/** Scheduled: removes expired versions and applies the per-name policy (their blocks go at a later cleanup). */
export const handler = middy(async () => {
  const run = await runRetention(store, policy, () => new Date(), byName);
  logger.info('retention run', { ...run });
  return run;
}).use(injectLambdaContext(logger));
