/**
 * The per-name retention policy handed to the stack at deploy (context `retention` or
 * `retentionConfig`): validated at synth, delivered to the retention function only.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.ts';

type Fn = { Properties: { Environment: { Variables: Record<string, unknown> }; Description?: string }; Metadata?: Record<string, unknown> };

function functionEnv(context: Record<string, unknown>): Record<string, Record<string, unknown>> {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], 'aws:cdk:enable-path-metadata': true, ...context } });
  const { stack } = buildApp(app);
  const fns = Template.fromStack(stack).findResources('AWS::Lambda::Function') as Record<string, Fn>;
  const byId: Record<string, Record<string, unknown>> = {};
  for (const fn of Object.values(fns)) {
    const id = /\/(\w+)\/Function\/Resource$/.exec(String(fn.Metadata?.['aws:cdk:path'] ?? ''))?.[1];
    if (id) byId[id] = fn.Properties.Environment.Variables;
  }
  return byId;
}

describe('retention policy context', { timeout: 60_000 }, () => {
  it('context retention reaches the retention function (only) as normalised JSON', () => {
    const env = functionEnv({ retention: 'vm1: days7,latest3; *: latest7' });
    expect(JSON.parse(String(env['Retention']!['RETENTION_POLICY']))).toEqual({ vm1: 'latest3,days7', '*': 'latest7' });
    for (const id of ['Api', 'AdminApi', 'Ingest', 'Cleanup']) expect(env[id], id).not.toHaveProperty('RETENTION_POLICY');
  });

  it('retentionConfig reads the [retention] section of a backy config file', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'backy2-infra-')), 'backy.cfg');
    writeFileSync(file, '[DEFAULTS]\nblock_size: 4194304\n\n[retention]\nweb: weeks4\n');
    expect(JSON.parse(String(functionEnv({ retentionConfig: file })['Retention']!['RETENTION_POLICY']))).toEqual({ web: 'weeks4' });
  });

  it('without either, no policy (only expired versions are removed)', () => {
    expect(functionEnv({})['Retention']).not.toHaveProperty('RETENTION_POLICY');
  });

  it('malformed rules fail the synth with the context key and the entry named', () => {
    expect(() => functionEnv({ retention: 'vm1: latest3,dayz7' })).toThrow(
      /context retention: retention vm1: Invalid retention rules "latest3,dayz7": unknown category "dayz"/,
    );
    expect(() => functionEnv({ retentionConfig: '/nonexistent/backy.cfg' })).toThrow(/context retentionConfig: .*no such file/i);
  });
});
