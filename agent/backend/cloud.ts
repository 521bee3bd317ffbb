import type { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import type { InvokeCommandOutput } from '@aws-sdk/client-lambda';
import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeLazyClients, s3Timeouts, type LazyAwsClients } from '../../shared/adapters/aws/clients-core.ts';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { DynamoScrubLedger } from '../../shared/adapters/aws/dynamo-scrub-ledger.ts';
import { S3BlockStore } from '../../shared/adapters/aws/s3-block-store.ts';
import type { BlockStore } from '../../shared/ports/block-store.ts';
import { CodecThreadUploads } from './codec-thread-uploads.ts';
import { runCleanup, type CleanupReport } from '../../shared/app/cleanup.ts';
import type { BlockFailure } from '../../shared/domain/scrub.ts';
import { BlockCodec } from '../../shared/blocks/codec.ts';
import { parseMasterKey, type RepositoryKeys } from '../../shared/blocks/keys.ts';
import { addKeyToRing, loadRepositoryKeys, oldMasterKeys, runRekey, type AddKeyResult, type RekeyOptions, type RekeyReport } from '../../shared/app/rekey.ts';
import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode, integrityError } from '../../shared/domain/errors.ts';
import { errnoOf } from '../../shared/adapters/faults.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import type { BlockId, StoredBlock, Version } from '../../shared/domain/types.ts';
import type { Policy, VersionCommand } from '../../shared/domain/version.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { TouchResult } from '../../shared/ports/metadata-store.ts';
import type { Log } from '../ui/log.ts';
import { policyOf, type Backend } from './backend.ts';
import { deriveJournalKey, Journal, journalKeys } from '../../shared/app/journal.ts';
import type { InitializeMiddleware, MetadataBearer } from '@smithy/types';
import { dropCachedOutputs, outputsCacheEnabled, outputsCachePath, readCachedOutputs, writeCachedOutputs, type StackTarget } from './outputs-cache.ts';
import { defaultHome } from './open.ts';
import { journaled } from '../../shared/app/journaled-store.ts';

/** Stack outputs the agent needs; it learns every resource from them. */
const REQUIRED_OUTPUTS = [
  'BucketName',
  'EventsTableName',
  'ProjectionsTableName',
  'BlockQueueUrl',
  'ApiFunctionName',
  'AdminApiFunctionName',
  'ScrubPlannerFunctionName',
  'CleanupFunctionName',
] as const;
type Outputs = Record<(typeof REQUIRED_OUTPUTS)[number], string> & { JournalKeyArn?: string };

