import { expect } from 'vitest';
import { Backy2Error, ExitCode } from '../../../shared/domain/errors.ts';

/** Runs `f`, which must refuse with a usage error (exit 1); returns the message. */
export function usageRefusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(Backy2Error);
    expect((e as Backy2Error).exitCode).toBe(ExitCode.usage);
    return (e as Error).message;
  }
  throw new Error('accepted');
}
