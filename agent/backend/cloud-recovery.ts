import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { Log } from '../ui/log.ts';
import type { Recovery } from './recovery.ts';

/** Cloud recover: not yet (the embedded one comes first). */
export async function openCloudRecovery(_config: Config, _log: Log): Promise<Recovery> {
  throw new Backy2Error(ExitCode.usage, 'recover of a cloud repository is not implemented yet');
}
