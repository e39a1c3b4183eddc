/**
 * The operator console in a real browser (Debian's headless Chromium through playwright-core):
 * sign in, find one device among 1,000 enrolled, revoke it and watch its live MQTT connection
 * close and its status change without reloading, create a batch of 5 tokens, download it and
 * enroll a device with one through EST, verify the audit chain, go back and forward, sign out
 * and be refused. axe-core runs on every page (no serious or critical violation) and every page
 * is screenshotted under test-output/console/.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { axeSerious, chromiumAvailable, launchChromium, screenshotDir } from '../helpers/browser.js';
import { makeCsr } from '../helpers/csr.js';
import { type Credential, enrollDevices, type Fleet, mqttOptions, startFleet } from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';

const run = chromiumAvailable();
const FLEET_SIZE = 1000;
const TARGET = 'cdev-0421';

let fleet: Fleet;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let creds: Record<string, Credential> = {};
/** The device the token batch enrolled: the newest of the fleet. */
let newest = '';
const cspViolations: string[] = [];
const shots = screenshotDir();

async function checkPage(name: string): Promise<void> {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const serious = await axeSerious(page);
  expect(serious, `${name}: ${JSON.stringify(serious, null, 1)}`).toEqual([]);
}

const heading = () => page.getByRole('heading', { level: 1 });

