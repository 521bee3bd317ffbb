import { createHash, randomBytes } from 'node:crypto';
import { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import { blockStoreContract } from '../contract/block-store.contract.ts';
import { clientConfig, testStack } from './context.ts';

const located = { sockets: 2, requestTimeoutMs: 30_000, idleTimeoutMs: 10_000 };

/** The same contract as the directory store, against the deployed stack's bucket (keys under contract-<uuid>/). */
blockStoreContract(
  'S3 (deployed stack)',
  async () => new S3BlockStore(new S3Client(clientConfig()), testStack().outputs.BucketName, { locate: located, upload: located }),
  { locates: true },
);

describe('S3 block store: uploads checked against the SHA-256 given', () => {
  it('a body other than the SHA-256 given is refused (BadDigest, after two more attempts) and not stored', async () => {
    const store = new S3BlockStore(new S3Client(clientConfig()), testStack().outputs.BucketName);
    const key = `contract-${randomBytes(6).toString('hex')}/blocks/ab/cd/baddigest`;
    const body = randomBytes(3000);
    const other = createHash('sha256').update('another body').digest('hex');
    await expect(store.putIfAbsent(key, body, { sha256: other })).rejects.toMatchObject({ name: 'BadDigest' });
    expect(await store.get(key)).toBeNull();
  });
});