const NETWORK_ERRORS = ['ECONNREFUSED', 'ENOTFOUND', 'ECONNRESET', 'ETIMEDOUT', 'EAI_AGAIN', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH'];
/** Error names of AWS services for credentials that expired or are no longer valid. */
const EXPIRED_CREDENTIALS = [
  'ExpiredToken',
  'ExpiredTokenException',
  'RequestExpired',
  'TokenRefreshRequired',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
  'InvalidAccessKeyId',
  'InvalidToken',
];
/** …and for a request refused because of its rate (after the SDK's own retries). */
const THROTTLED = [
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'SlowDown',
  'RequestThrottled',
  'RequestThrottledException',
];

/** Turns SDK failures into one clear line with the cloud exit code. */
export function cloudError(e: unknown, where: string): Backy2Error {
  if (e instanceof Backy2Error) return e;
  const err = e as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number; attempts?: number } };
  const name = err.name ?? '';
  const status = err.$metadata?.httpStatusCode;
  const attempts = err.$metadata?.attempts ? ` after ${err.$metadata.attempts} attempts` : '';
  if (EXPIRED_CREDENTIALS.includes(name))
    return new Backy2Error(
      ExitCode.cloud,
      `The AWS credentials for ${where} expired or are no longer valid (${name}): renew them (new session, aws sso login, instance role) and run the command again`,
    );
  if (name === 'CredentialsProviderError' || /credential/i.test(err.message ?? ''))
    return new Backy2Error(
      ExitCode.cloud,
      `No usable AWS credentials for ${where}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (${err.message})`,
    );
  if (THROTTLED.includes(name) || status === 429)
    return new Backy2Error(
      ExitCode.cloud,
      `AWS throttled ${where}${attempts} (${name || `HTTP ${status}`}): lower simultaneous_writes, raise the service limit, or run the command again later`,
    );
  const code = err.code ?? (e as { cause?: { code?: string } }).cause?.code ?? '';
  // A stalled request: the connection was made, the answer (or the rest of its body) never came.
  if (name === 'TimeoutError' && !/establish(ing)? a connection/.test(err.message ?? ''))
    return new Backy2Error(
      ExitCode.cloud,
      `The AWS endpoint for ${where} stopped answering${attempts} (no answer within ${/(\d+ ms)/.exec(err.message ?? '')?.[1] ?? 'the timeout'}): check the network and the endpoint, then run the command again (BACKY2_S3_TIMEOUT_SECONDS sets the S3 request timeout)`,
    );
  if (NETWORK_ERRORS.includes(code) || name === 'TimeoutError')
    return new Backy2Error(ExitCode.cloud, `Cannot reach the AWS endpoint for ${where}: ${code || name}`);
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || err.$metadata?.httpStatusCode === 403)
    return new Backy2Error(ExitCode.cloud, `Access denied for ${where}: ${err.message}`);
  if (status !== undefined && status >= 500)
    return new Backy2Error(
      ExitCode.storage,
      `${where} failed${attempts} with HTTP ${status} (${name}: ${err.message}): the service is having trouble; run the command again later`,
    );
  return new Backy2Error(ExitCode.storage, `${where} failed${attempts}: ${name}: ${err.message}`);
}

/** An error thrown by the AWS SDK (it carries the request's metadata), as opposed to one of ours or a bug. */
const isSdkError = (e: unknown): boolean => typeof e === 'object' && e !== null && '$metadata' in e;

export async function describeOutputs(cloudformation: CloudFormationClient, stackName: string, where: string): Promise<Outputs> {
  let outputs: { OutputKey?: string; OutputValue?: string }[];
  try {
    const { DescribeStacksCommand } = await import('@aws-sdk/client-cloudformation');
    const out = await cloudformation.send(new DescribeStacksCommand({ StackName: stackName }));
    outputs = out.Stacks?.[0]?.Outputs ?? [];
  } catch (e) {
    if (/does not exist/i.test((e as Error).message ?? ''))
      throw new Backy2Error(ExitCode.cloud, `Stack ${stackName} does not exist in ${where}; deploy it with "npx cdk deploy"`);
    throw cloudError(e, `stack ${stackName}`);
  }
  const byKey = Object.fromEntries(outputs.map((o) => [o.OutputKey, o.OutputValue]));
  const missing = REQUIRED_OUTPUTS.filter((k) => !byKey[k]);
  if (missing.length) throw new Backy2Error(ExitCode.cloud, `Stack ${stackName} lacks outputs ${missing.join(', ')}; is it a backy2 stack?`);
  return byKey as Outputs;
}

/**
 * How long `awaitRecorded` waits before its next read: the last chunk is usually projected within
 * a fraction of a second, so the first reads come fast (50, 100, 200 ms), then every 500 ms.
 */
export const recordPollDelayMs = (polls: number): number => Math.min(500, 25 * 2 ** polls);

const seconds = (since: number) => ((Date.now() - since) / 1000).toFixed(3);

