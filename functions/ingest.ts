import middy from '@middy/core';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { ingestBlockRecord } from '../shared/app/ingest.ts';
import { logger, store } from './commons/deps.ts';

/** Block-map chunk records from the queue; each record succeeds or fails alone (partial batch response). */
const processor = new BatchProcessor(EventType.SQS);
const recordHandler = async (record: SQSRecord) => {
  const isNew = await ingestBlockRecord(record.body, store);
  if (!isNew) logger.info('duplicate block record ignored', { messageId: record.messageId });
};

export const handler = middy<SQSEvent, SQSBatchResponse>()
  .use(injectLambdaContext(logger))
  .handler((event: SQSEvent, context: Context) => processPartialResponse(event, recordHandler, processor, { context }));
