/**
 * A real `fleetgate serve` plus an mTLS MQTT broker for the device-client tests. The broker is
 * fleetgate's own when the serve banner announces one (`MQTT (mTLS)   mqtts://...`); until it does,
 * a mosquitto started here with a server certificate from the same issuing CA,
 * `require_certificate true`, `use_identity_as_username true`, `set_tcp_nodelay true` and the CA's
 * CRL (refreshed and reloaded on demand), so revocation also reaches it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import mqtt from 'mqtt';
import { runCli, type ServeHandle, startServe, tempDir } from './cli.js';
import { NEW_P256_KEY } from './openssl.js';

/** A backend service subscribed to device topics: sees what devices publish, independent of them. */
export interface Observer {
  messages: { topic: string; payload: string }[];
  close(): Promise<void>;
}

export interface FleetgateEnv {
  server: ServeHandle;
  env: Record<string, string>;
  /** Pinned CA bundle PEM (root + issuing). */
  bundle: string;
  apiUrl: string;
  mqttUrl: string;
  broker: 'fleetgate' | 'mosquitto';
  token(deviceId: string): Promise<string>;
  revoke(deviceId: string): Promise<void>;
  /** Subscribes a service credential (`fleetgate service create`) to `filter`. */
  observe(filter: string): Promise<Observer>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function startFleetgate(extraEnv: Record<string, string> = {}): Promise<FleetgateEnv> {
  const env = { FLEETGATE_DATA_DIR: tempDir('fg-dc-data-'), ...extraEnv };
  const server = await startServe(env);
  const exported = await runCli(['ca', 'export'], env);
  if (exported.code !== 0) throw new Error(`ca export failed: ${exported.stderr}`);
  const bundle = exported.stdout;
  const announced = /MQTT \(mTLS\)\s+(mqtts:\/\/\S+)/.exec(server.banner)?.[1];
  let mosquitto: Mosquitto | undefined;
  if (!announced) mosquitto = await startMosquitto(env, server.apiUrl, bundle);
  const mqttUrl = announced ?? (mosquitto as Mosquitto).url;
  return {
    server,
    env,
    bundle,
    apiUrl: server.apiUrl,
    mqttUrl,
    broker: announced ? 'fleetgate' : 'mosquitto',
    async token(deviceId) {
      const r = await runCli(['token', 'create', '--device', deviceId, '--json'], env);
      if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`);
      const parsed = JSON.parse(r.stdout) as { token: string }[];
      const t = parsed[0]?.token;
      if (!t) throw new Error(`no token in ${r.stdout}`);
      return t;
    },
    async revoke(deviceId) {
      const r = await runCli(['revoke', deviceId, '--json'], env);
      if (r.code !== 0) throw new Error(`revoke failed: ${r.stderr}`);
      await mosquitto?.refreshCrl();
    },
    async observe(filter) {
      const out = tempDir('fg-dc-svc-');
      const name = 'dc-observer';
      const r = await runCli(['service', 'create', name, '--out', out], env);
      if (r.code !== 0) throw new Error(`service create failed: ${r.stdout}${r.stderr}`);
      const messages: { topic: string; payload: string }[] = [];
      const client = await mqtt.connectAsync(mqttUrl, {
        clientId: `${name}-${Math.random().toString(16).slice(2, 8)}`,
        key: readFileSync(path.join(out, `${name}.key`)),
        cert: readFileSync(path.join(out, `${name}.crt`)),
        ca: bundle,
        reconnectPeriod: 0,
      });
      client.on('message', (topic, payload) => messages.push({ topic, payload: payload.toString() }));
      await client.subscribeAsync(filter, { qos: 1 });
      return { messages, close: () => client.endAsync() };
    },
    async stop() {
      await mosquitto?.stop();
      await server.stop();
    },
  };
}

export interface Mosquitto {
  url: string;
  port: number;
  dir: string;
  refreshCrl(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function fetchDer(url: string, ca: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
      })
      .on('error', reject);
  });
}

async function startMosquitto(env: Record<string, string>, apiUrl: string, bundle: string): Promise<Mosquitto> {
  if (!existsSync('/usr/sbin/mosquitto'))
    throw new Error('serve announces no MQTT broker and /usr/sbin/mosquitto is not installed to stand in for it');
  const dir = tempDir('fg-dc-mosq-');
  const file = (n: string) => path.join(dir, n);
  writeFileSync(file('bundle.pem'), bundle);
  const issuing = await runCli(['ca', 'export', '--issuing-only'], env);
  writeFileSync(file('issuing.crt'), issuing.stdout);
  const issuingKey = path.join(env.FLEETGATE_DATA_DIR as string, 'ca', 'issuing.key');
  // A broker certificate from the issuing CA: SAN 127.0.0.1/localhost, EKU serverAuth.
  writeFileSync(
    file('ext.cnf'),
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier=keyid\n',
  );
  const ossl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  ossl(['req', '-new', ...NEW_P256_KEY, '-keyout', 'server.key', '-subj', '/CN=mosquitto-test', '-out', 'server.csr']);
  ossl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'issuing.crt',
    '-CAkey',
    issuingKey,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
    '-out',
    'server.crt',
  ]);
  writeFileSync(file('chain.crt'), readFileSync(file('server.crt'), 'utf8') + issuing.stdout);
  const refreshCrl = async () => {
    const der = await fetchDer(`${apiUrl}/crl`, bundle);
    writeFileSync(file('crl.der'), der);
    ossl(['crl', '-inform', 'DER', '-in', 'crl.der', '-out', 'crl.pem']);
  };
  await refreshCrl();
  const port = await freePort();
  writeFileSync(
    file('mosquitto.conf'),
    [
      'user root',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      `listener ${port} 127.0.0.1`,
      `cafile ${file('bundle.pem')}`,
      `certfile ${file('chain.crt')}`,
      `keyfile ${file('server.key')}`,
      `crlfile ${file('crl.pem')}`,
      'require_certificate true',
      'use_identity_as_username true',
      'set_tcp_nodelay true',
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  let log = '';
  const launch = async () => {
    child = spawn('/usr/sbin/mosquitto', ['-c', file('mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr?.on('data', (d) => {
      log += d;
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const up = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (up) return;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`mosquitto did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async () => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
    });
  };
  await launch();
  return {
    url: `mqtts://127.0.0.1:${port}`,
    port,
    dir,
    async refreshCrl() {
      await refreshCrl();
      // mosquitto reads the CRL at start; a restart is its reload (TLS tickets do not survive it).
      await stop();
      await launch();
    },
    async restart() {
      await stop();
      await launch();
    },
    stop,
  };
}
