// Starting floe and coturn for the browser tests, on loopback only, stopped by PID.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { connect } from 'node:net';

const here = dirname(fileURLToPath(import.meta.url));

/** The floe binary: env FLOE_BIN, else target/debug/floe of this checkout. */
export const FLOE_BIN = process.env.FLOE_BIN
  ? resolve(process.env.FLOE_BIN)
  : resolve(here, '../../../target/debug/floe');

function stopper(proc) {
  const exited = new Promise((r) => proc.once('exit', r));
  return async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const done = await Promise.race([exited.then(() => true), delay(5000, false)]);
    if (!done) {
      proc.kill('SIGKILL');
      await Promise.race([exited, delay(3000)]);
    }
  };
}

/**
 * Starts `floe signal --http 127.0.0.1:0 ...args` and resolves when it prints its address.
 * @returns {Promise<{url: string, port: number, proc: import('node:child_process').ChildProcess,
 *   log: () => string, stop: () => Promise<void>}>}
 */
export async function startFloeSignal(args = [], { timeoutMs = 15000 } = {}) {
  const proc = spawn(FLOE_BIN, ['signal', '--http', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLOE_LOG: process.env.FLOE_LOG || 'info' },
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => {
    err = (err + d).slice(-50000);
  });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`floe signal did not start: ${err}`)), timeoutMs);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`floe signal exited with ${code}: ${err}`));
    });
  });
  return { url, port: Number(new URL(url).port), proc, log: () => err, stop: stopper(proc) };
}

/** A port that is free for both TCP and UDP on 127.0.0.1 right now (>= 1024, as Chromium needs). */
export async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((res, rej) => {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const p = s.address().port;
        s.close(() => res(p));
      });
    });
    const udpFree = await new Promise((res) => {
      const u = createSocket('udp4');
      u.once('error', () => res(false));
      u.bind(port, '127.0.0.1', () => u.close(() => res(true)));
    });
    if (udpFree && port >= 1024) return port;
  }
  throw new Error('no free port');
}

async function waitTcp(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise((res) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        res(true);
      });
      c.once('error', () => res(false));
    });
    if (ok) return;
    await delay(50);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

/**
 * Starts a TURN server on 127.0.0.1 with the TURN REST shared secret `secret`, relaying on
 * loopback. Today this is coturn's `turnserver` (Debian package coturn); to test floe's own TURN
 * instead, change `startTurn` to spawn `floe turn --listen 127.0.0.1:PORT --relay-ip 127.0.0.1
 * --auth-secret SECRET --allow-peer 127.0.0.0/8` (one line), keeping the returned shape.
 * @returns {Promise<{port: number, urls: string[], stop: () => Promise<void>, log: () => string}>}
 */
export async function startTurn({ secret, realm = 'floe.test' }) {
  return startCoturn({ secret, realm });
}

async function startCoturn({ secret, realm }) {
  const port = await freePort();
  const minPort = 40000 + Math.floor(Math.random() * 10000);
  const proc = spawn(
    process.env.TURNSERVER || '/usr/bin/turnserver',
    [
      '-n', // no config file
      '--listening-ip=127.0.0.1',
      `--listening-port=${port}`,
      '--relay-ip=127.0.0.1',
      `--min-port=${minPort}`,
      `--max-port=${minPort + 200}`,
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      `--realm=${realm}`,
      '--fingerprint',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--allow-loopback-peers',
      '--no-multicast-peers',
      '--log-file=stdout',
      '--simple-log',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const keep = (d) => {
    log = (log + d).slice(-50000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const stop = stopper(proc);
  try {
    await waitTcp(port, 10000);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n${log}`);
  }
  return { port, urls: [`turn:127.0.0.1:${port}?transport=udp`], stop, log: () => log };
}
