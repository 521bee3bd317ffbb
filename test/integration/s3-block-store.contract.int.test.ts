import { S3Client } from '@aws-sdk/client-s3';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import { blockStoreContract } from '../contract/block-store.contract.ts';
import { clientConfig, testStack } from './context.ts';

/** The same contract as the directory store, against the deployed stack's bucket (keys under contract-<uuid>/). */
blockStoreContract('S3 (deployed stack)', async () => new S3BlockStore(new S3Client(clientConfig()), testStack().outputs.BucketName));
