import { defineConfig } from 'vitest/config';

/**
 * Two projects:
 * - `unit`: everything under test/ except *.int.test.ts; no network, no emulator.
 * - `integration`: test/integration/**\/*.int.test.ts against the real CDK stack
 *   deployed into MiniStack (started by the global setup) or BACKY2_TEST_ENDPOINT.
 *   Files run one at a time: they share one deployed stack.
 *
 * `npx vitest run --project unit` runs the quick part alone.
 */
export default defineConfig({
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          // Property tests and CDK synths take seconds; on a loaded 2-core machine more than the defaults.
          testTimeout: 30_000,
          hookTimeout: 60_000,
          exclude: ['test/**/*.int.test.ts', '**/node_modules/**', '.venv/**', '.tmp/**', 'cdk.out/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.int.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
