// PLACEHOLDER (infra wiring): replaced by the real retention handler over the shared core.
// Records that it ran, with the event it was given.
import middy from '@middy/core';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));

export const handler = middy().handler(async (event: unknown) => {
  const at = new Date().toISOString();
  await ddb.send(new PutCommand({
    TableName: process.env.PROJECTIONS_TABLE,
    Item: { pk: 'placeholder#retention', sk: at, event: JSON.stringify(event) },
  }));
  return { placeholder: 'retention', at };
});
