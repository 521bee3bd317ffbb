import pLimit from 'p-limit';
import type { BlockId, BlockRef, Version } from '../../shared/domain/types.ts';
import { readBlockMap } from '../../shared/app/block-map.ts';
import { resolveVersion } from '../../shared/app/resolve.ts';
import { scrubVerdicts } from '../../shared/app/scrub.ts';
import { sampleBlocks, ScrubTally, type BlockFailure } from '../../shared/domain/scrub.ts';
import { refused } from '../../shared/domain/errors.ts';
import type { Backend } from '../backend/backend.ts';
import { openSource, readAt } from '../io/device.ts';
import { storedBlockVerifier } from './codec-thread-reads.ts';
import type { Log } from '../ui/log.ts';
import { startProgress } from '../ui/progress.ts';

export interface ScrubRequest {
  uid: string;
  percent: number;
  sourceUrl: string | null;
}

export interface ScrubOutcome {
  version: Version;
  checked: number;
  failures: BlockFailure[];
  sourceMismatches: number;
  invalidated: string[];
}

/**
 * scrub: reads the chosen blocks back, decrypts them and recomputes their ids; with a source,
 * also compares every block (sparse ones included) with it. Bad blocks, and every version
 * using them, are marked invalid; a clean scrub marks the version valid again.
 */
export async function runScrub(backend: Backend, req: ScrubRequest, log: Log, progressBar: boolean): Promise<ScrubOutcome> {
  const { catalog } = backend;
  const version = await resolveVersion(catalog.reader, req.uid);
  if (version.status !== 'committed') throw refused(`Version ${version.uid} is ${version.status}; only committed versions can be scrubbed`);
  const source = req.sourceUrl ? await openSource(req.sourceUrl) : null;
  const limit = pLimit(backend.config.simultaneousReads);
  const tally = new ScrubTally();
  let sourceMismatches = 0;
  let checked = 0;
  const seen = new Set<BlockId>();
  const verify = storedBlockVerifier(backend, log);
  const progress = startProgress('Scrubbed', version.blockCount, log, { bar: progressBar });
  let done = 0;
  let bytes = 0;
  try {
    if (source && source.size !== version.sizeBytes) {
      log.error(`Source ${req.sourceUrl} has ${source.size} bytes, version ${version.uid} has ${version.sizeBytes}`);
      sourceMismatches++;
    }
    for await (const entries of readBlockMap(catalog.reader, version)) {
      // Without a source, each distinct block is read once; with one, every position is compared.
      const picked = source ? entries.filter(() => req.percent >= 100 || Math.random() * 100 < req.percent) : sampleBlocks(entries, req.percent, seen);
      const index = await catalog.reader.getBlocks([...new Set(picked.flatMap((e) => (e.id ? [e.id] : [])))]);
      await Promise.all(
        picked.map((e) =>
          limit(async () => {
            const memory = e.id ? backend.codec.blockBuffer() : null;
            try {
              const result = e.id ? await verify(e, index.get(e.id), memory) : { failure: null, plaintext: null };
              if (e.id) {
                checked++;
                if (result.failure) {
                  log.error(`${result.failure}: Block(id=${e.id}, version_uid=${version.uid}, idx=${e.idx}, size=${e.length})`);
                  tally.failed(e.id, result.failure);
                } else tally.verified(e.id);
              }
              if (source && !result.failure) {
                // Not `x += await …`: that reads x before the await, and concurrent checks would lose each other's counts.
                const mismatches = await compareWithSource(source.fh, version, e, result.plaintext, log);
                sourceMismatches += mismatches;
              }
              bytes += e.length;
              progress.tick(++done, bytes);
            } finally {
              backend.codec.releaseBlockBuffer(memory);
            }
          }),
        ),
      );
      done += entries.length - picked.length;
    }
  } finally {
    progress.stop();
    await source?.fh.close();
  }
  const failures = tally.failures;
  const commands = await scrubVerdicts(catalog.reader, version, tally.verifiedList, failures, req.percent >= 100);
  const invalidated: string[] = [];
  for (const cmd of commands) {
    const after = await catalog.execute(cmd);
    if (cmd.type === 'RecordScrub' && cmd.failed.length) invalidated.push(after.uid);
  }
  for (const f of failures) log.info(`Marked block invalid (id ${f.id}). Affected versions: ${invalidated.join(', ')}`);
  for (const uid of invalidated) log.info(`Marked version invalid (UID ${uid})`);
  return { version: (await catalog.reader.getVersion(version.uid))!, checked, failures, sourceMismatches, invalidated };
}

async function compareWithSource(
  fh: Awaited<ReturnType<typeof openSource>>['fh'],
  version: Version,
  ref: BlockRef,
  plaintext: Buffer | null,
  log: Log,
): Promise<number> {
  const actual = await readAt(fh, ref.idx * version.blockSize, ref.length);
  const expected = plaintext ?? Buffer.alloc(ref.length);
  if (actual.equals(expected)) return 0;
  log.error(`Source mismatch at block ${ref.idx}${ref.id ? ` (id ${ref.id})` : ' (sparse in backup)'}`);
  return 1;
}
