import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { DeleteCommand, GetCommand, PutCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { AwsTarget } from './clients.ts';
import type { BlockStore } from '../../ports/block-store.ts';

/**
 * The journal key for the functions, which hold no repository key: `keys/journal` holds it
 * wrapped by the stack's KMS key (encryption context names its purpose), written by an admin
 * (`backy2 initdb`, `backy2 recover`). The functions decrypt it at cold start and journal the
 * changes they make with it; a stack without it enrolled keeps no journal (they warn).
 */
export const JOURNAL_KEY_OBJECT = 'keys/journal';
const CONTEXT = { purpose: 'backy2-journal-key' };

export const kmsClient = (target: AwsTarget = {}) =>
  new KMSClient({
    ...(target.region ? { region: target.region } : {}),
    ...(target.endpointUrl ? { endpoint: target.endpointUrl } : {}),
    ...(target.profile ? { profile: target.profile } : {}),
  });

/** The enrolled journal key, or null when none is (or it does not open with this stack's KMS key). */
export async function loadJournalKey(blocks: BlockStore, kms: KMSClient, keyArn: string): Promise<Buffer | null> {
  const wrapped = await blocks.get(JOURNAL_KEY_OBJECT);
  if (!wrapped) return null;
  try {
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: wrapped, KeyId: keyArn, EncryptionContext: CONTEXT }));
    return out.Plaintext ? Buffer.from(out.Plaintext) : null;
  } catch (e) {
    const name = (e as { name?: string }).name ?? '';
    if (/InvalidCiphertext|IncorrectKey|NotFound|AccessDenied/i.test(name)) return null;
    throw e;
  }
}

/**
 * Enrolls `journalKey` for this stack. 'kept': already enrolled; 'enrolled': written (none was,
 * or the one there was wrapped by another stack's KMS key: a stack deployed onto the bucket anew);
 * 'foreign': another repository's key is enrolled (nothing written).
 */
export async function enrollJournalKey(blocks: BlockStore, kms: KMSClient, keyArn: string, journalKey: Buffer): Promise<'kept' | 'enrolled' | 'foreign'> {
  const current = await loadJournalKey(blocks, kms, keyArn);
  if (current?.equals(journalKey)) return 'kept';
  if (current) return 'foreign';
  const out = await kms.send(new EncryptCommand({ KeyId: keyArn, Plaintext: journalKey, EncryptionContext: CONTEXT }));
  await blocks.put(JOURNAL_KEY_OBJECT, Buffer.from(out.CiphertextBlob!));
  return 'enrolled';
}

/**
 * A recover in progress, in the projections table: scheduled cleanup and retention leave an
 * incomplete metadata store alone, and an interrupted recover knows it may continue.
 */
const MARKER = { pk: 'recover', sk: 'state' };
export interface RecoverMarker {
  startedAt: string;
  lastIndexEvent: string | null;
}

export async function readRecoverMarker(db: DynamoDBDocumentClient, projectionsTable: string): Promise<RecoverMarker | null> {
  const out = await db.send(new GetCommand({ TableName: projectionsTable, Key: MARKER, ConsistentRead: true }));
  return out.Item ? { startedAt: String(out.Item['startedAt']), lastIndexEvent: (out.Item['lastIndexEvent'] as string | undefined) ?? null } : null;
}

export async function writeRecoverMarker(db: DynamoDBDocumentClient, projectionsTable: string, marker: RecoverMarker): Promise<void> {
  await db.send(new PutCommand({ TableName: projectionsTable, Item: { ...MARKER, ...marker } }));
}

export async function clearRecoverMarker(db: DynamoDBDocumentClient, projectionsTable: string): Promise<void> {
  await db.send(new DeleteCommand({ TableName: projectionsTable, Key: MARKER }));
}
