// PLACEHOLDER (infra wiring): replaced by the real scrub worker over the shared core.
// Records every scrub message it receives.
import middy from '@middy/core';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));

export const handler = middy<SQSEvent, SQSBatchResponse>().handler(async (event) => {
  for (const record of event.Records) {
    await ddb.send(new PutCommand({
      TableName: process.env.PROJECTIONS_TABLE,
      Item: { pk: 'placeholder#scrub-worker', sk: record.messageId, body: record.body },
    }));
  }
  return { batchItemFailures: [] };
});
