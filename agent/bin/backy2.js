#!/usr/bin/env node
// Launcher: the CLI is TypeScript run by Node's type stripping (Node >= 22.18). On an older
// `node` (the machines' own is 20) re-run it with the Node 24 pinned in package.json.
import { spawnSync } from 'node:child_process';
import module, { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

const BLOCK_COMMANDS = new Set(['backup', 'restore', 'scrub', 'nbd']);

const main = fileURLToPath(new URL('../cli/main.ts', import.meta.url));
const [major, minor] = process.versions.node.split('.').map(Number);
if (major > 22 || (major === 22 && minor >= 18)) {
  // Node's compile cache (in the OS temp dir, or NODE_COMPILE_CACHE) keeps the type-stripped,
  // compiled CLI between runs: every command starts ~0.4 s sooner and ~27 MiB smaller, because
  // the TypeScript stripper (a WebAssembly module) is not loaded again. A cache that cannot be
  // written is skipped by Node silently.
  const cache = module.enableCompileCache?.();
  // The codec's worker threads compile their own modules: the same cache serves them.
  if (cache?.directory && !process.env.NODE_COMPILE_CACHE) process.env.NODE_COMPILE_CACHE = cache.directory;
  // Commands that process blocks start the codec's threads now, so they load while the CLI does.
  try {
    if (process.argv.slice(2).some((arg) => BLOCK_COMMANDS.has(arg))) {
      const { startCodecWorkersEarly } = await import(new URL('../../shared/blocks/codec-pool.ts', import.meta.url).href);
      startCodecWorkersEarly(availableParallelism());
    }
    await import(main);
  } catch (e) {
    exitOnLoadLimit(e);
    throw e;
  }
} else {
  const require = createRequire(import.meta.url);
  const node = require.resolve('node/bin/node');
  const child = spawnSync(node, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(child.status ?? 100);
}

/**
 * Out of file descriptors (or memory) while Node loads our modules, before the CLI's own error
 * handling exists ("Cannot read package config …: too many open files"): one line and exit 12,
 * as the CLI does for the same limit later on (README, exit codes). Anything else is a bug.
 */
function exitOnLoadLimit(e) {
  const message = String(e?.message ?? e);
  const cause = /\b(EMFILE|ENFILE|ENOMEM)\b/.exec(`${e?.code ?? ''} ${message}`)?.[1] ?? (/too many open files/i.test(message) ? 'EMFILE' : null);
  if (!cause) return;
  process.stderr.write(
    `${'ERROR'.padStart(9)}: Too many open files (${cause}) while loading backy2's own code: raise the open-files limit (ulimit -n), then run the command again\n`,
  );
  process.exit(12);
}
