import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { Log } from '../ui/log.ts';
import type { Backend } from './backend.ts';

export async function openCloudBackend(config: Config, _log: Log, _opts: { initdb?: boolean }): Promise<Backend> {
  throw new Backy2Error(ExitCode.cloud, `Cloud backend for stack ${config.aws?.stackName} is not available in this build`);
}