/** Calls one of the stack's functions and unwraps its { ok, … } answer into a result or the same error as embedded mode. */
async function invoke<T>(clients: LazyAwsClients, functionName: string, payload: unknown): Promise<T> {
  let out: InvokeCommandOutput;
  try {
    const [lambda, { InvokeCommand }] = await Promise.all([clients.lambda(), import('@aws-sdk/client-lambda')]);
    out = await lambda.send(
      new InvokeCommand({ FunctionName: functionName, InvocationType: 'RequestResponse', Payload: Buffer.from(JSON.stringify(payload)) }),
    );
  } catch (e) {
    throw cloudError(e, `function ${functionName}`);
  }
  const text = out.Payload ? Buffer.from(out.Payload).toString() : 'null';
  if (out.FunctionError) {
    // A function that ran out of time or memory is an operational limit, not a bug in the agent.
    const operational = /Task timed out|Runtime exited|out of memory|Runtime\.OutOfMemory/i.test(text);
    throw new Backy2Error(operational ? ExitCode.cloud : ExitCode.unexpected, `Function ${functionName} failed: ${text.slice(0, 500)}`);
  }
  const answer = JSON.parse(text) as { ok?: boolean; exitCode?: number; message?: string } & T;
  if (answer && answer.ok === false) throw new Backy2Error((answer.exitCode ?? ExitCode.unexpected) as ExitCode, answer.message ?? 'refused');
  return answer;
}

/** The cloud catalog: commands through the api function, block records through SQS, reads from DynamoDB. */
export class CloudCatalog implements Catalog {
  readonly reader: DynamoMetadataStore;
  private readonly clients: LazyAwsClients;
  private readonly outputs: Outputs;
  private readonly log: Log;
  /** Chunk records are journaled here before they are sent (recover). */
  private readonly journal: Journal | undefined;
  /** Last chunk records journaled by prepareLast, and what journaling them gave. */
  private readonly prepared = new WeakMap<EventOf<'BlocksRecorded'>, Promise<EventOf<'BlocksRecorded'>>>();

  constructor(clients: LazyAwsClients, outputs: Outputs, log: Log, journal?: Journal) {
    this.clients = clients;
    this.outputs = outputs;
    this.log = log;
    this.journal = journal;
    this.reader = new DynamoMetadataStore(clients.dynamo, { eventsTable: outputs.EventsTableName, projectionsTable: outputs.ProjectionsTableName });
  }

  async execute(cmd: VersionCommand): Promise<Version> {
    // Forcing needs the admin api (AdminPolicy); everything else goes through the agent's api.
    const fn = cmd.type === 'RemoveVersion' && cmd.force ? this.outputs.AdminApiFunctionName : this.outputs.ApiFunctionName;
    const started = Date.now();
    const answer = await invoke<{ version: Version }>(this.clients, fn, { kind: 'command', command: cmd });
    this.log.debug(`${cmd.type} ${cmd.uid}: api function answered in ${seconds(started)} s`);
    return answer.version;
  }

  /** Journals the last chunk record ahead of the commit (recordAndCommit then finds it journaled). */
  prepareLast(last: EventOf<'BlocksRecorded'>): Promise<EventOf<'BlocksRecorded'>> {
    const journaling = this.journaled(last);
    this.prepared.set(last, journaling);
    // A resumed run's answer is the record journaled before: recordAndCommit gets that one.
    void journaling.then((record) => this.prepared.set(record, journaling)).catch(() => {});
    return journaling;
  }

  /** Journals the chunk record (recover); a retried or resumed run's journaled record is the one that counts (as embedded). */
  private async journaled(event: EventOf<'BlocksRecorded'>): Promise<EventOf<'BlocksRecorded'>> {
    const prepared = this.prepared.get(event);
    if (prepared) return prepared;
    if (!this.journal || (await this.journal.appendChunk(event))) return event;
    const journaled = await this.journal.read(journalKeys.chunk(event.uid, event.chunk)).catch(() => null);
    return journaled?.type === 'BlocksRecorded' && journaled.uid === event.uid && journaled.chunk === event.chunk ? journaled : event;
  }

