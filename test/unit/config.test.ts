import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config/config.ts';
import { parseIni } from '../../shared/config/ini.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';

const SAMPLE = readFileSync(new URL('./fixtures/backy2-sample.cfg', import.meta.url), 'utf8');

function refusal(text: string, source = '/etc/backy.cfg'): Backy2Error {
  try {
    parseConfig(text, source);
  } catch (e) {
    expect(e).toBeInstanceOf(Backy2Error);
    return e as Backy2Error;
  }
  throw new Error(`config was accepted: ${JSON.stringify(text)}`);
}

describe('parseConfig: a backy2 config', () => {
  it('reads the sample in the shape backy2 ships (key: value, unknown keys and sections, multi-line values, inline comments)', () => {
    const c = parseConfig(SAMPLE, '/etc/backy.cfg');
    expect(c).toMatchObject({
      source: '/etc/backy.cfg',
      blockSize: 4194304,
      encryptionKeyHex: '0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF',
      minAgeDaysForRm: 6,
      lockDir: '/run',
      sqlitePath: '/var/lib/backy2/backy.sqlite',
      dataPath: '/var/lib/backy2/data',
      aws: undefined,
    });
  });

  it('takes simultaneous_reads/writes from [DataBackend] (where backy2 puts them) unless [DEFAULTS] sets them', () => {
    expect(parseConfig(SAMPLE, 'x')).toMatchObject({ simultaneousReads: 7, simultaneousWrites: 5 });
    const both = '[DEFAULTS]\nsimultaneous_reads: 2\n[DataBackend]\nsimultaneous_reads: 9\nsimultaneous_writes: 3\n';
    expect(parseConfig(both, 'x')).toMatchObject({ simultaneousReads: 2, simultaneousWrites: 3 });
  });

  it('accepts `key = value` as well as `key: value`, and both data backend type spellings', () => {
    for (const type of ['file', 'backy2.data_backends.file']) {
      const c = parseConfig(`[DEFAULTS]\nblock_size = 8192\n[DataBackend]\ntype = ${type}\npath = /srv/data\n`, 'x');
      expect(c).toMatchObject({ blockSize: 8192, dataPath: '/srv/data' });
    }
  });

  it('an empty config gives the defaults', () => {
    expect(parseConfig('', '(defaults)')).toMatchObject({
      blockSize: 4 * 1024 * 1024,
      encryptionKeyHex: undefined,
      minAgeDaysForRm: 6,
      simultaneousReads: 4,
      simultaneousWrites: 4,
      cleanupGraceSeconds: 3600,
      maxBackupAgeSeconds: 86400,
      sqlitePath: undefined,
      dataPath: undefined,
      aws: undefined,
    });
  });

  it('an [aws] section selects the serverless backend', () => {
    const c = parseConfig('[aws]\nstack_name: Backy2\nregion: eu-central-1\nendpoint_url: http://localhost:4566\n', 'x');
    expect(c.aws).toEqual({ stackName: 'Backy2', region: 'eu-central-1', endpointUrl: 'http://localhost:4566', profile: undefined });
  });
});

describe('parseConfig: malformed values', () => {
  const cases: [string, string, RegExp][] = [
    ['block_size not a number', '[DEFAULTS]\nblock_size: 4M', /\[DEFAULTS\] block_size: .*integer.*"4M"/],
    ['block_size not a multiple of 4096', '[DEFAULTS]\nblock_size: 5000', /\[DEFAULTS\] block_size: .*multiple of 4096/],
    ['block_size above 64 MiB', '[DEFAULTS]\nblock_size: 134217728', /\[DEFAULTS\] block_size: .*at most 64 MiB/],
    [
      'negative disallow_rm_when_younger_than_days',
      '[DEFAULTS]\ndisallow_rm_when_younger_than_days: -1',
      /\[DEFAULTS\] disallow_rm_when_younger_than_days: .*>= 0/,
    ],
    ['zero simultaneous_reads', '[DEFAULTS]\nsimultaneous_reads: 0', /\[DEFAULTS\] simultaneous_reads: .*>= 1/],
    ['fractional simultaneous_writes in [DataBackend]', '[DataBackend]\nsimultaneous_writes: 2.5', /\[DataBackend\] simultaneous_writes: .*integer/],
    ['max_backup_age_seconds below a minute', '[DEFAULTS]\nmax_backup_age_seconds: 10', /\[DEFAULTS\] max_backup_age_seconds: .*>= 60/],
    ['unknown data backend type', '[DataBackend]\ntype: backy2.data_backends.s3', /\[DataBackend\] type: type must be "file"/],
    ['non-sqlite engine', '[MetaBackend]\nengine: postgresql:///backy2', /\[MetaBackend\] engine: .*sqlite:\/\/\/\//],
    ['relative sqlite path', '[MetaBackend]\nengine: sqlite:///var/backy.sqlite', /\[MetaBackend\] engine must name an absolute path/],
    ['empty stack_name', '[aws]\nstack_name:', /\[aws\] stack_name: /],
    ['endpoint_url not a URL', '[aws]\nstack_name: B\nendpoint_url: localhost', /\[aws\] endpoint_url: /],
    [
      'a line that is neither section nor key',
      '[DEFAULTS]\nblock_size: 4096\nthis is not ini',
      /line 3: expected \[section\] or key: value, got "this is not ini"/,
    ],
    ['a key before any section', 'block_size: 4096', /line 1: "block_size" appears before any \[section\]/],
  ];
  it.each(cases)('%s: a one-line usage error (1) naming file and key', (_what, text, message) => {
    const e = refusal(text);
    expect(e.exitCode).toBe(ExitCode.usage);
    expect(e.message).toMatch(/^Malformed config \/etc\/backy\.cfg/);
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain('\n');
  });
});

describe('parseIni', () => {
  it('lower-cases keys, keeps section names, strips comments and joins continuation lines', () => {
    const ini = parseIni('; top comment\n[Sec]\nKey: v1   # note\nmulti:\n  a\n  b\n\n# c\n[Other]\nx=1\n', 'f');
    expect(ini).toEqual({ Sec: { key: 'v1', multi: '\na\nb' }, Other: { x: '1' } });
  });
  it('accepts CRLF line endings', () => {
    expect(parseIni('[A]\r\nk: v\r\n', 'f')).toEqual({ A: { k: 'v' } });
  });
});
