import type { BlockFailure } from '../domain/scrub.ts';

/** Progress of a fanned-out cloud scrub: one record per scrub, one result per batch. */
export interface ScrubStatus {
  scrubId: string;
  uid: string;
  batches: number;
  doneBatches: number;
  finished: boolean;
  checked: number;
  failures: BlockFailure[];
}

export interface ScrubLedger {
  create(scrubId: string, uid: string, batches: number, percent: number): Promise<void>;
  /** Stores a batch's result once; returns true when it was the last outstanding batch. */
  recordBatch(scrubId: string, batch: number, verified: string[], failures: BlockFailure[]): Promise<boolean>;
  results(scrubId: string): Promise<{ verified: string[]; failures: BlockFailure[]; percent: number; uid: string }>;
  finish(scrubId: string, checked: number, failures: BlockFailure[]): Promise<void>;
  status(scrubId: string): Promise<ScrubStatus | undefined>;
}
