import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { handleApiRequest } from '../shared/app/api.ts';
import { logger, policy, store, writerStore } from './commons/deps.ts';

/**
 * Synchronous commands (start, commit, rm, protect, tags, expire, scrub verdicts, touch), invoked
 * with IAM auth. Deployed twice: Api for agents, AdminApi (API_ROLE=admin) which may also force.
 */
const role = process.env['API_ROLE'] === 'admin' ? 'admin' : 'agent';

// A chunk record that comes with a commit is projected as the ingest function projects it (the agent journaled it).
export const handler = middy(async (request: unknown) => handleApiRequest(request, await writerStore(), policy, role, store)).use(injectLambdaContext(logger));