describe.skipIf(!run)('operator console in Chromium', () => {
  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_WORKERS: '1', FLEETGATE_MQTT_PRESENCE_FLUSH: '200ms' } });
    const ids = Array.from({ length: FLEET_SIZE }, (_, i) => `cdev-${String(i).padStart(4, '0')}`);
    // Eight EST clients at a time: the 1,000 devices are enrolled the way devices enroll.
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += Math.ceil(ids.length / 8))
      chunks.push(ids.slice(i, i + Math.ceil(ids.length / 8)));
    for (const part of await Promise.all(chunks.map((c) => enrollDevices(fleet, c)))) creds = { ...creds, ...part };
    browser = await launchChromium();
    context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  }, 600_000); // 1,000 EST enrollments on a shared 2-core machine: minutes, not seconds

  afterAll(async () => {
    await browser?.close();
    await fleet?.stop();
  });

  it('signs in with an operator token; the token is in no browser storage', async () => {
    await page.goto(`${fleet.apiUrl}/console/`);
    await expect.poll(() => heading().textContent()).toBe('fleetgate console');
    await checkPage('01-sign-in');
    const token = readFileSync(path.join(fleet.dataDir, 'operator.token'), 'utf8').trim();
    await page.getByLabel('Operator token').fill('fgo_not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That operator token is not valid.').waitFor();
    await page.getByLabel('Operator token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await heading().filter({ hasText: 'Fleet' }).waitFor();
    await expect.poll(() => page.getByTestId('count-enrolled').textContent()).toBe(String(FLEET_SIZE));
    const stored = (await page.evaluate(
      'JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie',
    )) as string;
    expect(stored).not.toContain(token);
    expect(stored).not.toContain('fleetgate-session'); // HttpOnly: not readable by script
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '__Host-fleetgate-session');
    expect(session).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' });
    await page.locator('.chart canvas').first().waitFor();
    await checkPage('02-fleet');
  });

  it('finds one device among 1,000, revokes it, and its MQTT connection closes while the page shows it live', async () => {
    const client = mqtt.connect(mqttOptions(fleet, creds[TARGET] as Credential));
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));

    await page.getByRole('link', { name: 'Devices' }).click();
    await heading().filter({ hasText: 'Devices' }).waitFor();
    await page.getByText(`${FLEET_SIZE} matching`).waitFor();
    await checkPage('03-devices');
    await page.getByLabel('Device id starts with').fill(TARGET);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByText('1 matching').waitFor();
    expect(new URL(page.url()).search).toBe(`?prefix=${TARGET}`);
    await page.getByRole('link', { name: TARGET }).click();
    await heading().filter({ hasText: TARGET }).waitFor();
    // Presence reaches the page by the live stream (or by the load, if the flush came first).
    await expect.poll(() => page.getByTestId('device-presence').textContent(), { timeout: 20_000 }).toBe('online');
    await checkPage('04-device');

    await page.getByLabel('Reason').selectOption('keyCompromise');
    const revoke = page.getByRole('button', { name: 'Revoke device' });
    expect(await revoke.isDisabled()).toBe(true);
    await page.getByLabel(/Type .* to confirm/).fill(TARGET);
    await revoke.click();
    await closed;
    expect(client.connected).toBe(false);
    await expect.poll(() => page.getByTestId('device-status').textContent(), { timeout: 20_000 }).toBe('revoked');
    await expect.poll(() => page.getByTestId('device-presence').textContent(), { timeout: 20_000 }).toBe('offline');
    await page.getByRole('cell', { name: 'keyCompromise' }).waitFor();
    await page.getByText('device.revoked').waitFor(); // the device's audit events, reloaded live
    client.end(true);
    await checkPage('05-device-revoked');

    // Back and forward: the search page with its filter, then the device again.
    await page.goBack();
    await page.getByText('1 matching').waitFor();
    expect(await page.getByLabel('Device id starts with').inputValue()).toBe(TARGET);
    await page.goForward();
    await heading().filter({ hasText: TARGET }).waitFor();
    const audit = await fleet.api<{ events: { actor: string; action: string; subject: string }[] }>(
      'GET',
      '/api/v1/audit?limit=1000&afterSeq=' + String(FLEET_SIZE),
    );
    const revoked = audit.json.events.find((e) => e.action === 'device.revoked' && e.subject === TARGET);
    expect(revoked?.actor).toMatch(/^operator:/);
  });

  it('creates a batch of 5 tokens, downloads it once, and one of them enrolls a device through EST', async () => {
    await page.getByRole('link', { name: 'Tokens' }).click();
    await heading().filter({ hasText: 'Enrollment tokens' }).waitFor();
    await page.getByLabel('Id prefix').fill('batch-');
    await page.getByLabel('How many').fill('5');
    await page.getByRole('button', { name: 'Create tokens' }).click();
    await page.getByText('5 new tokens').waitFor();
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download JSON' }).click(),
    ]);
    const file = await download.path();
    const batch = JSON.parse(readFileSync(file, 'utf8')) as { tokens: { deviceId: string; token: string }[] };
    expect(batch.tokens.length).toBe(5);
    const [csvDownload] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download CSV' }).click(),
    ]);
    const csv = readFileSync(await csvDownload.path(), 'utf8')
      .trim()
      .split('\r\n');
    expect(csv[0]).toBe('deviceId,token,expiresAt');
    expect(csv.length).toBe(6);
    await checkPage('06-tokens');
    await page.getByRole('button', { name: 'Done, forget them' }).click();
    expect(await page.getByText('5 new tokens').count()).toBe(0);

    const one = batch.tokens[0] as { deviceId: string; token: string };
    const enroll = await httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
      method: 'POST',
      ca: fleet.caPem,
      headers: {
        authorization: `Basic ${Buffer.from(`${one.deviceId}:${one.token}`).toString('base64')}`,
        'content-type': 'application/pkcs10',
      },
      body: (await makeCsr(one.deviceId)).base64,
    });
    expect(enroll.status).toBe(200);
    const device = await fleet.api<{ status: string }>('GET', `/api/v1/devices/${one.deviceId}`);
    expect(device.json.status).toBe('active');
    newest = one.deviceId;
  });

  it('filters devices by key type and sorts them; the URL keeps both and back/forward restore them', async () => {
    await page.getByRole('link', { name: 'Devices' }).click();
    await heading().filter({ hasText: 'Devices' }).waitFor();
    const firstRow = () => page.locator('tbody tr').first().getByRole('link').textContent();
    await page.getByLabel('Sort by').selectOption('-createdAt');
    await page.getByText('sorted by enrolled, newest first').waitFor();
    expect(new URL(page.url()).searchParams.get('sort')).toBe('-createdAt');
    await expect.poll(firstRow).toBe(newest);
    // every device enrolled with a P-256 key; the revoked one has no current certificate left
    await page.getByLabel('Key type').selectOption('ec-p256');
    await page.getByText(`${FLEET_SIZE} matching`).waitFor();
    expect(Object.fromEntries(new URL(page.url()).searchParams)).toEqual({ sort: '-createdAt', keyType: 'ec-p256' });
    await expect.poll(firstRow).toBe(newest);
    expect(await page.getByRole('cell', { name: 'ec-p256' }).count()).toBe(50);
    await checkPage('06b-devices-key-type-sorted');
    await page.getByLabel('Key type').selectOption('ed25519');
    await page.getByText('No device matches.').waitFor();
    // back: the P-256 filter again, with its order; forward: Ed25519 again; back once more
    await page.goBack();
    await page.getByText(`${FLEET_SIZE} matching`).waitFor();
    expect(await page.getByLabel('Key type').inputValue()).toBe('ec-p256');
    expect(await page.getByLabel('Sort by').inputValue()).toBe('-createdAt');
    await page.goForward();
    await page.getByText('No device matches.').waitFor();
    expect(await page.getByLabel('Key type').inputValue()).toBe('ed25519');
    await page.goBack();
    await page.getByText(`${FLEET_SIZE} matching`).waitFor();
    // the next page continues the same order; back returns to the first
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => new URL(page.url()).searchParams.get('cursor')).not.toBeNull();
    await expect.poll(firstRow).not.toBe(newest);
    expect(new URL(page.url()).searchParams.get('sort')).toBe('-createdAt');
    await page.goBack();
    await expect.poll(firstRow).toBe(newest);
  });

  it('verifies the audit chain from the page, and shows operators and services', async () => {
    await page.getByRole('link', { name: 'Audit' }).click();
    await heading().filter({ hasText: 'Audit log' }).waitFor();
    await page.getByRole('button', { name: 'Verify the hash chain' }).click();
    await expect
      .poll(() => page.getByTestId('verify-result').textContent())
      .toMatch(/^Chain intact: \d+ events verified\.$/);
    await checkPage('07-audit');
    await page.getByRole('link', { name: 'Operators' }).click();
    await heading().filter({ hasText: 'Operators' }).waitFor();
    await page.getByRole('cell', { name: 'admin' }).first().waitFor();
    await checkPage('08-operators');
    await page.getByRole('link', { name: 'Services' }).click();
    await heading().filter({ hasText: 'Backend services' }).waitFor();
    await checkPage('09-services');
  });

  it('creates a service credential in the page (key made in the browser), downloads it once, and it works over MQTT mTLS', async () => {
    const name = 'console-svc';
    // Every request body the page sends: the key must not be in any of them.
    const sent: string[] = [];
    const onRequest = (r: { postData(): string | null; url(): string }) =>
      sent.push(`${r.url()} ${r.postData() ?? ''}`);
    page.on('request', onRequest);
    await page.getByRole('link', { name: 'Services' }).click();
    await heading().filter({ hasText: 'Backend services' }).waitFor();
    // a bad name is refused in the page, before any key is made
    await page.getByLabel('Service name').fill('-bad name');
    await page.getByRole('button', { name: 'Create credential' }).click();
    await page.getByText('A service name is 1-64').waitFor();
    await page.getByLabel('Service name').fill(name);
    await page.getByRole('button', { name: 'Create credential' }).click();
    await page.getByRole('heading', { name: `Credential for ${name}` }).waitFor();
    const [json] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download all as JSON' }).click(),
    ]);
    const cred = JSON.parse(readFileSync(await json.path(), 'utf8')) as {
      name: string;
      serial: string;
      keyPem: string;
      certificatePem: string;
      chainPem: string;
    };
    const [keyFile] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download key' }).click(),
    ]);
    expect(keyFile.suggestedFilename()).toBe(`${name}.key`);
    expect(readFileSync(await keyFile.path(), 'utf8')).toBe(cred.keyPem);
    expect(cred.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(cred.name).toBe(name);
    await page.getByRole('cell', { name }).waitFor(); // listed among the services
    await checkPage('09b-service-created');
    page.off('request', onRequest);
    const keyBody = cred.keyPem.split('\n')[1] as string;
    expect(sent.some((r) => r.includes('/api/v1/services') && r.includes('CERTIFICATE REQUEST'))).toBe(true);
    expect(sent.filter((r) => r.includes('PRIVATE KEY') || r.includes(keyBody.slice(0, 40)))).toEqual([]);
    await page.getByRole('button', { name: 'Done, forget them' }).click();
    expect(await page.getByRole('heading', { name: `Credential for ${name}` }).count()).toBe(0);

    // The server issued it for the operator, to a service identity.
    const svc = await fleet.api<{ kind: string; current: { serial: string; keyType: string } }>(
      'GET',
      `/api/v1/devices/${name}`,
    );
    expect(svc.json).toMatchObject({ kind: 'service', current: { serial: cred.serial, keyType: 'ec-p256' } });
    const audit = await fleet.api<{
      events: { actor: string; action: string; subject: string; details: { serial?: string; kind?: string } }[];
    }>('GET', `/api/v1/audit?limit=1000&afterSeq=${FLEET_SIZE}`);
    const issued = audit.json.events.find((e) => e.subject === name && e.action === 'cert.issued');
    expect(issued?.actor).toMatch(/^operator:/);
    expect(issued?.details).toMatchObject({ kind: 'service' });

    // The downloaded credential over mTLS: the service reads a device's telemetry and sends it a
    // command, as services may; a wildcard beyond its rights is refused.
    const deviceCred = creds['cdev-0007'] as Credential;
    const service = mqtt.connect({
      ...mqttOptions(fleet, deviceCred),
      clientId: `${name}-1`,
      ca: cred.chainPem,
      cert: cred.certificatePem,
      key: cred.keyPem,
    });
    const device = mqtt.connect(mqttOptions(fleet, deviceCred));
    try {
      await Promise.all(
        [service, device].map(
          (c) =>
            new Promise<void>((resolve, reject) => {
              c.once('connect', () => resolve());
              c.once('error', reject);
            }),
        ),
      );
      const granted = await service.subscribeAsync('devices/+/telemetry', { qos: 1 });
      expect(granted.map((g) => g.qos)).toEqual([1]);
      // beyond a service's default rights: SUBACK 0x80, which MQTT.js reports as an error
      await expect(service.subscribeAsync('#', { qos: 1 })).rejects.toThrow(/Subscribe error/);
      await device.subscribeAsync('devices/cdev-0007/commands/#', { qos: 1 });
      const telemetry = new Promise<string>((resolve) =>
        service.on('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)),
      );
      const command = new Promise<string>((resolve) =>
        device.on('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)),
      );
      await device.publishAsync('devices/cdev-0007/telemetry', 't=21.5', { qos: 1 });
      expect(await telemetry).toBe('devices/cdev-0007/telemetry t=21.5');
      await service.publishAsync('devices/cdev-0007/commands/reboot', 'now', { qos: 1 });
      expect(await command).toBe('devices/cdev-0007/commands/reboot now');
    } finally {
      service.end(true);
      device.end(true);
    }
  });

  it('stays usable on a narrow window', async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole('link', { name: 'Devices' }).click();
    await heading().filter({ hasText: 'Devices' }).waitFor();
    await checkPage('10-devices-narrow');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('signs out, and the old session is refused', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByText('Signed out.').waitFor();
    const status = (await page.evaluate("fetch('/api/v1/devices').then((r) => r.status)")) as number;
    expect(status).toBe(401);
    expect((await context.cookies()).find((c) => c.name === '__Host-fleetgate-session')).toBeUndefined();
    await checkPage('11-signed-out');
  });

  it('ran under the CSP without a single violation', () => {
    expect(cspViolations).toEqual([]);
  });
});
