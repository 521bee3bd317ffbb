/**
 * Error classification in one place: operating-system errors by the path's role, SQLite result
 * codes, AWS SDK errors after retries (the SDK's own exception classes); a cloud failure in the
 * middle of a backup fails the version with a line that says how to continue it, and -c does;
 * `-m` output of names stored before the name rules stays one row.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { TooManyRequestsException } from '@aws-sdk/client-lambda';
import { InternalServerError, ProvisionedThroughputExceededException } from '@aws-sdk/client-dynamodb';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { cloudError } from '../../agent/backend/cloud.ts';
import type { Backend } from '../../agent/backend/backend.ts';
import { runBackup } from '../../agent/pipeline/backup.ts';
import { classifyLastResort, osFault, sqliteFault } from '../../shared/adapters/faults.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { checkBackupName, checkTags, escapeMachineField } from '../../shared/domain/names.ts';
import type { BlockStore } from '../../shared/ports/block-store.ts';
import { renderRows } from '../../agent/ui/table.ts';
import { makeRepo, patternImage, type TestRepo } from './helpers/repo.ts';

const errno = (code: string, path?: string) => Object.assign(new Error(`${code}: failed`), { code, ...(path ? { path } : {}) });

describe('operating-system errors', () => {
  test.each([
    ['ENOSPC', 'data', ExitCode.storage, /No space left on the data directory \/d \(ENOSPC\).*cleanup -f/],
    ['EROFS', 'data', ExitCode.storage, /data directory \/d is on a read-only filesystem/],
    ['EACCES', 'database', ExitCode.storage, /Permission denied on the metadata database \/d/],
    ['EIO', 'source', ExitCode.device, /I\/O error on the source \/d \(EIO\)/],
    ['ENOSPC', 'target', ExitCode.device, /No space left on the restore target \/d/],
    ['EMFILE', 'data', ExitCode.systemLimit, /Too many open files \(EMFILE\).*ulimit -n/],
    ['ENOENT', 'data', ExitCode.storage, /data directory \/d is missing \(ENOENT\): is its filesystem mounted/],
  ] as const)('%s on the %s: exit %i', (code, role, exit, re) => {
    const e = osFault(errno(code), role, '/d')!;
    expect(e.exitCode).toBe(exit);
    expect(e.message).toMatch(re);
    expect(e.message).not.toContain('\n');
  });

  test('unknown errors stay unclassified (a bug keeps exit 100); the last resort names the path an errno error carries', () => {
    expect(osFault(new TypeError('x'), 'data')).toBeNull();
    expect(osFault(errno('ENOENT'), 'source')).toBeNull();
    expect(classifyLastResort(new TypeError('x'))).toBeNull();
    expect(classifyLastResort(errno('ENOSPC', '/etc/key'))!.message).toMatch(/No space left on the file \/etc\/key/);
  });

  test('limits that come without an errno code: a worker that could not start, a module Node.js could not load', () => {
    const worker = Object.assign(new Error('Worker initialization failure: EMFILE'), { code: 'ERR_WORKER_INIT_FAILED' });
    expect(classifyLastResort(worker)).toMatchObject({
      exitCode: ExitCode.systemLimit,
      message: expect.stringMatching(/worker thread could not start \(EMFILE\).*ulimit -n/),
    });
    const loader = Object.assign(new Error('Cannot read package config /work/package.json: too many open files.'), { code: 'ERR_INVALID_PACKAGE_CONFIG' });
    expect(classifyLastResort(loader)).toMatchObject({
      exitCode: ExitCode.systemLimit,
      message: expect.stringMatching(/Too many open files \(EMFILE\).*ulimit -n/),
    });
    expect(classifyLastResort(Object.assign(new Error('Cannot read package config: bad JSON'), { code: 'ERR_INVALID_PACKAGE_CONFIG' }))).toBeNull();
  });

  test('SQLite result codes (extended codes too) by what they mean', () => {
    const sqlite = (errcode: number, errstr: string) => Object.assign(new Error(errstr), { code: 'ERR_SQLITE_ERROR', errcode, errstr });
    expect(sqliteFault(sqlite(11, 'database disk image is malformed'), '/db')!.exitCode).toBe(ExitCode.damagedDatabase);
    expect(sqliteFault(sqlite(26, 'file is not a database'), '/db')!.message).toMatch(/\/db is damaged .*sqlite3 \/db "PRAGMA integrity_check"/);
    expect(sqliteFault(sqlite(13, 'database or disk is full'), '/db')!.exitCode).toBe(ExitCode.storage);
    expect(sqliteFault(sqlite(8 | (1 << 8), 'attempt to write a readonly database'), '/db')!.message).toMatch(/read-only/);
    expect(sqliteFault(sqlite(10 | (4 << 8), 'disk I/O error'), '/db')!.exitCode).toBe(ExitCode.storage);
    expect(sqliteFault(sqlite(5, 'database is locked'), '/db')!.exitCode).toBe(ExitCode.locked);
    expect(sqliteFault(new Error('other'), '/db')).toBeNull();
  });
});

describe('AWS errors after the SDK retries', () => {
  const meta = (httpStatusCode: number) => ({ httpStatusCode, attempts: 8, totalRetryDelay: 1000 });
  test('throttling, expired credentials, 5xx: one line, documented codes', () => {
    const throttledInvoke = new TooManyRequestsException({ message: 'Rate exceeded', $metadata: meta(429) });
    expect(cloudError(throttledInvoke, 'function api')).toMatchObject({
      exitCode: ExitCode.cloud,
      message: expect.stringMatching(/AWS throttled function api after 8 attempts \(TooManyRequestsException\)/),
    });
    const throttledTable = new ProvisionedThroughputExceededException({ message: 'slow down', $metadata: meta(400) });
    expect(cloudError(throttledTable, 'the events table').exitCode).toBe(ExitCode.cloud);
    const dynamo500 = new InternalServerError({ message: 'boom', $metadata: meta(500) });
    expect(cloudError(dynamo500, 'the events table')).toMatchObject({
      exitCode: ExitCode.storage,
      message: expect.stringMatching(/failed after 8 attempts with HTTP 500/),
    });
    const slowDown = new S3ServiceException({ name: 'SlowDown', $fault: 'server', message: 'Please reduce your request rate', $metadata: meta(503) });
    expect(cloudError(slowDown, 'bucket b').exitCode).toBe(ExitCode.cloud);
    const expired = new S3ServiceException({ name: 'ExpiredToken', $fault: 'client', message: 'The provided token has expired.', $metadata: meta(400) });
    expect(cloudError(expired, 'bucket b')).toMatchObject({
      exitCode: ExitCode.cloud,
      message: expect.stringMatching(/credentials for bucket b expired .*renew them/),
    });
  });

  test('a stalled request (no answer within the timeout) and a connection never made: one line each, exit 9', () => {
    const stalled = Object.assign(
      new Error('@smithy/node-http-handler - the request socket timed out after 2000 ms of inactivity (configured by client requestHandler).'),
      {
        name: 'TimeoutError',
        $metadata: { attempts: 8 },
      },
    );
    expect(cloudError(stalled, 'stack S (bucket b)')).toMatchObject({
      exitCode: ExitCode.cloud,
      message: expect.stringMatching(
        /^The AWS endpoint for stack S \(bucket b\) stopped answering after 8 attempts \(no answer within 2000 ms\): check the network/,
      ),
    });
    const noConnection = Object.assign(
      new Error('@smithy/node-http-handler - the request socket did not establish a connection with the server within the configured timeout of 10000 ms.'),
      { name: 'TimeoutError' },
    );
    expect(cloudError(noConnection, 'stack S')).toMatchObject({ exitCode: ExitCode.cloud, message: 'Cannot reach the AWS endpoint for stack S: TimeoutError' });
  });

  describe('a cloud failure in the middle of a backup', () => {
    let repo: TestRepo;
    afterEach(() => repo.close());

    test('fails the version (not committed) with a line that says how to continue; -c then completes it bit-exact', async () => {
      repo = makeRepo({ blockSize: 4096 });
      const data = patternImage(Array.from({ length: 2100 }, (_, i) => i + 1));
      const path = repo.image('src.img', data);
      let puts = 0;
      const real = repo.backend.blocks;
      const throttledAfter1500: BlockStore = {
        ...Object.fromEntries(
          ['get', 'getInto', 'head', 'delete', 'list', 'put'].map((k) => [k, (real as unknown as Record<string, (...a: unknown[]) => unknown>)[k]!.bind(real)]),
        ),
        putIfAbsent: async (key: string, body: Buffer) => {
          if (++puts > 1500)
            throw new S3ServiceException({
              name: 'SlowDown',
              $fault: 'server',
              message: 'Please reduce your request rate',
              $metadata: { httpStatusCode: 503, attempts: 8 },
            });
          return real.putIfAbsent(key, body);
        },
      } as BlockStore;
      const failing: Backend = {
        ...repo.backend,
        kind: 'cloud',
        config: repo.backend.config,
        policy: repo.backend.policy,
        catalog: repo.backend.catalog,
        codec: repo.backend.codec,
        blocks: throttledAfter1500,
        cleanup: () => Promise.reject(new Error('unused')),
        close: async () => {},
        explain: (e) => cloudError(e, 'stack Test (bucket b)'),
      };
      const request = { sourceUrl: `file://${path}`, name: 'vm', snapshotName: '', tags: [], expire: null, baseUid: null };
      const failure = await runBackup(failing, request, repo.log, false).then(
        () => null,
        (e: unknown) => e,
      );
      expect(failure).toBeInstanceOf(Backy2Error);
      expect((failure as Backy2Error).exitCode).toBe(ExitCode.cloud);
      expect((failure as Error).message).toMatch(
        /AWS throttled stack Test \(bucket b\) after 8 attempts \(SlowDown\).*continue it with: backy2 backup -c (\S+) file:\/\/\S+src\.img vm$/,
      );
      const uid = /backup -c (\S+) /.exec((failure as Error).message)![1]!;
      const version = await repo.store.getVersion(uid);
      expect(version?.status).toBe('failed');
      expect(version?.recordedChunks).toBe(1);

      const { version: resumed } = await runBackup(repo.backend, { ...request, resumeUid: uid }, repo.log, false);
      expect(resumed.status).toBe('committed');
      expect((await repo.restore(uid)).equals(data)).toBe(true);
    });
  });
});

describe('names at the boundary, and -m output of older ones', () => {
  test('control characters and | are refused, a tag also , and surrounding blanks', () => {
    for (const bad of ['a\nb', 'a|b', 'tab\there', 'nul\u0000', 'del\u007f']) expect(() => checkBackupName(bad)).toThrow(Backy2Error);
    expect(() => checkTags(['a,b'])).toThrow(/","/);
    expect(() => checkTags([' a'])).toThrow(/blanks/);
    expect(() => checkBackupName('vm-01.example.com/disk 1 (ünïcode)')).not.toThrow();
  });

  test('a value stored before the rules is escaped: one line, a fixed number of fields', () => {
    const out = renderRows(
      [
        { name: 'name', align: 'l', value: (r: { name: string }) => r.name },
        { name: 'uid', align: 'l', value: () => 'u1' },
      ],
      [{ name: 'evil|name\nsecond line\\' }],
      { machine: true, skipHeader: true, json: false },
    );
    expect(out).toBe('evil\\|name\\nsecond line\\\\|u1\n');
    expect(escapeMachineField('bell\u0007')).toBe('bell\\x07');
  });
});
