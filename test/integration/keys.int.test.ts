/**
 * Key rotation in cloud mode, through the real CLI against the real stack: the key ring lives in
 * the bucket (keys/<id>), a backup with the new key dedups against the old key's blocks, `rekey`
 * re-encrypts on this host and updates the index so the key-less cloud scrub still verifies, and
 * with the old key gone every version restores bit-exact.
 *
 * The stack is shared with the suite's other files (each with keys of its own), so the ring is
 * removed afterwards and rekey's verdict is judged on this file's own objects.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '../../shared/blocks/keys.ts';
import { clientConfig, testStack } from './context.ts';
import { runCloudCli as runCli } from './cloud-cli.ts';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const keyIdOf = (hex: string) => deriveKeys(Buffer.from(hex, 'hex')).keyId.toString('hex');

describe('cloud mode: key rotation (add-key, old key, rekey)', () => {
  const stack = testStack();
  const s3 = new S3Client(clientConfig());
  const bucket = () => stack.outputs.BucketName;
  const keyA = randomBytes(32).toString('hex');
  const keyB = randomBytes(32).toString('hex');
  let dir: string;
  let image: Buffer;
  let mine: string[] = [];
  const uids: string[] = [];
  const config = (name: string, key: string, old?: string) => {
    const path = join(dir, name);
    writeFileSync(
      path,
      [
        '[DEFAULTS]',
        `encryption_key: ${key}`,
        ...(old ? [`old_encryption_keys: ${old}`] : []),
        'block_size: 1048576',
        '',
        '[aws]',
        `stack_name: ${stack.stackName}`,
        `region: ${stack.region}`,
        `endpoint_url: ${stack.endpoint}`,
        '',
      ].join('\n'),
    );
    return path;
  };
  const list = async (prefix: string) => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket(), Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.NextContinuationToken;
    } while (token);
    return keys;
  };
  const object = async (key: string) => Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket(), Key: key }))).Body!.transformToByteArray());
  const backup = async (cfg: string) => {
    const r = await runCli(['--json', '-c', cfg, 'backup', 'file://vm.img', 'keys-vm'], dir);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { uid: string; stats: { blocksWritten: number; blocksDedup: number } };
  };
  const restoresBitExact = async (cfg: string, uid: string) => {
    const target = `restored-${randomBytes(4).toString('hex')}.img`;
    const r = await runCli(['-c', cfg, 'restore', uid, `file://${target}`], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(join(dir, target)))).toBe(sha(image));
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'backy2-cloud-keys-'));
    image = Buffer.concat([randomBytes(MiB), Buffer.alloc(MiB), randomBytes(MiB), randomBytes(MiB)]);
    writeFileSync(join(dir, 'vm.img'), image);
  });
  // Other files of the suite use keys of their own in the same bucket: without a ring, each key is its own.
  afterAll(async () => {
    for (const key of await list('keys/')) await s3.send(new DeleteObjectCommand({ Bucket: bucket(), Key: key }));
  });

  it('backup with A, add-key B, backup with B (+ old A) dedups, rekey, restore with B alone, cloud scrub clean, key C refused', async () => {
    const cfgA = config('a.cfg', keyA);
    const cfgB = config('b.cfg', keyB, keyA);
    const cfgBOnly = config('b-only.cfg', keyB);
    const cfgC = config('c.cfg', randomBytes(32).toString('hex'));

    const before = new Set(await list('blocks/'));
    const first = await backup(cfgA);
    uids.push(first.uid);
    mine = (await list('blocks/')).filter((k) => !before.has(k));
    expect(first.stats.blocksWritten).toBe(3);
    expect(mine).toHaveLength(3);

    writeFileSync(join(dir, 'b.key'), keyB + '\n');
    const added = await runCli(['--json', '-c', cfgA, 'add-key', join(dir, 'b.key')], dir);
    expect(added.code, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)[0]).toMatchObject({ key_id: keyIdOf(keyB), added: 1 });
    expect((await list('keys/')).sort()).toEqual([`keys/${keyIdOf(keyA)}`, `keys/${keyIdOf(keyB)}`].sort());

    const second = await backup(cfgB);
    uids.push(second.uid);
    expect(second.stats).toMatchObject({ blocksWritten: 0, blocksDedup: 3 });
    for (const uid of uids) await restoresBitExact(cfgB, uid);

    const tooEarly = await runCli(['-c', cfgBOnly, 'restore', first.uid, 'file://too-early.img'], dir);
    expect(tooEarly.code, tooEarly.stderr).toBe(7);

    const rekey = await runCli(['--json', '-c', cfgB, 'rekey'], dir);
    // Objects of other files' keys (if the suite left any) are reported unreadable: exit 7 then.
    const report = JSON.parse(rekey.stdout)[0] as { rekeyed: number; unreadable: number; manifests_rekeyed: number };
    expect(rekey.code, rekey.stderr).toBe(report.unreadable ? 7 : 0);
    expect(report.rekeyed).toBeGreaterThanOrEqual(3);
    expect(report.manifests_rekeyed).toBeGreaterThanOrEqual(1);
    for (const key of mine) expect((await object(key)).subarray(6, 14).toString('hex'), key).toBe(keyIdOf(keyB));
    for (const uid of uids) expect((await object(`manifests/${uid}`)).subarray(32 + 6, 32 + 14).toString('hex')).toBe(keyIdOf(keyB));

    // The key-less cloud scrub compares each object with the checksum in the index: rekey updated it.
    for (const uid of uids) {
      const scrub = await runCli(['-c', cfgBOnly, 'scrub', '--in-cloud', uid], dir);
      expect(scrub.code, scrub.stderr).toBe(0);
    }
    for (const uid of uids) await restoresBitExact(cfgBOnly, uid);

    const outsider = await runCli(['-c', cfgC, 'ls'], dir);
    expect(outsider.code, outsider.stderr).toBe(7);
    expect(outsider.stderr).toMatch(/not in this repository's key ring/);
  });
});