  async record(event: EventOf<'BlocksRecorded'>): Promise<void> {
    const started = Date.now();
    const record = await this.journaled(event);
    const journaledAt = Date.now();
    try {
      const [sqs, { SendMessageCommand }] = await Promise.all([this.clients.sqs(), import('@aws-sdk/client-sqs')]);
      await sqs.send(new SendMessageCommand({ QueueUrl: this.outputs.BlockQueueUrl, MessageBody: JSON.stringify(record) }));
    } catch (e) {
      throw cloudError(e, 'the block record queue');
    }
    this.log.debug(`Chunk ${event.chunk} of ${event.uid}: journaled in ${((journaledAt - started) / 1000).toFixed(3)} s, queued in ${seconds(journaledAt)} s`);
  }

  /**
   * The last chunk's record travels with the commit: the api function projects it exactly as the
   * ingest function would (idempotent), then decides the commit, which it accepts only when every
   * chunk is projected. Saves the queue's delivery and the wait for the last chunk.
   */
  async recordAndCommit(last: EventOf<'BlocksRecorded'>, cmd: Extract<VersionCommand, { type: 'CommitVersion' }>): Promise<Version> {
    const started = Date.now();
    const record = await this.journaled(last);
    const journaledAt = Date.now();
    const answer = await invoke<{ version: Version; spentMs?: { record: number; commit: number } }>(this.clients, this.outputs.ApiFunctionName, {
      kind: 'command',
      command: cmd,
      record,
    });
    const spent = answer.spentMs ? ` (in the function: record ${answer.spentMs.record} ms, commit ${answer.spentMs.commit} ms)` : '';
    this.log.debug(
      `Chunk ${last.chunk} of ${cmd.uid}: journaled in ${((journaledAt - started) / 1000).toFixed(3)} s; recorded and committed by the api function in ${seconds(journaledAt)} s${spent}`,
    );
    return answer.version;
  }

  /** Waits for the ingest function to project every chunk; the commit is refused before that. */
  async awaitRecorded(uid: string, chunkCount: number): Promise<void> {
    const timeoutMs = Number(process.env['BACKY2_RECORD_TIMEOUT_SECONDS'] ?? 600) * 1000;
    const started = Date.now();
    let reported = -1;
    if (chunkCount <= 0) return;
    for (let polls = 1; ; polls++) {
      const v = await this.reader.getVersion(uid);
      const recorded = v?.recordedChunks ?? 0;
      if (recorded >= chunkCount) {
        this.log.debug(`${chunkCount} chunks of ${uid} projected: waited ${seconds(started)} s (${polls} reads)`);
        return;
      }
      if (recorded !== reported) {
        this.log.info(`Waiting for block records to be projected: ${recorded}/${chunkCount} chunks`);
        reported = recorded;
      }
      if (Date.now() - started > timeoutMs)
        throw new Backy2Error(
          ExitCode.cloud,
          `Only ${recorded}/${chunkCount} block map chunks of ${uid} were projected within ${timeoutMs / 1000} s; check the ingest function and its dead-letter queue`,
        );
      await sleep(recordPollDelayMs(polls));
    }
  }

  async touch(blocks: StoredBlock[]): Promise<Map<BlockId, TouchResult>> {
    const started = Date.now();
    const answer = await invoke<{ touched: Record<string, TouchResult> }>(this.clients, this.outputs.ApiFunctionName, { kind: 'touch', blocks });
    this.log.debug(`Touch of ${blocks.length} blocks: api function answered in ${seconds(started)} s`);
    return new Map(Object.entries(answer.touched));
  }

  async holdLease(uid: string, holder: string, seconds: number): Promise<void> {
    await invoke(this.clients, this.outputs.ApiFunctionName, { kind: 'lease', uid, holder, seconds });
  }

  async dropLease(uid: string, holder: string): Promise<void> {
    await invoke(this.clients, this.outputs.ApiFunctionName, { kind: 'release', uid, holder });
  }

