import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { metadataStoreContract } from '../contract/metadata-store.contract.ts';
import { clientConfig, testStack } from './context.ts';

/** The same contract as the SQLite store, against the deployed stack's tables. */
metadataStoreContract(
  'DynamoDB (deployed stack)',
  async () => {
    const stack = testStack();
    const db = DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig()), { marshallOptions: { removeUndefinedValues: true } });
    return new DynamoMetadataStore(db, { eventsTable: stack.outputs.EventsTableName, projectionsTable: stack.outputs.ProjectionsTableName });
  },
  { propertyRuns: 50 },
);
