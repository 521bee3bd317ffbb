import type { BlockCodec } from '../blocks/codec.ts';
import { manifestKey } from '../blocks/codec.ts';
import type { Version } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';

/**
 * The encrypted manifest of a committed version (`manifests/<uid>`): the version and its packed
 * block map, so a version can be restored and the metadata rebuilt from storage alone.
 * Layout: manifest id (32 bytes, HMAC of the plaintext) ‖ encoded object.
 * Plaintext: u32 JSON length ‖ JSON(version) ‖ packed block map.
 */
export async function writeManifest(blocks: BlockStore, codec: BlockCodec, version: Version, packedMap: Buffer[]): Promise<void> {
  const json = Buffer.from(JSON.stringify(version));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  const plain = Buffer.concat([len, json, ...packedMap]);
  const id = await codec.blockId(plain);
  await blocks.put(manifestKey(version.uid), Buffer.concat([Buffer.from(id, 'hex'), await codec.encode(plain, id)]));
}

export async function readManifest(blocks: BlockStore, codec: BlockCodec, uid: string): Promise<{ version: Version; packedMap: Buffer } | null> {
  const stored = await blocks.get(manifestKey(uid));
  if (!stored) return null;
  const plain = await codec.decode(stored.subarray(32), stored.subarray(0, 32).toString('hex'));
  const jsonLength = plain.readUInt32BE(0);
  return { version: JSON.parse(plain.subarray(4, 4 + jsonLength).toString()) as Version, packedMap: plain.subarray(4 + jsonLength) };
}
