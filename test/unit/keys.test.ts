import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { deriveKeys, keyFingerprint, parseMasterKey } from '../../shared/blocks/keys.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';

const masterArb = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b));

describe('deriveKeys (HKDF)', () => {
  it('is deterministic', () => {
    fc.assert(
      fc.property(masterArb, (master) => {
        const [a, b] = [deriveKeys(master), deriveKeys(Buffer.from(master))];
        expect(a.keyId.equals(b.keyId) && a.encryptionKey.equals(b.encryptionKey) && a.dedupKey.equals(b.dedupKey)).toBe(true);
      }),
    );
  });

  it('derives keys of the right sizes, distinct from each other and from the master key', () => {
    fc.assert(
      fc.property(masterArb, (master) => {
        const k = deriveKeys(master);
        expect([k.keyId.length, k.encryptionKey.length, k.dedupKey.length]).toEqual([8, 32, 32]);
        expect(k.encryptionKey.equals(k.dedupKey)).toBe(false);
        expect(k.encryptionKey.equals(master)).toBe(false);
        expect(k.dedupKey.equals(master)).toBe(false);
        expect(k.encryptionKey.subarray(0, 8).equals(k.keyId)).toBe(false);
      }),
    );
  });

  it('different master keys give different keys and key ids', () => {
    fc.assert(
      fc.property(masterArb, masterArb, (m1, m2) => {
        fc.pre(!m1.equals(m2));
        const [a, b] = [deriveKeys(m1), deriveKeys(m2)];
        expect(a.keyId.equals(b.keyId)).toBe(false);
        expect(a.encryptionKey.equals(b.encryptionKey)).toBe(false);
        expect(a.dedupKey.equals(b.dedupKey)).toBe(false);
      }),
    );
  });

  it('is RFC 5869 HKDF-SHA256 with the repository salt and one info string per key (checked against an independent implementation)', () => {
    const hmac = (key: Buffer, data: Buffer) => createHmac('sha256', key).update(data).digest();
    const hkdf = (ikm: Buffer, info: string, length: number) => {
      const prk = hmac(Buffer.from('backy2-serverless/v1'), ikm);
      let t = Buffer.alloc(0);
      let okm = Buffer.alloc(0);
      for (let i = 1; okm.length < length; i++) {
        t = hmac(prk, Buffer.concat([t, Buffer.from(info), Buffer.from([i])]));
        okm = Buffer.concat([okm, t]);
      }
      return okm.subarray(0, length);
    };
    fc.assert(
      fc.property(masterArb, (master) => {
        const k = deriveKeys(master);
        expect(k.keyId.equals(hkdf(master, 'key-id', 8))).toBe(true);
        expect(k.encryptionKey.equals(hkdf(master, 'encryption', 32))).toBe(true);
        expect(k.dedupKey.equals(hkdf(master, 'dedup', 32))).toBe(true);
      }),
      { numRuns: 20 },
    );
  });

  it('the fingerprint is short, stable and does not reveal the key id', () => {
    const k = deriveKeys(Buffer.alloc(32));
    expect(keyFingerprint(k)).toMatch(/^[0-9a-f]{16}$/);
    expect(keyFingerprint(deriveKeys(Buffer.alloc(32)))).toBe(keyFingerprint(k));
    expect(keyFingerprint(k)).not.toContain(k.keyId.toString('hex'));
    expect(keyFingerprint(deriveKeys(Buffer.alloc(32, 1)))).not.toBe(keyFingerprint(k));
  });
});

describe('parseMasterKey', () => {
  const valid = 'a'.repeat(64);
  it('accepts 64 hex chars of either case, with surrounding whitespace (a key file ends in a newline)', () => {
    expect(parseMasterKey(valid).equals(Buffer.alloc(32, 0xaa))).toBe(true);
    expect(parseMasterKey('AB'.repeat(32) + '\n').equals(Buffer.alloc(32, 0xab))).toBe(true);
  });

  const refusals: [string | undefined, RegExp][] = [
    [undefined, /is missing/],
    ['', /is missing/],
    ['   ', /is missing/],
    ['abc', /has 3 hex characters; it must have exactly 64/],
    ['a'.repeat(66), /has 66 hex characters/],
    ['g'.repeat(64), /is not hexadecimal/],
    ['a'.repeat(32) + ' ' + 'a'.repeat(31), /is not hexadecimal/],
  ];
  it.each(refusals)('refuses %j with a usage error (1) naming the key', (hex, message) => {
    let thrown: unknown;
    try {
      parseMasterKey(hex, '[DEFAULTS] encryption_key in /etc/backy.cfg');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(Backy2Error);
    expect((thrown as Backy2Error).exitCode).toBe(ExitCode.usage);
    expect((thrown as Backy2Error).message).toMatch(/^\[DEFAULTS\] encryption_key in \/etc\/backy\.cfg /);
    expect((thrown as Backy2Error).message).toMatch(message);
    expect((thrown as Backy2Error).message).not.toContain('\n');
  });

  it('names encryption_key by default', () => {
    expect(() => parseMasterKey('xyz')).toThrow(/^encryption_key /);
  });
});
