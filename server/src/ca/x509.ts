/**
 * The one entry point to @peculiar/x509 for ca/ (and anyone else in the server): installs the
 * Reflect metadata API (reflect-metadata) it needs first, then binds Node's WebCrypto as its default provider.
 * Import as `import * as x509 from './x509.js'`.
 */
// tsyringe (inside @peculiar/x509 v2) needs the Reflect metadata API before it loads.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { cryptoProvider } from '@peculiar/x509';

cryptoProvider.set(webcrypto as unknown as ReturnType<typeof cryptoProvider.get>);

export * from '@peculiar/x509';
