import { type BlockCodec, TransferFailedError } from '../../shared/blocks/codec.ts';
import type { BlockStore, HttpLocation } from '../../shared/ports/block-store.ts';
import type { Log } from '../ui/log.ts';
import { CodecThreadFailures } from './codec-thread-failures.ts';

/**
 * A block store whose block uploads leave from a codec thread: a stored object that the codec
 * encoded into block memory is PUT from there by the thread (BlockStore.locateUpload), so that
 * sending it costs the pipeline's thread nothing (the SDK's PutObject cost it several ms per
 * 4 MiB object: middleware, a SHA-256 of the body for the signature). Everything else, and any
 * upload the thread could not finish, goes through the store itself, with its retries and errors.
 */
export class CodecThreadUploads implements BlockStore {
  private readonly store: BlockStore;
  private readonly codec: BlockCodec;
  private readonly failures: CodecThreadFailures;

  constructor(store: BlockStore, codec: BlockCodec, log: Log) {
    this.store = store;
    this.codec = codec;
    this.failures = new CodecThreadFailures(log, { ing: 'uploading', ed: 'uploaded' });
  }

  async putIfAbsent(key: string, body: Buffer, opts: { sha256?: string } = {}): Promise<boolean> {
    const location = await this.uploadLocation(key, body, opts.sha256);
    if (location) {
      try {
        await this.codec.upload(location, body);
        return true;
      } catch (e) {
        if (!(e instanceof TransferFailedError)) throw e;
        if (e.failure.status === 412) return false;
        // 409 (a concurrent conditional write of the key) is no failure of the thread: putIfAbsent retries it.
        if (e.failure.status !== 409) this.failures.failed(key, e);
      }
    }
    return this.store.putIfAbsent(key, body, opts);
  }

  /** Where the thread PUTs the object, or null: a body not in block memory, no checksum, or too many failures already. */
  private async uploadLocation(key: string, body: Buffer, sha256: string | undefined): Promise<HttpLocation | null> {
    if (!sha256 || !this.failures.tolerated || !this.store.locateUpload || !this.codec.isBlockBuffer(body)) return null;
    return this.store.locateUpload(key, { sha256 });
  }

  put(key: string, body: Buffer): Promise<void> {
    return this.store.put(key, body);
  }

  get(key: string): Promise<Buffer | null> {
    return this.store.get(key);
  }

  getInto(key: string, into: Buffer, opts?: { verifiedByCaller?: boolean }): Promise<Buffer | null> {
    return this.store.getInto(key, into, opts);
  }

  async locate(key: string): Promise<HttpLocation | null> {
    return (await this.store.locate?.(key)) ?? null;
  }

  head(key: string): Promise<number | null> {
    return this.store.head(key);
  }

  delete(key: string): Promise<void> {
    return this.store.delete(key);
  }

  list(prefix: string): AsyncIterable<string> {
    return this.store.list(prefix);
  }
}