  async close(): Promise<void> {}
}

export class CloudBackend implements Backend {
  readonly kind = 'cloud' as const;
  readonly config: Config;
  readonly policy: Policy;
  readonly catalog: CloudCatalog;
  readonly blocks: BlockStore;
  readonly codec: BlockCodec;
  private readonly clients: LazyAwsClients;
  private readonly outputs: Outputs;
  private readonly stackName: string;
  readonly journal: Journal;
  /** Reads the stack's outputs again when they came from the cache: the writes that no function call precedes check them first. */
  private readonly confirmOutputs: () => Promise<void>;

  constructor(config: Config, clients: LazyAwsClients, outputs: Outputs, keys: RepositoryKeys, log: Log, confirmOutputs: () => Promise<void> = async () => {}) {
    this.config = config;
    this.confirmOutputs = confirmOutputs;
    this.stackName = config.aws?.stackName ?? '(unnamed)';
    this.policy = policyOf(config);
    this.clients = clients;
    this.outputs = outputs;
    // The same multi-core codec as embedded mode: each block's work on one of the worker threads.
    this.codec = new BlockCodec(keys, Math.max(config.blockSize, 4 * 1024 * 1024), { workers: availableParallelism() });
    // A restore's GETs and a backup's block PUTs run on those threads (presigned URLs), with
    // simultaneous_reads (or _writes) connections among them and the S3 client's timeouts.
    const perThread = (requests: number) => ({ sockets: Math.max(1, Math.ceil(requests / this.codec.workers)), ...s3Timeouts() });
    const s3 = new S3BlockStore(clients.s3, outputs.BucketName, { locate: perThread(config.simultaneousReads), upload: perThread(config.simultaneousWrites) });
    this.blocks = new CodecThreadUploads(s3, this.codec, log);
    this.journal = new Journal(this.blocks, deriveJournalKey(keys.dedupKey));
    this.catalog = new CloudCatalog(clients, outputs, log, this.journal);
  }

  /** Cleanup runs in the cloud (only the cleanup function may delete objects), or locally with admin rights. */
  async cleanup(force: boolean, log: (line: string) => void, local = false): Promise<CleanupReport> {
    if (local) {
      await this.confirmOutputs();
      const store = new DynamoMetadataStore(this.clients.dynamo, {
        eventsTable: this.outputs.EventsTableName,
        projectionsTable: this.outputs.ProjectionsTableName,
      });
      try {
        return await runCleanup(journaled(store, this.journal), this.blocks, {
          force,
          graceSeconds: this.config.cleanupGraceSeconds,
          policy: this.policy,
          concurrency: this.config.simultaneousWrites,
          log,
        });
      } catch (e) {
        throw cloudError(e, 'local cleanup');
      }
    }
    const answer = await invoke<{ report: CleanupReport }>(this.clients, this.outputs.CleanupFunctionName, { force });
    return answer.report;
  }

  /**
   * `initdb` in the cloud (AdminPolicy): enrolls the repository's journal key for the functions,
   * wrapped by the stack's KMS key, so the changes they make are journaled (recover).
   */
  async enrollJournal(log: Log): Promise<void> {
    const keyArn = this.outputs.JournalKeyArn;
    if (!keyArn) throw new Backy2Error(ExitCode.cloud, `Stack ${this.stackName} has no JournalKeyArn output; update it with "npx cdk deploy"`);
    let result: 'enrolled' | 'kept' | 'foreign';
    try {
      // Only initdb enrolls: the KMS package of the SDK is loaded here, not by every command.
      const { enrollJournalKey, kmsClient } = await import('../../shared/adapters/aws/journal-key.ts');
      result = await enrollJournalKey(
        this.blocks,
        kmsClient({ region: this.config.aws?.region, endpointUrl: this.config.aws?.endpointUrl, profile: this.config.aws?.profile }),
        keyArn,
        deriveJournalKey(this.codec.keys.dedupKey),
      );
    } catch (e) {
      throw cloudError(e, 'the journal key (keys/journal, KMS)');
    }
    if (result === 'foreign')
      throw integrityError(`Stack ${this.stackName} journals for another repository key (keys/journal); this key's repository is not the stack's`);
    log.info(result === 'kept' ? 'The journal key is enrolled for the functions already' : 'Enrolled the journal key for the functions (keys/journal)');
  }

