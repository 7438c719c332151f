/**
 * Debian's chromium driven by playwright-core, as the UI tests and bench/ui use it: headless, no
 * network of its own beyond what the page asks (no sync, no component updates, no QUIC), a fresh
 * profile per launch, removed on close.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.MEMBRANE_CHROMIUM ?? '/usr/bin/chromium';

export interface LaunchedBrowser {
  browser: Browser;
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(opts: { width?: number; height?: number } = {}): Promise<LaunchedBrowser> {
  const profile = await mkdtemp(join(tmpdir(), 'membrane-chromium-'));
  // launchPersistentContext is how playwright takes a --user-data-dir of our own
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: opts.width ?? 1440, height: opts.height ?? 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
  const browser = context.browser();
  return {
    browser: browser!,
    context,
    async close() {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
    },
  };
}
