import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { z } from 'zod';
import { runCleanup } from '../shared/app/cleanup.ts';
import { Backy2Error } from '../shared/domain/errors.ts';
import { blocks, cleanupGraceSeconds, logger, policy, store } from './commons/deps.ts';

/** Two-phase cleanup on schedule; invoked with { force: true } (admin) it ignores the grace period. */
const CleanupRequest = z.object({ force: z.boolean().default(false) });

export const handler = middy(async (event: unknown) => {
  const isScheduled = typeof event === 'object' && event !== null && 'source' in event;
  const { force } = CleanupRequest.parse(isScheduled ? {} : (event ?? {}));
  try {
    const report = await runCleanup(store, blocks, { force, graceSeconds: cleanupGraceSeconds, policy, concurrency: 16, log: (line) => logger.info(line) });
    return { ok: true, report };
  } catch (e) {
    if (e instanceof Backy2Error) return { ok: false, exitCode: e.exitCode, message: e.message };
    throw e;
  }
}).use(injectLambdaContext(logger));