  /** Writes to `keys/`, which only AdminPolicy may. */
  async addKey(newMaster: Buffer): Promise<AddKeyResult> {
    await this.confirmOutputs();
    try {
      return await addKeyToRing(this.blocks, this.codec.keys, newMaster);
    } catch (e) {
      throw cloudError(e, 'the key ring');
    }
  }

  /** Runs on this host with the keys (the functions have none), writing the index as `cleanup --local` does (AdminPolicy). */
  async rekey(opts: RekeyOptions): Promise<RekeyReport> {
    await this.confirmOutputs();
    const store = new DynamoMetadataStore(this.clients.dynamo, {
      eventsTable: this.outputs.EventsTableName,
      projectionsTable: this.outputs.ProjectionsTableName,
    });
    try {
      return await runRekey(journaled(store, this.journal), this.blocks, this.codec, opts);
    } catch (e) {
      throw cloudError(e, 'rekey');
    }
  }

  /** SDK errors that reached the command (S3 reads and writes, DynamoDB reads) as one line naming the stack. */
  explain(e: unknown): unknown {
    return isSdkError(e) || NETWORK_ERRORS.includes(errnoOf(e) ?? '') || (e as { name?: unknown })?.name === 'TimeoutError'
      ? cloudError(e, `stack ${this.stackName} (bucket ${this.outputs.BucketName})`)
      : e;
  }

  /** A key-less scrub by the scrub functions; waits for its verdict. */
  async scrubInCloud(uid: string, percent: number, log: Log): Promise<{ checked: number; failures: BlockFailure[] }> {
    const answer = await invoke<{ planned: { scrubId: string; batches: number }[] }>(this.clients, this.outputs.ScrubPlannerFunctionName, { uid, percent });
    const plan = answer.planned[0];
    if (!plan) throw new Backy2Error(ExitCode.notFound, `Version ${uid} is not a committed version`);
    log.info(`Cloud scrub ${plan.scrubId}: ${plan.batches} batches queued`);
    const ledger = new DynamoScrubLedger(this.clients.dynamo, this.outputs.ProjectionsTableName);
    const timeoutMs = Number(process.env['BACKY2_SCRUB_TIMEOUT_SECONDS'] ?? 1800) * 1000;
    const started = Date.now();
    for (;;) {
      const status = await ledger.status(plan.scrubId);
      if (status?.finished) return { checked: status.checked, failures: status.failures };
      if (Date.now() - started > timeoutMs) throw new Backy2Error(ExitCode.cloud, `Cloud scrub ${plan.scrubId} did not finish within ${timeoutMs / 1000} s`);
      await sleep(1000);
    }
  }

  async close(): Promise<void> {
    await this.codec.close();
  }
}

/** Error names of a request that named a resource (bucket, table, queue, function) that does not exist. */
const MISSING_RESOURCE = ['NoSuchBucket', 'ResourceNotFoundException', 'QueueDoesNotExist', 'AWS.SimpleQueueService.NonExistentQueue', 'NonExistentQueue'];
export const isMissingResource = (e: unknown): boolean => {
  const err = e as { name?: string; Code?: string; code?: string } | null;
  return !!err && [err.name, err.Code, err.code].some((n) => n !== undefined && MISSING_RESOURCE.includes(n));
};

/** S3 requests that change the bucket (any but Get, Head and List). */
const isS3Write = (commandName: string | undefined): boolean => !!commandName && !/^(Get|Head|List)/.test(commandName);

