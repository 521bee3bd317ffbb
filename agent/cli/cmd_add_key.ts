import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { parseMasterKey } from '../../shared/blocks/keys.ts';
import { createKeyFile } from '../io/key-file.ts';
import { usageError } from '../../shared/domain/errors.ts';
import type { AddKeyResult } from '../../shared/app/rekey.ts';
import { renderRows, type Column } from '../ui/table.ts';
import { outputMode, print, withBackend } from './context.ts';

type Row = AddKeyResult & { file: string };
const columns: Column<Row>[] = [
  { name: 'key_id', align: 'l', value: (r) => r.keyId },
  { name: 'file', align: 'l', value: (r) => r.file },
  { name: 'added', align: 'c', value: (r) => (r.added ? 1 : 0) },
  { name: 'ring', align: 'l', value: (r) => r.ring.join(',') },
];

/** add-key: a new master key may open the repository (key rotation); run with the current key configured. */
export function register(program: Command): void {
  program
    .command('add-key')
    .description('Add a new encryption key to the repository (key rotation); run with the current key configured')
    .argument('<keyfile>', 'file holding the new key (64 hex characters); with --generate, created')
    .option('--generate', 'create a new random key in <keyfile> (mode 0600; refuses to overwrite)')
    .action(async (keyFile: string, opts: { generate?: boolean }, cmd: Command) => {
      if (opts.generate && existsSync(keyFile)) throw usageError(`Key file ${keyFile} exists; refusing to overwrite it`);
      const given = opts.generate ? null : readKeyFile(keyFile);
      await withBackend(cmd, async (backend, g, log) => {
        if (!backend.addKey) throw usageError('This backend cannot add keys');
        // Generated only once the repository opened with the current key: no stray key files.
        const result = await backend.addKey(given ?? generateKeyFile(keyFile));
        log.info(result.added ? `Added key ${result.keyId} to the key ring (${result.ring.length} keys)` : `Key ${result.keyId} is in the key ring already`);
        log.info(`Next: set encryption_key to the new key, list the current one under old_encryption_keys, then run "backy2 rekey"`);
        if (g.json || g.machineOutput) print(renderRows(columns, [{ ...result, file: keyFile }], outputMode(g)));
      });
    });
}

function readKeyFile(file: string): Buffer {
  if (!existsSync(file)) throw usageError(`Key file ${file} not found (use --generate to create one)`);
  return parseMasterKey(readFileSync(file, 'utf8'), `key file ${file}`);
}

function generateKeyFile(file: string): Buffer {
  if (existsSync(file)) throw usageError(`Key file ${file} exists; refusing to overwrite it`);
  const key = randomBytes(32);
  createKeyFile(file, key);
  return key;
}
