import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { blockStoreContract } from '../contract/block-store.contract.ts';

blockStoreContract('directory', async () => new DirBlockStore(mkdtempSync(join(tmpdir(), 'backy2-blocks-contract-'))));