/** Replaces, in a request's input, every resource name of stale outputs by the fresh one (values and keys, e.g. BatchGetItem's RequestItems). */
function renamed(input: unknown, renames: ReadonlyMap<string, string>): unknown {
  if (typeof input === 'string') return renames.get(input) ?? input;
  if (Array.isArray(input)) return input.map((v) => renamed(v, renames));
  if (input === null || typeof input !== 'object') return input;
  const proto = Object.getPrototypeOf(input);
  if (proto !== Object.prototype && proto !== null) return input; // bodies, buffers, streams: untouched
  return Object.fromEntries(Object.entries(input).map(([k, v]) => [renames.get(k) ?? k, renamed(v, renames)]));
}

/**
 * The stack's outputs as this command uses them. Taken from the cache file, they may be stale
 * (the stack was redeployed): the first request that fails because a resource they name does not
 * exist makes them be read again (DescribeStacks), the cache rewritten, and the request retried
 * once with the fresh names; later requests are renamed the same way. One place for every
 * client: an SDK middleware (`follow`).
 */
class StackOutputs {
  readonly current: Outputs;
  private readonly renames = new Map<string, string>();
  /** Buckets this command wrote to: a write to a bucket the stack no longer names must not be taken for a backup. */
  private readonly written = new Set<string>();
  private refreshing: Promise<boolean> | undefined;

  private readonly fromCache: boolean;
  private readonly describe: () => Promise<Outputs>;
  private readonly stackName: string;
  private readonly log: Log;

  constructor(outputs: Outputs, fromCache: boolean, describe: () => Promise<Outputs>, stackName: string, log: Log) {
    this.current = { ...outputs };
    this.fromCache = fromCache;
    this.describe = describe;
    this.stackName = stackName;
    this.log = log;
  }

  /** Cached outputs are read again (before a write that no function call precedes: a stale bucket would take it silently). */
  async confirm(): Promise<void> {
    if (this.fromCache) await this.refresh();
  }

  /** Outputs read again at most once per command; true when they changed. */
  private refresh(): Promise<boolean> {
    this.refreshing ??= (async () => {
      const fresh = await this.describe();
      const changed = REQUIRED_OUTPUTS.filter((k) => fresh[k] !== this.current[k]);
      if (!changed.length) return false;
      if (changed.includes('BucketName') && this.written.has(this.current.BucketName))
        throw new Backy2Error(
          ExitCode.cloud,
          `Stack ${this.stackName} was redeployed during this command: its bucket is now ${fresh.BucketName}, this command wrote to ${this.current.BucketName}; the cached outputs are updated, run the command again`,
        );
      for (const k of changed) this.renames.set(this.current[k], fresh[k]);
      this.log.info(`The cached outputs of stack ${this.stackName} were stale (${changed.join(', ')} changed): read them again`);
      Object.assign(this.current, fresh);
      return true;
    })();
    return this.refreshing;
  }

  /** The middleware every client of the command gets (added at its first step, above the SDK's retries). */
  follow<C extends { middlewareStack: { add: (mw: InitializeMiddleware<object, MetadataBearer>, opts: { step: 'initialize'; name: string }) => void } }>(
    client: C,
  ): C {
    const middleware: InitializeMiddleware<object, MetadataBearer> = (next, context) => async (args) => {
      const send = () => next(this.renames.size ? { ...args, input: renamed(args.input, this.renames) as object } : args);
      let out: Awaited<ReturnType<typeof send>>;
      try {
        out = await send();
      } catch (e) {
        if (!this.fromCache || !isMissingResource(e) || !(await this.refresh())) throw e;
        out = await send();
      }
      const bucket = (args.input as { Bucket?: unknown }).Bucket;
      if (typeof bucket === 'string' && context.clientName === 'S3Client' && isS3Write(context.commandName))
        this.written.add(renamed(bucket, this.renames) as string);
      return out;
    };
    client.middlewareStack.add(middleware, { step: 'initialize', name: 'backy2StackOutputs' });
    return client;
  }
}

