import {
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { RetryStrategyV2, RetryToken, SdkError } from '@smithy/types';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlockStore, HttpLocation } from '../../ports/block-store.ts';
import { copyInto } from '../../blocks/codec-sync.ts';

/**
 * Blocks in S3. Uploads use If-None-Match: *, so hosts never overwrite each other's objects;
 * the agent's policy has no s3:DeleteObject, only the cleanup function deletes.
 */
export class S3BlockStore implements BlockStore {
  private readonly s3: S3Client;
  private readonly bucket: string;
  private readonly located: Omit<HttpLocation, 'url'> | undefined;
  private readonly uploads: Omit<HttpLocation, 'url'> | undefined;
  private presigner: Promise<typeof import('@aws-sdk/s3-request-presigner')> | undefined;
  /**
   * `locate`: locate() gives presigned GET URLs, to be read with these connections and timeouts
   * (otherwise null); `upload`: locateUpload() gives presigned PUT URLs, likewise.
   */
  constructor(s3: S3Client, bucket: string, opts: { locate?: Omit<HttpLocation, 'url'>; upload?: Omit<HttpLocation, 'url'> } = {}) {
    this.s3 = s3;
    this.bucket = bucket;
    this.located = opts.locate;
    this.uploads = opts.upload;
  }

  /**
   * A presigned GetObject URL: signed here with the client's credentials (through its middleware,
   * so a renamed bucket is followed), valid for LOCATION_SECONDS; a thread that GETs it needs no
   * credentials or SDK.
   */
  async locate(key: string): Promise<HttpLocation | null> {
    if (!this.located) return null;
    const url = await this.presign(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    return { url, ...this.located };
  }

  /**
   * A presigned PutObject URL with what putIfAbsent sends as headers: If-None-Match: * and the
   * body's SHA-256 (S3 refuses a body that differs: BadDigest). Both are signed, so the PUT must
   * carry them; the checksum stays a header (not hoisted into the URL), where S3 checks the body
   * against it. Null when the URL is signed with a header this does not know (a newer SDK's
   * addition): the upload then goes through the client, which sends what it signs.
   */
  async locateUpload(key: string, { sha256 }: { sha256: string }): Promise<HttpLocation | null> {
    if (!this.uploads) return null;
    const headers = { 'if-none-match': '*', 'x-amz-checksum-sha256': Buffer.from(sha256, 'hex').toString('base64') };
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, IfNoneMatch: '*', ChecksumSHA256: headers['x-amz-checksum-sha256'] });
    const url = await this.presign(command, { unhoistableHeaders: new Set(['x-amz-checksum-sha256']) });
    const signed = new URL(url).searchParams.get('X-Amz-SignedHeaders')?.split(';') ?? [];
    if (signed.some((h) => h !== 'host' && !(h in headers))) return null;
    return { url, headers, ...this.uploads };
  }

  /** A presigned URL for the command: the presigner is loaded on first use (commands that locate nothing never load it). */
  private async presign(command: GetObjectCommand | PutObjectCommand, opts: { unhoistableHeaders?: Set<string> } = {}): Promise<string> {
    this.presigner ??= import('@aws-sdk/s3-request-presigner');
    const { getSignedUrl } = await this.presigner;
    return getSignedUrl(this.s3, command, { expiresIn: LOCATION_SECONDS, ...opts });
  }

  async putIfAbsent(key: string, body: Buffer, opts: { sha256?: string } = {}): Promise<boolean> {
    // With the body's SHA-256 given, S3 checks the upload against it, and the SDK computes no
    // CRC32 of its own on the main thread (it adds none where a checksum header is present).
    const checksum = opts.sha256 ? { ChecksumSHA256: Buffer.from(opts.sha256, 'hex').toString('base64') } : {};
    for (let attempt = 0; ; attempt++) {
      try {
        await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, IfNoneMatch: '*', ...checksum }));
        return true;
      } catch (e) {
        const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (status === 412) return false;
        // 409: a concurrent conditional write of the same key is in flight; retry decides.
        if (status === 409 && attempt < 5) continue;
        // The body arrived other than it was sent (damaged on its way): sent again, twice at most.
        if ((e as Error).name === 'BadDigest' && attempt < 2) continue;
        throw e;
      }
    }
  }

  async put(key: string, body: Buffer): Promise<void> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body }));
  }

  async get(key: string): Promise<Buffer | null> {
    return this.getObject(key, { checksum: true }, async (out) => Buffer.from(await out.Body!.transformToByteArray()));
  }

  async getInto(key: string, into: Buffer, opts: { verifiedByCaller?: boolean } = {}): Promise<Buffer | null> {
    return this.getObject(key, { checksum: !opts.verifiedByCaller }, async (out) => {
      if ((out.ContentLength ?? 0) > into.length) return Buffer.from(await out.Body!.transformToByteArray());
      let got = 0;
      const chunks: Buffer[] = [];
      for await (const chunk of out.Body as AsyncIterable<Uint8Array>) {
        // Longer than announced: the rest is kept apart and the whole object returned on its own.
        if (chunks.length || got + chunk.length > into.length) chunks.push(Buffer.from(chunk));
        else {
          // Not into.set(): into shared memory that copies with atomics, byte by byte (copyInto).
          copyInto(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length), into, got);
          got += chunk.length;
        }
      }
      return chunks.length ? Buffer.concat([into.subarray(0, got), ...chunks]) : into.subarray(0, got);
    });
  }

  /**
   * A GetObject, its body consumed by `read`. The SDK retries a request until its answer's headers
   * arrive; a body that then stalls (the client's idle timeout fires) or breaks off is outside
   * those retries, so it is asked for again here through the client's own retry strategy: the same
   * backoff with jitter, attempts, retry quota and warning.
   */
  private async getObject<T>(key: string, { checksum }: { checksum: boolean }, read: (out: GetObjectCommandOutput) => Promise<T>): Promise<T | null> {
    let strategy: RetryStrategyV2 | undefined;
    let token: RetryToken | undefined;
    for (;;) {
      let out: GetObjectCommandOutput;
      try {
        // ChecksumMode: the response's CRC is validated (on a client made with
        // responseChecksumValidation WHEN_REQUIRED, only where asked; otherwise always).
        out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(checksum ? { ChecksumMode: 'ENABLED' as const } : {}) }));
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
      try {
        const result = await read(out);
        if (token) strategy!.recordSuccess(token);
        return result;
      } catch (e) {
        if (!isBrokenBody(e)) throw e;
        strategy ??= await this.retryStrategy();
        if (!strategy) throw e;
        try {
          token = await strategy.refreshRetryTokenForRetry(token ?? (await strategy.acquireInitialRetryToken('s3-body')), {
            errorType: 'TRANSIENT',
            error: e as SdkError,
          });
        } catch {
          // Out of attempts (or of the retry quota): the body's own error, with the attempts made, as the SDK's errors carry them.
          throw Object.assign(e as object, { $metadata: { attempts: (token?.getRetryCount() ?? 0) + 1 } });
        }
        // Strategies that leave the wait to their caller give it in the token (the standard one has waited).
        await sleep(token.getRetryDelay());
      }
    }
  }

  /** The client's retry strategy, if it is one that hands out retry tokens. */
  private async retryStrategy(): Promise<RetryStrategyV2 | undefined> {
    const strategy = await (this.s3.config.retryStrategy as () => Promise<unknown>)();
    return strategy && typeof strategy === 'object' && 'refreshRetryTokenForRetry' in strategy ? (strategy as RetryStrategyV2) : undefined;
  }

  async head(key: string): Promise<number | null> {
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.ContentLength ?? 0;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async *list(prefix: string): AsyncIterable<string> {
    let token: string | undefined;
    do {
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) yield o.Key;
      token = page.NextContinuationToken;
    } while (token);
  }
}

/** A located object is read at once: its URL need not outlive a slow read by much. */
const LOCATION_SECONDS = 15 * 60;

/** Errors of a body that stalled (the idle timeout) or broke off after the answer's headers. */
const BROKEN_BODY_CODES = ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_PREMATURE_CLOSE'];
const isBrokenBody = (e: unknown) => {
  const err = e as { name?: string; code?: string; message?: string };
  return err.name === 'TimeoutError' || BROKEN_BODY_CODES.includes(err.code ?? '') || err.message === 'aborted';
};

const isNotFound = (e: unknown) => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === 'NoSuchKey' || err.name === 'NotFound' || err.$metadata?.httpStatusCode === 404;
};
