import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { metadataStoreContract } from '../contract/metadata-store.contract.ts';

metadataStoreContract('SQLite', async () => SqliteMetadataStore.init(join(mkdtempSync(join(tmpdir(), 'backy2-contract-')), 'meta.sqlite')));
