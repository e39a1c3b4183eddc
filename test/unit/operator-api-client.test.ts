/**
 * The shared operator API client (@fleetgate/device-client/operator-api) fails with a stable code
 * when nothing answers; its calls against a real server are exercised by firmware-sim.test.ts.
 */
import { once } from 'node:events';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { OperatorApiError, operatorApi } from '../../device-client/src/operator-api.js';

describe('operator API client', () => {
  it('a closed port is SERVER_UNREACHABLE, naming the URL', async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    server.close();
    await once(server, 'close');
    const api = operatorApi({ baseUrl: `https://127.0.0.1:${port}`, token: 'x', timeoutMs: 10_000 });
    const error = await api.listDevices({ status: 'revoked' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OperatorApiError);
    expect((error as OperatorApiError).code).toBe('SERVER_UNREACHABLE');
    expect((error as OperatorApiError).message).toContain(`127.0.0.1:${port}`);
  });

  it('a server that never answers TLS is SERVER_UNREACHABLE after the deadline, not a hang', async () => {
    const server = createServer(() => {}).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    try {
      const api = operatorApi({ baseUrl: `https://127.0.0.1:${port}`, timeoutMs: 300 });
      const error = await api.request('GET', '/api/v1/devices').catch((e: unknown) => e);
      expect((error as OperatorApiError).code).toBe('SERVER_UNREACHABLE');
      expect((error as OperatorApiError).message).toContain('ETIMEDOUT');
    } finally {
      server.close();
    }
  });
});
