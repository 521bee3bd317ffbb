import * as v from 'valibot';

/**
 * Schema pieces every boundary uses (events, api commands, export files, scrub batches), and the
 * one way to validate with them: `check` gives the first issue as a dot path and a message, the
 * text our error lines have always carried (the wording zod printed before we moved to valibot,
 * which loads in a tenth of the time).
 */

// RFC 9562 UUIDs (any version, variant 10xx) plus the nil and max UUIDs.
const UUID =
  /^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/;
// RFC 3339 date-time with seconds and a Z or ±hh:mm offset; Feb 29 only in leap years.
const CALENDAR_DATE =
  '(?:(?:\\d\\d[2468][048]|\\d\\d[13579][26]|\\d\\d0[48]|[02468][048]00|[13579][26]00)-02-29|\\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|(?:02)-(?:0[1-9]|1\\d|2[0-8])))';
const ISO_DATETIME = new RegExp(`^${CALENDAR_DATE}T(?:(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d+)?(?:Z|([+-](?:[01]\\d|2[0-3]):[0-5]\\d)))$`);

/** A finite number (JSON has no NaN or Infinity; a computed one is a bug to refuse). */
export const num = () => v.pipe(v.number(), v.finite());
/** A safe integer, optionally bounded below. */
export const int = () => v.pipe(v.number(), v.finite(), v.safeInteger());
export const nonNegativeInt = () => v.pipe(int(), v.minValue(0));
export const positiveInt = () => v.pipe(int(), v.gtValue(0));

export const uid = v.pipe(v.string(), v.regex(UUID, 'Invalid UUID'));
/** A SHA-256 or HMAC-SHA256 in hex: block ids (keyed) and the stored objects' checksums. */
const SHA256_HEX = /^[0-9a-f]{64}$/;
export const blockId = v.pipe(v.string(), v.regex(SHA256_HEX, 'block id must be 64 hex chars'));
export const sha256Hex = v.pipe(v.string(), v.regex(SHA256_HEX, 'checksum must be 64 hex chars'));
export const instant = v.pipe(v.string(), v.regex(ISO_DATETIME, 'Invalid ISO datetime'));
/** A version's name, a tag, a lease holder: what names.ts checks further at the command boundary. */
export const label = v.pipe(v.string(), v.minLength(1), v.maxLength(255));
/** An array of at most `max` items; a longer one is refused by its length alone, before any item is read. */
export const boundedArray = <const S extends v.GenericSchema>(item: S, max: number) => v.pipe(v.array(v.unknown()), v.maxLength(max), v.array(item));
export const tags = boundedArray(label, 100);

/** A discriminated union; an unknown discriminator names the values it accepts. */
export function variant<const K extends string, const O extends v.VariantOptions<K>>(key: K, options: O) {
  const accepted = options.map((o) => `'${String((o as unknown as { entries: Record<string, { literal?: unknown }> }).entries[key]?.literal)}'`).join(' | ');
  return v.variant(key, options, (issue: v.VariantIssue) =>
    issue.path ? `Invalid discriminator value. Expected ${accepted}` : typeMessage('object', issue.input),
  );
}

/** An object that refuses arrays, for schemas whose keys are all optional (an array would pass them). */
export const record = <const E extends v.ObjectEntries>(entries: E) =>
  v.pipe(
    v.custom<Record<string, unknown>>(
      (x) => typeof x === 'object' && x !== null && !Array.isArray(x),
      (issue) => typeMessage('object', issue.input),
    ),
    v.object(entries),
  );

const receivedType = (input: unknown): string => {
  if (typeof input === 'number') return Number.isFinite(input) ? 'number' : String(input);
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'array';
  if (typeof input === 'object' && Object.getPrototypeOf(input) !== Object.prototype && input.constructor) return input.constructor.name;
  return typeof input;
};
const typeMessage = (expected: string, input: unknown) => `Invalid input: expected ${expected}, received ${receivedType(input)}`;
const sized = (input: unknown) => (Array.isArray(input) ? 'array to have' : 'string to have');
const unit = (input: unknown) => (Array.isArray(input) ? 'items' : 'characters');

