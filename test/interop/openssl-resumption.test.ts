/**
 * Session resumption with a client nobody here wrote: `openssl s_client -sess_out` saves the
 * session (TLS 1.3 ticket / TLS 1.2 ticket), `-sess_in` resumes it ("Reused"), and a raw MQTT
 * CONNECT written to s_client's stdin gets CONNACK 0x00. After the device is revoked, the same
 * resumed session carrying the same CONNECT gets no CONNACK 0x00 (it gets 0x05, then the close).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  connectPacket,
  enrollDevices,
  type Fleet,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { requireTool } from '../helpers/system-tools.js';

const hasOpenssl = requireTool('openssl');

const CONNACK_OK = Buffer.from([0x20, 0x02, 0x00, 0x00]).toString('latin1');
const CONNACK_NOT_AUTHORIZED = Buffer.from([0x20, 0x02, 0x00, 0x05]).toString('latin1');

/** Runs s_client, writes `input` once the handshake is done, returns stdout once a CONNACK (or EOF) came. */
function sClient(args: string[], input: Buffer, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let wrote = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`s_client did not finish:\n${out}`));
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (!wrote && /(New|Reused), TLSv1\.[23]/.test(out)) {
        wrote = true;
        child.stdin.write(input);
      }
      // A CONNACK is 4 bytes starting 0x20 0x02; close stdin so s_client says goodbye.
      if (wrote && out.includes('\x20\x02\x00')) setTimeout(() => child.stdin.end(), 300);
    });
    child.stderr.on('data', () => undefined);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

describe.runIf(hasOpenssl)('openssl s_client session resumption against the broker', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;

  beforeAll(async () => {
    fleet = await startFleet();
    devs = await enrollDevices(fleet, ['ossl-13', 'ossl-12']);
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  for (const [version, id] of [
    ['-tls1_3', 'ossl-13'],
    ['-tls1_2', 'ossl-12'],
  ] as const) {
    it(`resumes with ${version} and refuses the resumed session after revocation`, async () => {
      const cred = devs[id] as Credential;
      const sess = path.join(fleet.work, `${id}.sess`);
      const base = [
        '-connect',
        `${fleet.host}:${fleet.mqttPort}`,
        '-servername',
        'localhost',
        '-CAfile',
        cred.caFile,
        '-cert',
        cred.certFile,
        '-key',
        cred.keyFile,
        '-verify_return_error',
        version,
      ];
      const connect = connectPacket(id);

      const first = await sClient([...base, '-sess_out', sess], connect);
      expect(first).toMatch(/New, TLSv1\.[23]/);
      expect(first).toContain('Verify return code: 0 (ok)');
      expect(first).toContain(CONNACK_OK);

      const resumed = await sClient([...base, '-sess_in', sess], connect);
      expect(resumed).toMatch(/Reused, TLSv1\.[23]/);
      expect(resumed).toContain(CONNACK_OK);

      await revokeDevice(fleet, id);

      const afterRevoke = await sClient([...base, '-sess_in', sess], connect);
      expect(afterRevoke).toMatch(/Reused, TLSv1\.[23]/); // TLS still resumes...
      expect(afterRevoke).not.toContain(CONNACK_OK); // ...MQTT does not
      expect(afterRevoke).toContain(CONNACK_NOT_AUTHORIZED);
    });
  }
});
