// PLACEHOLDER (infra wiring): replaced by the real scrub planner over the shared core.
// Records that it ran and queues one message for the scrub worker.
import middy from '@middy/core';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { SQSClient, SendMessageCommand } from '@aws-sdk/client-sqs';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
const sqs = new SQSClient({});

export const handler = middy().handler(async (event: unknown) => {
  const at = new Date().toISOString();
  await ddb.send(new PutCommand({
    TableName: process.env.PROJECTIONS_TABLE,
    Item: { pk: 'placeholder#scrub-planner', sk: at, event: JSON.stringify(event) },
  }));
  await sqs.send(new SendMessageCommand({ QueueUrl: process.env.SCRUB_QUEUE_URL, MessageBody: JSON.stringify({ plannedAt: at }) }));
  return { placeholder: 'scrub-planner', at };
});
