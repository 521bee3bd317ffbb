import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { Version } from '../../shared/domain/types.ts';
import type { Backend } from '../backend/backend.ts';
import type { Log } from '../ui/log.ts';
import { BlockCache } from './block-cache.ts';
import { commitCowVersion, startCowVersion } from './cow.ts';
import { ExportSession, RepositoryBlocks, VersionImage } from './export.ts';
import { VersionPins } from './pins.ts';
import type { ExportDescription, ExportProvider, OpenExport } from './server.ts';

export interface ServeOptions {
  /** -r: writes are refused. */
  readOnly: boolean;
  /** -d: writes are kept for the connection only, then dropped. */
  discard: boolean;
  cacheBytes: number;
  readAheadBlocks: number;
  /** Where copy-on-write overlays live while a connection writes. */
  cowDir: string;
  leaseSeconds: number;
  /** Serve only these uids (given on the command line); null: every committed version. */
  only: Set<string> | null;
}

/** The repository as NBD exports: every committed version, by uid or unique uid prefix. */
export class ServedRepository implements ExportProvider {
  readonly blocks: RepositoryBlocks;
  private readonly images = new Map<string, { image: VersionImage; users: number }>();
  private readonly pins: VersionPins;
  private readonly backend: Backend;
  private readonly opts: ServeOptions;
  private readonly log: Log;

  constructor(backend: Backend, opts: ServeOptions, log: Log) {
    this.backend = backend;
    this.opts = opts;
    this.log = log;
    this.blocks = new RepositoryBlocks(
      backend,
      new BlockCache(opts.cacheBytes, { acquire: () => backend.codec.blockBuffer(), release: (m) => backend.codec.releaseBlockBuffer(m) }),
      log,
    );
    this.pins = new VersionPins(backend.catalog, `nbd ${hostname()} pid ${process.pid} ${randomBytes(4).toString('hex')}`, opts.leaseSeconds, log);
  }

  /** The committed version a name means, or null (unknown, ambiguous, pending, failed, removed). */
  async find(name: string): Promise<Version | null> {
    if (!name.trim()) return null;
    try {
      const v = await resolveVersion(this.backend.catalog.reader, name);
      return v.status === 'committed' && this.serves(v) ? v : null;
    } catch (e) {
      if (e instanceof Backy2Error && e.exitCode === ExitCode.notFound) return null;
      throw e;
    }
  }

  async list(): Promise<{ name: string; description: string }[]> {
    const versions = (await this.backend.catalog.reader.listVersions()).filter((v) => v.status === 'committed' && v.valid && this.serves(v));
    return versions.sort((a, b) => a.date.localeCompare(b.date)).map((v) => ({ name: v.uid, description: describe(v) }));
  }

  private serves(v: Version): boolean {
    return this.opts.only === null || this.opts.only.has(v.uid);
  }

  async describe(name: string): Promise<ExportDescription | null> {
    const v = await this.find(name);
    return v && this.description(v);
  }

  private description(v: Version): ExportDescription {
    return { name: v.uid, description: describe(v), size: v.sizeBytes, readOnly: this.readOnly(v), multiConn: this.readOnly(v), preferredBlockSize: 4096 };
  }

  /** An invalid version is served read-only: a copy of it would inherit the block a scrub found bad. */
  private readOnly(v: Version): boolean {
    return this.opts.readOnly || !v.valid;
  }

  async open(name: string, connection: string): Promise<OpenExport | null> {
    const found = await this.find(name);
    if (!found) return null;
    // The lease first, then the check: see VersionLease (shared/domain/cleanup.ts).
    await this.pins.acquire(found.uid);
    const version = await this.backend.catalog.reader.getVersion(found.uid).catch(() => undefined);
    if (!version || version.status !== 'committed') {
      await this.pins.release(found.uid);
      return null;
    }
    if (!version.valid) this.log.warn(`Version ${version.uid} is marked invalid; serving it read-only, every block is verified`);
    const image = this.imageOf(version);
    let cowVersion: Version | null = null;
    const session = new ExportSession(image, {
      readOnly: this.readOnly(version),
      cowDir: this.opts.cowDir,
      isPinned: () => this.pins.isPinned(version.uid),
      beforeFirstWrite: this.opts.discard
        ? async () => this.log.info(`${connection}: first write to ${version.uid}; changes are discarded on disconnect (-d)`)
        : async () => {
            cowVersion = await startCowVersion(this.backend, version, this.log);
          },
    });
    return {
      ...this.description(version),
      session,
      close: () => this.close(version, session, cowVersion, connection),
    };
  }

  private imageOf(version: Version): VersionImage {
    let served = this.images.get(version.uid);
    if (!served) {
      served = { image: new VersionImage(version, this.backend, this.blocks, this.opts.readAheadBlocks), users: 0 };
      this.images.set(version.uid, served);
    }
    served.users++;
    return served.image;
  }

  private async close(version: Version, session: ExportSession, cowVersion: Version | null, connection: string): Promise<void> {
    const overlay = session.overlay;
    try {
      if (overlay && cowVersion) await commitCowVersion(this.backend, version, cowVersion, overlay, this.log);
      else if (overlay) this.log.info(`${connection}: ${overlay.changedBlocks.length} changed blocks discarded`);
    } catch (e) {
      this.log.error(`${connection}: copy-on-write version ${(cowVersion as Version | null)?.uid} was not committed (it is failed): ${(e as Error).message}`);
    } finally {
      await overlay?.destroy();
      const served = this.images.get(version.uid);
      if (served && --served.users === 0) this.images.delete(version.uid);
      await this.pins.release(version.uid);
    }
  }
}

/** What NBD_OPT_LIST and NBD_INFO_DESCRIPTION show: name, snapshot name and date. */
const describe = (v: Version) => `${v.name}${v.snapshotName ? ` (${v.snapshotName})` : ''} ${v.date.replace('T', ' ').replace(/\.\d+Z$/, '')}`;
