import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type Config } from '../../shared/config/config.ts';
import { parseMasterKey } from '../../shared/blocks/keys.ts';
import { loadRepositoryKeys, oldMasterKeys } from '../../shared/app/rekey.ts';
import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { usageError } from '../../shared/domain/errors.ts';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { explainLocalFault } from '../../shared/adapters/faults.ts';
import { createKeyFile } from '../io/key-file.ts';
import type { Log } from '../ui/log.ts';
import type { Backend } from './backend.ts';
import { EmbeddedBackend, type EmbeddedPaths } from './embedded.ts';

/** Where backy2 looks for a config when -c is not given (as the original), before the embedded default. */
const SEARCH_PATH = ['./backy.cfg', '/etc/backy.cfg', '/etc/backy/backy.cfg'];

/** The zero-setup repository: $BACKY2_HOME, else ~/.backy2. */
export const defaultHome = () => process.env['BACKY2_HOME'] || join(homedir(), '.backy2');

export interface Resolved {
  config: Config;
  /** No config file: the embedded default repository with its own key file. */
  isDefault: boolean;
}

export function resolveConfig(configFile: string | undefined): Resolved {
  const file = configFile ?? SEARCH_PATH.find((p) => existsSync(p));
  if (configFile && !existsSync(configFile)) throw usageError(`Config file ${configFile} not found`);
  if (!file) return { config: parseConfig('', '(defaults)'), isDefault: true };
  return { config: parseConfig(readFileSync(file, 'utf8'), file), isDefault: false };
}

export function embeddedPaths(config: Config, isDefault: boolean): EmbeddedPaths {
  const home = defaultHome();
  if (isDefault) return { sqlitePath: join(home, 'backy.sqlite'), dataPath: join(home, 'data') };
  return { sqlitePath: config.sqlitePath ?? join(home, 'backy.sqlite'), dataPath: config.dataPath ?? join(home, 'data') };
}

/**
 * The default repository's key lives in a file of its own (mode 0600). It is created with the
 * repository and never replaced: a repository without its key file is an error, not a reason
 * to make a new key.
 */
export function defaultKey(log: Log, creatingRepository: boolean): Buffer {
  const keyFile = join(defaultHome(), 'key');
  if (existsSync(keyFile)) {
    const mode = statSync(keyFile).mode & 0o777;
    if (mode & 0o077) log.warn(`Key file ${keyFile} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
    return parseMasterKey(readFileSync(keyFile, 'utf8'), `key file ${keyFile}`);
  }
  if (!creatingRepository) throw usageError(`Key file ${keyFile} is missing; without it the backups in ${defaultHome()} cannot be read`);
  mkdirSync(defaultHome(), { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  createKeyFile(keyFile, key);
  log.warn(`Created a new repository in ${defaultHome()}`);
  log.warn(`Its encryption key is in ${keyFile} (mode 0600).`);
  log.warn('KEEP A COPY OF THIS KEY SOMEWHERE ELSE: if it is lost, every backup in this repository is lost with it.');
  return key;
}

export async function openBackend(configFile: string | undefined, log: Log, opts: { initdb?: boolean } = {}): Promise<Backend> {
  const { config, isDefault } = resolveConfig(configFile);
  if (config.aws) {
    const { openCloudBackend } = await import('./cloud.ts');
    return openCloudBackend(config, log, opts);
  }
  const paths = embeddedPaths(config, isDefault);
  try {
    return await openEmbedded(config, paths, isDefault, log, opts);
  } catch (e) {
    throw explainLocalFault(e, paths);
  }
}

async function openEmbedded(config: Config, paths: EmbeddedPaths, isDefault: boolean, log: Log, opts: { initdb?: boolean }): Promise<Backend> {
  const exists = SqliteMetadataStore.exists(paths.sqlitePath);
  const masterKey = isDefault ? defaultKey(log, !exists) : parseMasterKey(config.encryptionKeyHex, `[DEFAULTS] encryption_key in ${config.source}`);
  // Key rotation: the key ring in the block directory gives the repository's dedup key.
  const keys = await loadRepositoryKeys(new DirBlockStore(paths.dataPath), masterKey, oldMasterKeys(config));
  let store: SqliteMetadataStore;
  if (opts.initdb) store = SqliteMetadataStore.init(paths.sqlitePath);
  else if (!exists && isDefault) store = SqliteMetadataStore.init(paths.sqlitePath);
  else store = SqliteMetadataStore.open(paths.sqlitePath);
  try {
    return new EmbeddedBackend(config, paths, store, keys);
  } catch (e) {
    store.close();
    throw e;
  }
}
