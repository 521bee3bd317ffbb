import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { parseEvent, type DomainEvent, type EventOf, type VersionEvent } from '../domain/events.ts';
import type { BlockStore } from '../ports/block-store.ts';

/**
 * The journal: the events that change versions after (and during) their backup, stored next to
 * the blocks, so that the directory or bucket alone, with the key, holds everything `recover`
 * needs (DESIGN "Getting data back"). One object per event, written before the event is appended
 * to the metadata store, with If-None-Match (never overwritten, never deleted):
 *
 *   journal/<uid>/v<seq>     a lifecycle event of the version, at its stream sequence number
 *   journal/<uid>/c<chunk>   a block-map chunk record (BlocksRecorded, with the new blocks' size and checksum)
 *   journal/index/<at>-<r>   a block-index event that only a host with the key makes (BlocksRekeyed)
 *
 * Entry = "BK2J" | format u8 | nonce (12) | AES-256-GCM(JSON(event)) | tag (16),
 * AAD = "BK2J" | format | object key: an entry cannot be altered, truncated, or moved to another
 * version or sequence number without failing authentication. The key is derived from the
 * repository's dedup key (kept across master-key rotation by the key ring), so entries written
 * before a rotation still open after it.
 */
export const JOURNAL_PREFIX = 'journal/';
const MAGIC = Buffer.from('BK2J');
const FORMAT = 1;
const HEAD = 5;
const NONCE = 12;
const TAG = 16;
const SEQ_DIGITS = 10;

const pad = (n: number) => String(n).padStart(SEQ_DIGITS, '0');
export const journalKeys = {
  version: (uid: string, seq: number) => `${JOURNAL_PREFIX}${uid}/v${pad(seq)}`,
  chunk: (uid: string, chunk: number) => `${JOURNAL_PREFIX}${uid}/c${pad(chunk)}`,
  index: (at: string) => `${JOURNAL_PREFIX}index/${at}-${randomBytes(6).toString('hex')}`,
};

/** What an object key under journal/ names; null for anything else. */
export type JournalSlot =
  | { kind: 'version'; uid: string; n: number; key: string }
  | { kind: 'chunk'; uid: string; n: number; key: string }
  | { kind: 'index'; key: string };

export function parseJournalKey(key: string): JournalSlot | null {
  const index = /^journal\/index\/[^/]+$/.exec(key);
  if (index) return { kind: 'index', key };
  const m = /^journal\/([0-9a-fA-F-]{36})\/([vc])(\d{10})$/.exec(key);
  if (!m) return null;
  return { kind: m[2] === 'v' ? 'version' : 'chunk', uid: m[1]!, n: Number(m[3]), key };
}

export class JournalEntryError extends Error {}

/** The journal key of a repository: HKDF of its dedup key (the same across master keys). */
export const deriveJournalKey = (dedupKey: Buffer) => Buffer.from(hkdfSync('sha256', dedupKey, Buffer.from('backy2-serverless/v1'), 'journal', 32));

export function sealEntry(journalKey: Buffer, objectKey: string, event: DomainEvent): Buffer {
  const head = Buffer.concat([MAGIC, Buffer.of(FORMAT)]);
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', journalKey, nonce);
  cipher.setAAD(Buffer.concat([head, Buffer.from(objectKey)]));
  const body = Buffer.concat([cipher.update(JSON.stringify(event)), cipher.final()]);
  return Buffer.concat([head, nonce, body, cipher.getAuthTag()]);
}

/** Opens and validates an entry; throws JournalEntryError if it is not exactly what was written at this key. */
export function openEntry(journalKey: Buffer, objectKey: string, entry: Buffer): DomainEvent {
  if (entry.length < HEAD + NONCE + TAG || !entry.subarray(0, 4).equals(MAGIC))
    throw new JournalEntryError(`${objectKey}: not a journal entry (${entry.length} bytes)`);
  if (entry.readUInt8(4) !== FORMAT) throw new JournalEntryError(`${objectKey}: journal format ${entry.readUInt8(4)} is not supported`);
  let plain: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', journalKey, entry.subarray(HEAD, HEAD + NONCE));
    decipher.setAAD(Buffer.concat([entry.subarray(0, HEAD), Buffer.from(objectKey)]));
    decipher.setAuthTag(entry.subarray(entry.length - TAG));
    plain = Buffer.concat([decipher.update(entry.subarray(HEAD + NONCE, entry.length - TAG)), decipher.final()]);
  } catch {
    throw new JournalEntryError(`${objectKey}: fails authentication (altered, truncated, moved, or written with another key)`);
  }
  try {
    return parseEvent(JSON.parse(plain.toString()));
  } catch (e) {
    throw new JournalEntryError(`${objectKey}: authenticated but not a valid event (${(e as Error).message.split('\n')[0]})`);
  }
}

/** The journal in a block store (directory or bucket). */
export class Journal {
  readonly blocks: BlockStore;
  private readonly key: Buffer;

  constructor(blocks: BlockStore, journalKey: Buffer) {
    this.blocks = blocks;
    this.key = journalKey;
  }

  /** Writes the entry unless the slot is taken; false when another writer holds it. */
  append(objectKey: string, event: DomainEvent): Promise<boolean> {
    return this.blocks.putIfAbsent(objectKey, sealEntry(this.key, objectKey, event));
  }

  appendVersionEvent(seq: number, event: VersionEvent): Promise<boolean> {
    return this.append(journalKeys.version(event.uid, seq), event);
  }

  appendChunk(event: EventOf<'BlocksRecorded'>): Promise<boolean> {
    return this.append(journalKeys.chunk(event.uid, event.chunk), event);
  }

  /** The event at this key; null when there is none; JournalEntryError when it does not verify. */
  async read(objectKey: string): Promise<DomainEvent | null> {
    const entry = await this.blocks.get(objectKey);
    return entry === null ? null : openEntry(this.key, objectKey, entry);
  }

  list(): AsyncIterable<string> {
    return this.blocks.list(JOURNAL_PREFIX);
  }
}
