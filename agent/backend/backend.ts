import type { BlockCodec } from '../../shared/blocks/codec.ts';
import type { Config } from '../../shared/config/config.ts';
import type { CleanupReport } from '../../shared/app/cleanup.ts';
import type { AddKeyResult, RekeyOptions, RekeyReport } from '../../shared/app/rekey.ts';
import type { Policy } from '../../shared/domain/version.ts';
import type { BlockStore } from '../../shared/ports/block-store.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';

/** What every command works with: one interface, two backends (embedded and cloud). */
export interface Backend {
  readonly kind: 'embedded' | 'cloud';
  readonly config: Config;
  readonly policy: Policy;
  readonly catalog: Catalog;
  readonly blocks: BlockStore;
  readonly codec: BlockCodec;
  /**
   * Runs cleanup; `force` ignores the grace period under the repository lock. The cloud backend
   * invokes the cleanup function, or with `local` runs it on this host (needs AdminPolicy).
   */
  cleanup(force: boolean, log: (line: string) => void, local?: boolean): Promise<CleanupReport>;
  /** Key rotation: adds a master key to the key ring (cloud: needs AdminPolicy). Both backends have it; test doubles may not. */
  addKey?(newMaster: Buffer): Promise<AddKeyResult>;
  /** Key rotation: re-encrypts what older keys wrote under the configured key (cloud: on this host, needs AdminPolicy). */
  rekey?(opts: RekeyOptions): Promise<RekeyReport>;
  /**
   * The error a user should see for `e`, when this backend knows what failed (which path is its
   * data directory or database, which service): one line and a documented exit code. Else `e`.
   */
  explain?(e: unknown): unknown;
  close(): Promise<void>;
}

export const policyOf = (config: Config): Policy => ({
  minAgeDaysForRm: config.minAgeDaysForRm,
  maxBackupAgeSeconds: config.maxBackupAgeSeconds,
});
