import * as v from 'valibot';
import { Backy2Error, ExitCode, usageError } from './errors.ts';
import { check, nonNegativeInt } from './schema.ts';

/**
 * `backup -r HINTS.json`: the output of `rbd diff --format=json` (or any tool that writes the
 * same shape) says which byte ranges changed since the base snapshot. Only hinted regions are
 * read; a region hinted `exists: false` was discarded (reads as zeros, recorded sparse without a
 * read); everything else comes from the base version (or is sparse without one).
 */
const HintSchema = v.object({
  offset: nonNegativeInt(),
  length: nonNegativeInt(),
  // rbd writes "true"/"false"; other tools write booleans.
  exists: v.union([
    v.boolean(),
    v.pipe(
      v.picklist(['true', 'false']),
      v.transform((s) => s === 'true'),
    ),
  ]),
});
const HintsSchema = v.array(HintSchema);
export type Hint = v.InferOutput<typeof HintSchema>;

export function parseHints(text: string, where: string): Hint[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw usageError(`Hints file ${where} is not JSON (${(e as Error).message}); expected rbd diff --format=json output`);
  }
  const parsed = check(HintsSchema, raw);
  if (!parsed.success) {
    const { issue } = parsed;
    throw usageError(
      `Hints file ${where}: ${issue.path.length ? `entry ${issue.path.join('.')}: ` : ''}${issue.message}; expected [{"offset":…,"length":…,"exists":"true"|"false"}]`,
    );
  }
  return parsed.output;
}

/** What a hinted backup does with each block. */
export const BlockPlan = { fromBase: 0, read: 1, zero: 2 } as const;
export type BlockPlan = (typeof BlockPlan)[keyof typeof BlockPlan];

/**
 * One plan entry per block. A block touched by any `exists: true` range is read; a block only
 * touched by `exists: false` ranges is recorded sparse, unless it is only partly covered (then
 * the rest of it may hold data, so it is read). Hints past the end of the source are refused:
 * they describe another device.
 */
export function planHintedBlocks(hints: Hint[], sizeBytes: number, blockSize: number): Uint8Array {
  const blockCount = Math.ceil(sizeBytes / blockSize);
  const plan = new Uint8Array(blockCount); // all fromBase
  const read = new Uint8Array(blockCount);
  for (const h of hints) {
    if (h.length === 0) continue;
    if (h.offset + h.length > sizeBytes)
      throw new Backy2Error(
        ExitCode.sourceMismatch,
        `Hint at offset ${h.offset} (+${h.length} bytes) lies beyond the end of the source (${sizeBytes} bytes); the hints are for another device`,
      );
    const first = Math.floor(h.offset / blockSize);
    const last = Math.floor((h.offset + h.length - 1) / blockSize);
    for (let idx = first; idx <= last; idx++) {
      const blockStart = idx * blockSize;
      const blockEnd = Math.min(blockStart + blockSize, sizeBytes);
      const covers = h.offset <= blockStart && h.offset + h.length >= blockEnd;
      if (h.exists || !covers) read[idx] = 1;
      else if (plan[idx] === BlockPlan.fromBase) plan[idx] = BlockPlan.zero;
    }
  }
  for (let idx = 0; idx < blockCount; idx++) if (read[idx]) plan[idx] = BlockPlan.read;
  return plan;
}

/**
 * Blocks outside the hints that a hinted incremental re-reads and compares with the base,
 * as Benji does: max(10, 0.1 %) of them, so hints that missed changes are noticed at once.
 */
export function sanityCheckSample(plan: Uint8Array, random: () => number = Math.random): number[] {
  const unhinted: number[] = [];
  for (let idx = 0; idx < plan.length; idx++) if (plan[idx] === BlockPlan.fromBase) unhinted.push(idx);
  const want = Math.min(unhinted.length, Math.max(10, Math.ceil(unhinted.length / 1000)));
  // Partial Fisher–Yates: the first `want` entries become a uniform sample.
  for (let i = 0; i < want; i++) {
    const j = i + Math.floor(random() * (unhinted.length - i));
    [unhinted[i], unhinted[j]] = [unhinted[j]!, unhinted[i]!];
  }
  return unhinted.slice(0, want).sort((a, b) => a - b);
}
