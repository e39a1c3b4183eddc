import { type AddressInfo, createServer } from 'node:net';

/**
 * A port that is free on `host` right now (port 0 resolved early: certificates carry the API URL,
 * and every broker worker must listen on the same number).
 */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
