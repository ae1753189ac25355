// Reusable headless Chromium launcher for floe's browser tests (WebRTC on loopback).
//
// It spawns Debian's /usr/bin/chromium itself instead of using Playwright's launch(), because
// Chromium honours only the *last* --disable-features switch and launch() adds its own. It
// passes the flags that keep every packet on loopback (resolver rules, no mDNS host candidates,
// loopback allowed in peer connections), reads the DevTools port from DevToolsActivePort in a fresh profile directory,
// attaches with playwright-core's chromium.connectOverCDP(), and on close() kills the process
// by PID and deletes the profile.
//
// Usage:
//   import { launchChromium } from './lib/chromium.mjs';
//   const chrome = await launchChromium({ fakeMedia: true });
//   const page = await chrome.newPage();
//   ...
//   await chrome.close();

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

/** Chromium features turned off in one switch (WebRTC mDNS hiding would leave loopback). */
export const DISABLED_FEATURES = ['WebRtcHideLocalIpsWithMdns', 'MediaRouter', 'OptimizationHints', 'Translate'];

/**
 * Launches a headless Chromium attached over CDP.
 *
 * @param {object} [opts]
 * @param {string} [opts.executable] binary (default env CHROMIUM or /usr/bin/chromium)
 * @param {boolean} [opts.fakeMedia] fake camera/microphone and auto-accepted permission prompts
 * @param {string[]} [opts.extraFlags] more command-line switches
 * @param {string[]} [opts.disableFeatures] more features for the single --disable-features switch
 * @param {string[]} [opts.resolverExcludes] more host names the resolver may look up (besides
 *   localhost, 127.*, ::1)
 * @param {number} [opts.timeoutMs] how long to wait for the DevTools endpoint (default 20000)
 * @returns {Promise<{browser: import('playwright-core').Browser,
 *   context: import('playwright-core').BrowserContext, newPage: () => Promise<import('playwright-core').Page>,
 *   pid: number, userDataDir: string, stderr: () => string, close: () => Promise<void>}>}
 */
export async function launchChromium(opts = {}) {
  const executable = opts.executable || process.env.CHROMIUM || '/usr/bin/chromium';
  const userDataDir = await mkdtemp(join(tmpdir(), 'floe-chromium-'));
  const excludes = ['localhost', '127.*', '::1', '[::1]', ...(opts.resolverExcludes || [])];
  const flags = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    `--host-resolver-rules=MAP * ~NOTFOUND, ${excludes.map((h) => `EXCLUDE ${h}`).join(', ')}`,
    `--disable-features=${[...DISABLED_FEATURES, ...(opts.disableFeatures || [])].join(',')}`,
    `--user-data-dir=${userDataDir}`,
    '--remote-debugging-port=0',
    ...(opts.fakeMedia ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] : []),
    ...(opts.extraFlags || []),
    'about:blank',
  ];
  const proc = spawn(executable, flags, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-20000);
  });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const kill = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), delay(3000, false)]);
      if (!done) {
        proc.kill('SIGKILL');
        await Promise.race([exited, delay(3000)]);
      }
    }
    // Chromium's helper processes may still be writing to the profile for a moment after the
    // browser process exits (seen as ENOTEMPTY): let rm retry, bounded.
    await rm(userDataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  };
  try {
    const port = await devToolsPort(userDataDir, proc, opts.timeoutMs ?? 20000, () => stderr);
    const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`, { timeout: 15000 });
    const context = browser.contexts()[0] || (await browser.newContext());
    return {
      browser,
      context,
      pid: proc.pid,
      userDataDir,
      stderr: () => stderr,
      newPage: () => context.newPage(),
      close: async () => {
        await browser.close().catch(() => {});
        await kill();
      },
    };
  } catch (e) {
    await kill();
    throw e;
  }
}

/** Waits (bounded) for Chromium to write DevToolsActivePort and returns the port. */
async function devToolsPort(dir, proc, timeoutMs, stderr) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`chromium exited (${proc.exitCode}): ${stderr()}`);
    try {
      const text = await readFile(join(dir, 'DevToolsActivePort'), 'utf8');
      const port = Number(text.split('\n')[0]);
      if (port > 0) return port;
    } catch {
      // not written yet
    }
    await delay(50);
  }
  throw new Error(`chromium did not open its DevTools port within ${timeoutMs} ms: ${stderr()}`);
}
