import cliProgress from 'cli-progress';
import type { Log } from './log.ts';

/**
 * Progress of long work: a bar with throughput and ETA on a terminal, otherwise backy2's
 * log lines ("Backed up 3/10 blocks (30.0%)"), at most one per 1 % (and per block for small jobs).
 */
export interface Progress {
  tick(done: number, bytes: number): void;
  stop(): void;
}

export function startProgress(verb: string, total: number, log: Log, opts: { bar: boolean; extra?: () => string }): Progress {
  const started = Date.now();
  if (opts.bar && process.stderr.isTTY && log.level !== 'error') {
    const bar = new cliProgress.SingleBar(
      { format: `${verb} [{bar}] {percentage}% | {value}/{total} blocks | {speed} MiB/s | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { speed: '0.0' });
    return {
      tick: (done, bytes) => bar.update(done, { speed: (bytes / 1048576 / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1) }),
      stop: () => bar.stop(),
    };
  }
  let lastPercent = -1;
  return {
    tick(done) {
      const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
      if (percent === lastPercent && done !== total) return;
      lastPercent = percent;
      log.info(`${verb} ${done}/${total} blocks (${((done / Math.max(total, 1)) * 100).toFixed(1)}%)${opts.extra ? opts.extra() : ''}`);
    },
    stop() {},
  };
}
