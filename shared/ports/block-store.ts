/** Where block objects and manifests live: a directory (embedded) or an S3 bucket (cloud). */
export interface BlockStore {
  /**
   * Stores the object unless one with that key exists; returns false when it already existed.
   * `sha256`: the body's SHA-256 (hex) when the caller has it (a block's stored checksum): a store
   * may have the body checked against it on arrival (S3 refuses a body that differs: BadDigest).
   */
  putIfAbsent(key: string, body: Buffer, opts?: { sha256?: string }): Promise<boolean>;
  /** Overwrites (manifests only; blocks are immutable). */
  put(key: string, body: Buffer): Promise<void>;
  /** The object's bytes, or null when it does not exist. */
  get(key: string): Promise<Buffer | null>;
  /**
   * The object's bytes read into `into` (a pipeline's reusable block memory) and returned as a
   * view of it; an object larger than `into` comes back in a buffer of its own. Null when it does
   * not exist. `verifiedByCaller`: the caller verifies every byte itself and reads again on a
   * mismatch (a restore: AES-GCM and the keyed id), so a store may skip a transport checksum of its
   * own (S3's CRC of the response, computed on the agent's main thread).
   */
  getInto(key: string, into: Buffer, opts?: { verifiedByCaller?: boolean }): Promise<Buffer | null>;
  /**
   * Where another thread may read the object by itself with a plain HTTP GET (S3: a presigned
   * URL), so that receiving a block does not load the pipeline's thread; null (or no method):
   * read it with getInto. A read there that fails is read again with getInto, whose retries and
   * errors are the store's.
   */
  locate?(key: string): Promise<HttpLocation | null>;
  /**
   * Where another thread may upload a new object by itself with a plain HTTP PUT of `body` bytes
   * (S3: a presigned PutObject URL, signed with If-None-Match: * and the body's SHA-256, which the
   * PUT must send as `headers`): 200 means stored, 412 that an object with that key exists, as
   * putIfAbsent's true and false. Null (or no method): upload with putIfAbsent. Any other
   * answer is for putIfAbsent to handle, whose retries and errors are the store's.
   */
  locateUpload?(key: string, opts: { sha256: string }): Promise<HttpLocation | null>;
  /** The object's size, or null when it does not exist. */
  head(key: string): Promise<number | null>;
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<string>;
  /** A store that writes through temporary files removes those whose writer is gone (never one being written). */
  removeStaleTemporaries?(opts?: { legacy?: boolean }): Promise<{ files: number; bytes: number }>;
}

/** An object to GET or PUT over HTTP(S) as it is (BlockStore.locate, locateUpload), and how patiently. */
export interface HttpLocation {
  url: string;
  /** Headers the request must carry as they are (those signed with the URL). */
  headers?: Record<string, string>;
  /** Connections the reading thread keeps open (keep-alive), at most. */
  sockets: number;
  /** The whole GET may take this long; a connection silent for `idleTimeoutMs` is abandoned. */
  requestTimeoutMs: number;
  idleTimeoutMs: number;
}
