/**
 * Headless Chromium for the console tests: Debian's /usr/bin/chromium driven by playwright-core
 * (which downloads no browser). This machine has no internet, so every background fetch the
 * browser would make on its own is switched off. Skips loudly when chromium is absent, fails in
 * CI (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) through requireTool.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { requireTool } from './system-tools.js';

export const CHROMIUM = process.env.FLEETGATE_CHROMIUM ?? '/usr/bin/chromium';

/** True when the browser tests can run here (see requireTool for the CI rule). */
export function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  return requireTool(path.basename(CHROMIUM));
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-default-apps',
      '--disable-sync',
      '--no-first-run',
      '--disable-domain-reliability',
      '--disable-client-side-phishing-detection',
      '--metrics-recording-only',
      '--no-default-browser-check',
    ],
  });
}

/** Where screenshots go, for a reviewer to look at: test-output/console/ (FLEETGATE_TEST_OUTPUT overrides). */
export function screenshotDir(): string {
  const dir = path.resolve(process.env.FLEETGATE_TEST_OUTPUT ?? 'test-output', 'console');
  mkdirSync(dir, { recursive: true });
  return dir;
}

const axeSource = () => readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

/**
 * axe-core on the current page; returns the serious and critical violations. The axe source is
 * evaluated through the DevTools protocol (Runtime.evaluate), which the page's CSP does not
 * govern: the page itself still runs under its strict CSP, no bypass for the app.
 */
export async function axeSerious(page: Page): Promise<AxeViolation[]> {
  const loaded = await page.evaluate('typeof window.axe === "object"');
  if (!loaded) await page.evaluate(axeSource());
  const violations = (await page.evaluate(`window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target })) })))`)) as AxeViolation[];
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}
