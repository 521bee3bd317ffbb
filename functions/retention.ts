import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { runRetention } from '../shared/app/retention.ts';
import { logger, policy, store } from './commons/deps.ts';

/** Scheduled: removes expired, unprotected versions (their blocks go at a later cleanup). */
export const handler = middy(async () => {
  const removed = await runRetention(store, policy);
  logger.info('retention run', { removed });
  return { removed };
}).use(injectLambdaContext(logger));
