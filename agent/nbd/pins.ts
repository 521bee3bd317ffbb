import type { Catalog } from '../../shared/ports/catalog.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { Log } from '../ui/log.ts';

interface Held {
  users: number;
  ready: Promise<void>;
  /** Local time until which the lease is certainly live (its request was sent before this minus its length). */
  validUntil: number;
  timer: NodeJS.Timeout;
}

/**
 * Keeps a served-version lease (shared/domain/cleanup.ts VersionLease) for every version with a
 * connection, renewed at a third of its length. Reads check `isPinned` first: a server that could
 * not renew (the api unreachable) stops serving blocks rather than rely on an expired lease.
 */
export class VersionPins {
  private readonly held = new Map<string, Held>();
  private readonly catalog: Catalog;
  readonly holder: string;
  private readonly seconds: number;
  private readonly log: Log;

  constructor(catalog: Catalog, holder: string, seconds: number, log: Log) {
    if (!catalog.holdLease || !catalog.dropLease) throw new Backy2Error(ExitCode.unexpected, 'This backend cannot pin served versions');
    this.catalog = catalog;
    this.holder = holder;
    this.seconds = seconds;
    this.log = log;
  }

  async acquire(uid: string): Promise<void> {
    const existing = this.held.get(uid);
    if (existing) {
      existing.users++;
      return existing.ready;
    }
    const held: Held = { users: 1, ready: Promise.resolve(), validUntil: 0, timer: undefined as unknown as NodeJS.Timeout };
    held.ready = this.renew(uid, held);
    held.timer = setInterval(
      () => this.renew(uid, held).catch((e: Error) => this.log.warn(`Could not renew the lease on ${uid}: ${e.message}`)),
      (this.seconds * 1000) / 3,
    );
    held.timer.unref();
    this.held.set(uid, held);
    try {
      await held.ready;
    } catch (e) {
      clearInterval(held.timer);
      this.held.delete(uid);
      throw e;
    }
  }

  private async renew(uid: string, held: Held): Promise<void> {
    const sent = Date.now();
    await this.catalog.holdLease!(uid, this.holder, this.seconds);
    // A margin for the time the request took to arrive and for a slow timer.
    held.validUntil = Math.max(held.validUntil, sent + this.seconds * 1000 - Math.min(10_000, (this.seconds * 1000) / 6));
  }

  isPinned(uid: string): boolean {
    const held = this.held.get(uid);
    return !!held && Date.now() < held.validUntil;
  }

  async release(uid: string): Promise<void> {
    const held = this.held.get(uid);
    if (!held || --held.users > 0) return;
    clearInterval(held.timer);
    this.held.delete(uid);
    await this.catalog.dropLease!(uid, this.holder).catch((e: Error) =>
      this.log.warn(`Could not drop the lease on ${uid} (it expires by itself): ${e.message}`),
    );
  }
}
