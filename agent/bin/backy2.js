#!/usr/bin/env node
// Launcher: the CLI is TypeScript run by Node's type stripping (Node >= 22.18). On an older
// `node` (the machines' own is 20) re-run it with the Node 24 pinned in package.json.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../cli/main.ts', import.meta.url));
const [major, minor] = process.versions.node.split('.').map(Number);
if (major > 22 || (major === 22 && minor >= 18)) {
  await import(main);
} else {
  const require = createRequire(import.meta.url);
  const node = require.resolve('node/bin/node');
  const child = spawnSync(node, [main, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(child.status ?? 100);
}
