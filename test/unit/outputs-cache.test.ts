/**
 * The stack outputs cache file (agent/backend/outputs-cache.ts): one file per endpoint, region,
 * profile and stack name; written atomically; anything unreadable, garbled, incomplete or for
 * another target reads as no cache. Real files in a scratch directory.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isMissingResource } from '../../agent/backend/cloud.ts';
import {
  dropCachedOutputs,
  outputsCacheEnabled,
  outputsCachePath,
  readCachedOutputs,
  writeCachedOutputs,
  type StackTarget,
} from '../../agent/backend/outputs-cache.ts';

const REQUIRED = ['BucketName', 'EventsTableName'] as const;
const target: StackTarget = { stackName: 'Backy2', region: 'eu-west-1', endpoint: 'http://127.0.0.1:4566', profile: undefined };
const outputs = { BucketName: 'backy2-bucket-abc', EventsTableName: 'Backy2-Events-XYZ', JournalKeyArn: 'arn:aws:kms:eu-west-1:1:key/k' };
const home = () => mkdtempSync(join(tmpdir(), 'backy2-outputs-cache-'));

describe('stack outputs cache file', () => {
  afterEach(() => {
    delete process.env['BACKY2_STACK_OUTPUTS_CACHE'];
  });

  it('written, then read back as the same outputs; the directory holds no temporary file', () => {
    const file = outputsCachePath(home(), target);
    expect(readCachedOutputs(file, target, REQUIRED)).toBeUndefined();
    writeCachedOutputs(file, target, outputs);
    expect(readCachedOutputs(file, target, REQUIRED)).toEqual(outputs);
    expect(readdirSync(dirname(file))).toEqual([file.split('/').pop()]);
    writeCachedOutputs(file, target, { ...outputs, BucketName: 'backy2-bucket-new' });
    expect(readCachedOutputs(file, target, REQUIRED)?.['BucketName']).toBe('backy2-bucket-new');
    dropCachedOutputs(file);
    expect(readCachedOutputs(file, target, REQUIRED)).toBeUndefined();
    dropCachedOutputs(file); // dropping a missing file is fine
  });

  it('one file per endpoint, region, profile and stack name', () => {
    const h = home();
    const paths = new Set(
      [target, { ...target, endpoint: undefined }, { ...target, region: 'us-east-1' }, { ...target, profile: 'prod' }, { ...target, stackName: 'Other' }].map(
        (t) => outputsCachePath(h, t),
      ),
    );
    expect(paths.size).toBe(5);
    expect(outputsCachePath(h, target)).toBe(outputsCachePath(h, { ...target }));
  });

  it('a file for another target (same path, other contents) reads as no cache', () => {
    const file = outputsCachePath(home(), target);
    writeCachedOutputs(file, { ...target, region: 'us-east-1' }, outputs);
    expect(readCachedOutputs(file, target, REQUIRED)).toBeUndefined();
  });

  it.each([
    ['empty', ''],
    ['truncated JSON', '{"format": 1, "outputs": {"BucketName": '],
    ['not an object', '42'],
    ['another format', JSON.stringify({ format: 2, target, outputs })],
    ['an output missing', JSON.stringify({ format: 1, target, outputs: { BucketName: 'b' } })],
    ['an empty output', JSON.stringify({ format: 1, target, outputs: { BucketName: '', EventsTableName: 't' } })],
    ['a non-string output', JSON.stringify({ format: 1, target, outputs: { BucketName: 'b', EventsTableName: 7 } })],
  ])('a garbled file (%s) reads as no cache, and is rewritten', (_, text) => {
    const file = outputsCachePath(home(), target);
    writeCachedOutputs(file, target, outputs);
    writeFileSync(file, text);
    expect(readCachedOutputs(file, target, REQUIRED)).toBeUndefined();
    writeCachedOutputs(file, target, outputs);
    expect(readCachedOutputs(file, target, REQUIRED)).toEqual(outputs);
  });

  it('an unreadable file (a directory in its place) reads as no cache', () => {
    const file = outputsCachePath(home(), target);
    mkdirSync(file, { recursive: true });
    expect(readCachedOutputs(file, target, REQUIRED)).toBeUndefined();
  });

  it('a home it cannot write to: the write fails (the caller goes on without the cache), nothing is left behind', () => {
    const h = home();
    const file = outputsCachePath(h, target);
    writeCachedOutputs(file, target, outputs);
    writeFileSync(join(h, 'blocked'), 'a file, not a directory');
    expect(() => writeCachedOutputs(outputsCachePath(join(h, 'blocked'), target), target, outputs)).toThrow();
    expect(JSON.parse(readFileSync(file, 'utf8')).outputs).toEqual(outputs);
  });

  it('BACKY2_STACK_OUTPUTS_CACHE=0 (or false/no/off) turns it off', () => {
    expect(outputsCacheEnabled()).toBe(true);
    for (const off of ['0', 'false', 'NO', 'off']) {
      process.env['BACKY2_STACK_OUTPUTS_CACHE'] = off;
      expect(outputsCacheEnabled()).toBe(false);
    }
    process.env['BACKY2_STACK_OUTPUTS_CACHE'] = '1';
    expect(outputsCacheEnabled()).toBe(true);
  });

  it('the errors of a missing bucket, table, function or queue are told apart from others', () => {
    for (const name of ['NoSuchBucket', 'ResourceNotFoundException', 'QueueDoesNotExist', 'AWS.SimpleQueueService.NonExistentQueue'])
      expect(isMissingResource(Object.assign(new Error('gone'), { name }))).toBe(true);
    expect(isMissingResource({ name: 'Error', Code: 'AWS.SimpleQueueService.NonExistentQueue' })).toBe(true);
    for (const name of ['NoSuchKey', 'AccessDenied', 'SlowDown', 'ValidationException'])
      expect(isMissingResource(Object.assign(new Error('x'), { name }))).toBe(false);
    expect(isMissingResource(null)).toBe(false);
  });
});
