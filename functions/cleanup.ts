import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import * as v from 'valibot';
import { runCleanup } from '../shared/app/cleanup.ts';
import { Backy2Error, ExitCode } from '../shared/domain/errors.ts';
import { parse, record } from '../shared/domain/schema.ts';
import { blocks, cleanupGraceSeconds, logger, policy, recoverInProgress, writerStore } from './commons/deps.ts';

/** Two-phase cleanup on schedule; invoked with { force: true } (admin) it ignores the grace period. */
const CleanupRequest = record({ force: v.optional(v.boolean(), false) });

export const handler = middy(async (event: unknown) => {
  const isScheduled = typeof event === 'object' && event !== null && 'source' in event;
  const { force } = parse(CleanupRequest, isScheduled ? {} : (event ?? {}));
  if (await recoverInProgress()) {
    // An incomplete metadata store does not know every block a version needs yet.
    logger.info('a recover is rebuilding the metadata: no cleanup until it is done');
    if (isScheduled) return { ok: true, skipped: 'recover in progress' };
    return { ok: false, exitCode: ExitCode.locked, message: 'A recover is rebuilding the metadata (backy2 recover); cleanup waits until it is done' };
  }
  try {
    const report = await runCleanup(await writerStore(), blocks, {
      force,
      graceSeconds: cleanupGraceSeconds,
      policy,
      concurrency: 16,
      log: (line) => logger.info(line),
    });
    return { ok: true, report };
  } catch (e) {
    if (e instanceof Backy2Error) return { ok: false, exitCode: e.exitCode, message: e.message };
    throw e;
  }
}).use(injectLambdaContext(logger));
