// The cloud step's baseline as a fresh process, as every run of ours is one: Node starts, loads
// the S3 client of the AWS SDK, then puts (or gets) COUNT 4 MiB objects at CONCURRENCY through a
// keep-alive pool. Plain JavaScript: no type stripping, nothing of ours loaded.
//   node test/bench/cloud-baseline.js put|get ENDPOINT REGION BUCKET PREFIX COUNT CONCURRENCY
import { Agent } from 'node:http';
import { randomBytes } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pLimit from 'p-limit';

const [op, endpoint, region, bucket, prefix, count, concurrency] = process.argv.slice(2);
const agent = new Agent({ keepAlive: true, maxSockets: 2 * Number(concurrency) });
const s3 = new S3Client({ region, endpoint, forcePathStyle: true, requestHandler: { httpAgent: agent } });
const limit = pLimit(Number(concurrency));
const body = op === 'put' ? randomBytes(4 * 1024 * 1024) : undefined;
const one = async (i) => {
  const Key = `${prefix}/${i}`;
  if (body) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body, IfNoneMatch: '*' }));
  else await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key }))).Body.transformToByteArray();
};
await Promise.all(Array.from({ length: Number(count) }, (_, i) => limit(() => one(i))));
s3.destroy();
