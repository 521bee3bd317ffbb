import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { planCloudScrub, ScrubRequestSchema, type ScrubBatch } from '../shared/app/cloud-scrub.ts';
import { parse } from '../shared/domain/schema.ts';
import { clients, logger, resources, scrubLedger, store } from './commons/deps.ts';

/** Plans a scrub (invoked for one version, or on schedule for all) and fans its batches out to the scrub queue. */
const send = async (batches: ScrubBatch[]) => {
  const out = await clients.sqs.send(
    new SendMessageBatchCommand({ QueueUrl: resources.scrubQueueUrl, Entries: batches.map((b, i) => ({ Id: String(i), MessageBody: JSON.stringify(b) })) }),
  );
  if (out.Failed?.length) throw new Error(`Could not queue ${out.Failed.length} scrub batches: ${out.Failed[0]?.Message}`);
};

export const handler = middy(async (event: unknown) => {
  // A scheduled invocation carries an EventBridge envelope: scrub every version at the scheduled percentage.
  const isScheduled = typeof event === 'object' && event !== null && 'source' in event;
  const request = parse(ScrubRequestSchema, isScheduled ? { percent: Number(process.env['SCRUB_PERCENT'] ?? 100) } : event);
  const planned = await planCloudScrub(store, scrubLedger, send, request);
  logger.info('scrub planned', { planned });
  return { planned };
}).use(injectLambdaContext(logger));
