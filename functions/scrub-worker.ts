import middy from '@middy/core';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { runScrubBatch, ScrubBatchSchema } from '../shared/app/cloud-scrub.ts';
import { parse } from '../shared/domain/schema.ts';
import { blocks, logger, policy, scrubLedger, writerStore } from './commons/deps.ts';

/** Verifies one batch of stored blocks without the key (existence, size, ciphertext checksum). */
const processor = new BatchProcessor(EventType.SQS);
const recordHandler = async (record: SQSRecord) =>
  runScrubBatch(parse(ScrubBatchSchema, JSON.parse(record.body)), await writerStore(), blocks, scrubLedger, policy);

export const handler = middy<SQSEvent, SQSBatchResponse>()
  .use(injectLambdaContext(logger))
  .handler((event: SQSEvent, context: Context) => processPartialResponse(event, recordHandler, processor, { context }));