const once = <T>(make: () => Promise<T>): (() => Promise<T>) => {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
};

/** Where the cached outputs of this config's stack live, or undefined when the cache is off. */
function outputsCache(aws: NonNullable<Config['aws']>): { file: string; target: StackTarget } | undefined {
  if (!outputsCacheEnabled()) return undefined;
  const target: StackTarget = {
    stackName: aws.stackName,
    region: aws.region ?? process.env['AWS_REGION'] ?? process.env['AWS_DEFAULT_REGION'],
    endpoint: aws.endpointUrl ?? process.env['AWS_ENDPOINT_URL'],
    profile: aws.profile ?? process.env['AWS_PROFILE'],
  };
  return { file: outputsCachePath(defaultHome(), target), target };
}

export async function openCloudBackend(config: Config, log: Log, opts: { initdb?: boolean }): Promise<Backend> {
  const aws = config.aws!;
  // One keep-alive connection per block in flight (reads and writes), retries shown as warnings.
  const lazy = makeLazyClients(
    { region: aws.region, endpointUrl: aws.endpointUrl, profile: aws.profile },
    { sockets: config.simultaneousReads + config.simultaneousWrites, onRetry: (line) => log.warn(line) },
  );
  const where = `region ${aws.region ?? process.env['AWS_REGION'] ?? '(default)'}${aws.endpointUrl ? ` at ${aws.endpointUrl}` : ''}`;
  const masterKey = parseMasterKey(config.encryptionKeyHex, `[DEFAULTS] encryption_key in ${config.source}`);
  const asked = Date.now();
  const cache = outputsCache(aws);
  const describe = async (): Promise<Outputs> => {
    let outputs: Outputs;
    try {
      outputs = await describeOutputs(await lazy.cloudformation(), aws.stackName, where);
    } catch (e) {
      if (cache) dropCachedOutputs(cache.file);
      throw e;
    }
    if (cache) {
      try {
        writeCachedOutputs(cache.file, cache.target, outputs);
      } catch (e) {
        log.debug(`Stack outputs not cached in ${cache.file}: ${(e as Error).message}`);
      }
    }
    return outputs;
  };
  // initdb writes to the bucket before any function call: it asks CloudFormation.
  const cached = cache && !opts.initdb ? (readCachedOutputs(cache.file, cache.target, REQUIRED_OUTPUTS) as Outputs | undefined) : undefined;
  const stack = new StackOutputs(cached ?? (await describe()), !!cached, describe, aws.stackName, log);
  const outputs = stack.current;
  log.debug(
    `Using stack ${aws.stackName}: bucket ${outputs.BucketName} (${cached ? `outputs from the cache ${cache!.file}` : `outputs read in ${seconds(asked)} s`})`,
  );
  const clients: LazyAwsClients = {
    ...lazy,
    s3: stack.follow(lazy.s3),
    dynamo: stack.follow(lazy.dynamo),
    sqs: once(async () => stack.follow(await lazy.sqs())),
    lambda: once(async () => stack.follow(await lazy.lambda())),
  };
  // Key rotation: the key ring in the bucket gives the repository's dedup key.
  let keys: RepositoryKeys;
  try {
    keys = await loadRepositoryKeys(new S3BlockStore(clients.s3, outputs.BucketName), masterKey, oldMasterKeys(config));
  } catch (e) {
    throw cloudError(e, 'the key ring');
  }
  log.debug('Key ring read');
  const backend = new CloudBackend(config, clients, outputs, keys, log, () => stack.confirm());
  if (opts.initdb) {
    try {
      await backend.enrollJournal(log);
    } catch (e) {
      await backend.close();
      throw e;
    }
  }
  return backend;
}
