import { createRequire } from 'node:module';
import type { Log } from './log.ts';

/**
 * Progress of long work: on a terminal, a bar with blocks, throughput and ETA; otherwise
 * backy2's log lines ("Backed up 3/10 blocks (30.0%)", at most one per 1 %, and per block for
 * small jobs; scripts parse them, so they keep backy2's form), then one line with the average
 * throughput. Throughput and ETA count bytes, not blocks: sparse blocks cost nearly nothing.
 */
export interface Progress {
  tick(done: number, bytes: number): void;
  stop(): void;
}

export interface ProgressOptions {
  bar: boolean;
  extra?: () => string;
  /** Bytes the whole job covers (for the ETA); without it the ETA counts blocks. */
  totalBytes?: number;
}

const MiB = 1024 * 1024;

/** cli-progress (18 modules) only when a bar is drawn: scripts, cron and the bench never draw one. */
const loadCliProgress = (): typeof import('cli-progress') => createRequire(import.meta.url)('cli-progress');

/** Seconds as m:ss or h:mm:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const [h, m, sec] = hms.map((n) => String(n).padStart(2, '0'));
  return hms[0] ? `${Number(h)}:${m}:${sec}` : `${Number(m)}:${sec}`;
}

/** Throughput (MiB/s) and remaining time from what is done so far. */
export function rate(elapsedSeconds: number, done: number, total: number, bytes: number, totalBytes?: number): { mibPerSecond: number; etaSeconds: number } {
  const elapsed = Math.max(0.001, elapsedSeconds);
  const mibPerSecond = bytes / MiB / elapsed;
  const fraction = totalBytes ? bytes / totalBytes : total ? done / total : 1;
  const etaSeconds = fraction >= 1 ? 0 : fraction <= 0 ? Infinity : (elapsed / fraction) * (1 - fraction);
  return { mibPerSecond, etaSeconds };
}

export function startProgress(verb: string, total: number, log: Log, opts: ProgressOptions): Progress {
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  let lastBytes = 0;
  const summary = () => {
    if (lastBytes > 0) log.info(`${(lastBytes / MiB).toFixed(1)} MiB in ${elapsed().toFixed(1)} s (${(lastBytes / MiB / elapsed()).toFixed(1)} MiB/s)`);
  };
  if (opts.bar && process.stderr.isTTY && log.level !== 'error') {
    const cliProgress = loadCliProgress();
    const bar = new cliProgress.SingleBar(
      { format: `${verb} [{bar}] {percentage}% | {value}/{total} blocks | {speed} MiB/s | ETA {remaining}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { speed: '0.0', remaining: '?' });
    return {
      tick: (done, bytes) => {
        lastBytes = bytes;
        const r = rate(elapsed(), done, total, bytes, opts.totalBytes);
        bar.update(done, { speed: r.mibPerSecond.toFixed(1), remaining: formatDuration(r.etaSeconds) });
      },
      stop: () => bar.stop(),
    };
  }
  let lastPercent = -1;
  return {
    tick(done, bytes) {
      lastBytes = bytes;
      const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
      if (percent === lastPercent && done !== total) return;
      lastPercent = percent;
      log.info(`${verb} ${done}/${total} blocks (${((done / Math.max(total, 1)) * 100).toFixed(1)}%)${opts.extra ? opts.extra() : ''}`);
    },
    stop: summary,
  };
}
