import type { Log } from '../ui/log.ts';

/**
 * The one rule for transfers the codec threads make themselves (reads: restore, scrub, nbd;
 * uploads: backup): a failure is a warning and that block goes through the store instead (its
 * retries, its errors); after TOLERATED failures the rest of the command goes through the store.
 */
export class CodecThreadFailures {
  private count = 0;
  private readonly log: Log;
  private readonly verb: { ing: string; ed: string };
  /** `verb`: the transfer's words, e.g. { ing: 'reading', ed: 'read' }. */
  constructor(log: Log, verb: { ing: string; ed: string }) {
    this.log = log;
    this.verb = verb;
  }

  /** Whether the codec threads may still try: fewer than TOLERATED failures so far. */
  get tolerated(): boolean {
    return this.count < TOLERATED;
  }

  /** `what` (a block) failed on its codec thread for `why`: a warning, counted. */
  failed(what: string, why: Error): void {
    this.count++;
    const { ing, ed } = this.verb;
    const rest = this.tolerated ? '' : `; the rest of the blocks are ${ed} on the main thread`;
    this.log.warn(`${ing[0]!.toUpperCase()}${ing.slice(1)} ${what} on a codec thread failed, ${why.message}; ${ing} it again${rest}`);
  }
}

const TOLERATED = 3;
