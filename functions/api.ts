// PLACEHOLDER (infra wiring): replaced by the real api handler over the shared core.
// Answers every invocation with what it sees, so the stack's wiring can be tested.
import middy from '@middy/core';

const ENV_KEYS = ['BUCKET_NAME', 'EVENTS_TABLE', 'PROJECTIONS_TABLE', 'BLOCK_QUEUE_URL', 'SCRUB_QUEUE_URL',
  'CLEANUP_GRACE_SECONDS', 'MAX_BACKUP_AGE_SECONDS', 'API_ROLE', 'AWS_REGION', 'AWS_ENDPOINT_URL', 'AWS_LAMBDA_FUNCTION_NAME'];

export const handler = middy().handler(async (event: unknown) => ({
  placeholder: 'api',
  node: process.version,
  arch: process.arch,
  env: Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k] ?? null])),
  event,
}));