/** The default message of each kind of issue (schemas and checks with their own message keep it). */
function message(issue: v.BaseIssue<unknown>): string {
  const { input, requirement } = issue as v.BaseIssue<unknown> & { requirement?: unknown };
  switch (issue.type) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'array':
      return typeMessage(issue.type, input);
    case 'object':
    case 'strict_object':
      return typeMessage('object', input);
    case 'literal':
      return `Invalid input: expected ${issue.expected}`;
    case 'finite':
      return typeMessage('number', input);
    case 'safe_integer':
      if (!Number.isInteger(input)) return 'Invalid input: expected int, received number';
      return (input as number) > 0 ? `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}` : `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}`;
    case 'min_value':
      return `Too small: expected number to be >=${String(requirement)}`;
    case 'gt_value':
      return `Too small: expected number to be >${String(requirement)}`;
    case 'max_value':
      return `Too big: expected number to be <=${String(requirement)}`;
    case 'min_length':
      return `Too small: expected ${sized(input)} >=${String(requirement)} ${unit(input)}`;
    case 'max_length':
      return `Too big: expected ${sized(input)} <=${String(requirement)} ${unit(input)}`;
    case 'regex':
      return `Invalid string: must match pattern ${String(requirement)}`;
    default:
      return 'Invalid input';
  }
}
const OPTIONS = { message } as const;

export interface Issue {
  path: (string | number)[];
  message: string;
}

const isUnknownKey = (i: v.BaseIssue<unknown>) => i.type === 'strict_object' && i.expected === 'never';
const isMissingKey = (i: v.BaseIssue<unknown>) => (i.type === 'object' || i.type === 'strict_object') && i.expected?.startsWith('"') && i.input === undefined;
const keysOf = (i: v.BaseIssue<unknown>) => (i.path ?? []).map((p) => p.key as string | number);

type AnySchema = v.GenericSchema & {
  wrapped?: AnySchema;
  pipe?: (AnySchema | v.GenericValidation)[];
  entries?: Record<string, AnySchema>;
  item?: AnySchema;
  options?: AnySchema[];
  key?: string;
};

/** The schema that shapes a value: through optional/nullable, to a pipe's last schema, to the variant option `input` selects. */
function shapeOf(schema: AnySchema | undefined, input: unknown): AnySchema | undefined {
  let s = schema;
  for (;;) {
    if (s?.wrapped) s = s.wrapped;
    else if (s?.pipe) s = s.pipe.findLast((p): p is AnySchema => p.kind === 'schema');
    else if (s?.type === 'variant') {
      const { key, options } = s;
      const tag: unknown = typeof input === 'object' && input !== null ? (input as Record<string, unknown>)[key!] : undefined;
      s = options!.find((o) => v.is(o.entries![key!]!, tag));
    } else return s;
  }
}

/** The schema of the value an issue's path leads to. */
function schemaAt(root: AnySchema, path: v.IssuePathItem[]): AnySchema | undefined {
  let s: AnySchema | undefined = root;
  for (const item of path) {
    s = shapeOf(s, item.input);
    s = Array.isArray(item.input) && s?.item ? s.item : s?.entries?.[item.key as string];
    if (!s) return undefined;
  }
  return s;
}

/** The first issue, as zod reported it: unknown keys together at their object, a missing key by what it should hold. */
function firstIssue(root: AnySchema, issues: [v.BaseIssue<unknown>, ...v.BaseIssue<unknown>[]]): Issue {
  const first = issues[0];
  const path = keysOf(first);
  // valibot reads an array's keys like an object's; an array is no object here.
  const intoArray = (first.path ?? []).findIndex((p) => p.type === 'object' && Array.isArray(p.input));
  if (intoArray >= 0) return { path: path.slice(0, intoArray), message: typeMessage('object', []) };
  if (isUnknownKey(first)) {
    // valibot stops at the first unknown key; the line names them all.
    const object = first.path!.at(-1)!.input as Record<string, unknown>;
    const entries = shapeOf(schemaAt(root, first.path!.slice(0, -1)), object)?.entries ?? {};
    const keys = Object.keys(object)
      .filter((k) => !(k in entries))
      .map((k) => `"${k}"`);
    return { path: path.slice(0, -1), message: `Unrecognized key${keys.length > 1 ? 's' : ''}: ${keys.join(', ')}` };
  }
  if (isMissingKey(first)) {
    const expected = schemaAt(root, first.path ?? []);
    const inner = expected && v.safeParse(expected, undefined, OPTIONS);
    if (expected && inner?.issues) return { path, message: firstIssue(expected, inner.issues).message };
  }
  return { path, message: first.message };
}

export type Checked<T> = { success: true; output: T } | { success: false; issue: Issue };

/** Validates `input`: the output, or the first issue. */
export function check<S extends v.GenericSchema>(schema: S, input: unknown): Checked<v.InferOutput<S>> {
  const result = v.safeParse(schema, input, OPTIONS);
  if (result.success) return { success: true, output: result.output };
  return { success: false, issue: firstIssue(schema as AnySchema, result.issues) };
}

/** Validates `input` where a refusal is a bug (our own events, payloads we built): throws the first issue. */
export function parse<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const result = check(schema, input);
  if (result.success) return result.output;
  const { path, message } = result.issue;
  throw new TypeError(`Invalid ${path.length ? path.join('.') : 'value'}: ${message}`);
}
