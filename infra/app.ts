import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { readSettings } from './config.ts';
import { Backy2Stack } from './stack.ts';

/**
 * CDK app: `npx cdk deploy` (see cdk.json). Context keys (`-c key=value`) and
 * defaults are in config.ts: stackName (Backy2), retain (true),
 * scheduleRateMinutes (unset: production schedules), cleanupGraceSeconds
 * (3600), maxBackupAgeSeconds (86400), minAgeDaysForRm (6), ingestTimeoutSeconds (60),
 * scrubWorkerTimeoutSeconds (300), visibilityTimeoutFactor (6), retention / retentionConfig
 * (per-name retention rules for the retention schedule; none).
 */
export function buildApp(app: App = new App()): { app: App; stack: Backy2Stack } {
  const settings = readSettings(app.node);
  const stack = new Backy2Stack(app, 'Backy2Stack', {
    stackName: settings.stackName,
    settings,
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  });
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return { app, stack };
}

if (import.meta.main) {
  buildApp().app.synth();
}
