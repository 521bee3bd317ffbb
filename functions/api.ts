import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { handleApiRequest } from '../shared/app/api.ts';
import { logger, policy, writerStore } from './commons/deps.ts';

/**
 * Synchronous commands (start, commit, rm, protect, tags, expire, scrub verdicts, touch), invoked
 * with IAM auth. Deployed twice: Api for agents, AdminApi (API_ROLE=admin) which may also force.
 */
const role = process.env['API_ROLE'] === 'admin' ? 'admin' : 'agent';

export const handler = middy(async (request: unknown) => handleApiRequest(request, await writerStore(), policy, role)).use(injectLambdaContext(logger));
