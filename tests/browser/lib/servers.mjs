// Starting floe (signalling, TURN) for the browser tests, on loopback only, stopped by PID.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { connect } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createHash, X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';

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

/** Runs `cmd args`, resolving with stdout; rejects on a non-zero exit or after `timeoutMs`. */
function runTool(cmd, args, timeoutMs = 20000) {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      rej(new Error(`${cmd} timed out`));
    }, timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    p.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) res(out);
      else rej(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${err}`));
    });
  });
}

/**
 * A self-signed certificate for 127.0.0.1 / localhost, made with the openssl CLI in a fresh
 * temporary directory. @returns {Promise<{dir: string, cert: string, key: string}>}
 */
export async function selfSignedCert() {
  const dir = await mkdtemp(join(tmpdir(), 'floe-cert-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await runTool('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ]);
  return { dir, cert, key };
}

/** Base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo (Chromium's SPKI pin format). */
export function spkiHash(pem) {
  const der = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/**
 * Mints a TURN REST credential with `floe credentials` (the scheme `--auth-secret` accepts).
 * @returns {Promise<{username: string, credential: string}>}
 */
export async function floeCredentials(secret, user, ttl = 600) {
  const out = await runTool(FLOE_BIN, ['credentials', '--secret', secret, '--user', user, '--ttl', String(ttl)]);
  const username = out.match(/^username: (.+)$/m)?.[1];
  const credential = out.match(/^password: (.+)$/m)?.[1];
  if (!username || !credential) throw new Error(`unexpected floe credentials output: ${out}`);
  return { username, credential };
}

/**
 * Starts floe's own TURN relay, `floe turn`, on 127.0.0.1 with the TURN REST shared secret
 * `secret`, relaying from 127.0.0.1 (loopback peers opened with --allow-peer 127.0.0.0/8, as the
 * default policy refuses them) on a random 100-port range, and with `tls` also TURN over TLS with
 * a self-signed certificate. Resolves once floe printed its listening lines and accepts TCP.
 * `spki` is the base64 SHA-256 of the certificate's public key, as Chromium's
 * --ignore-certificate-errors-spki-list wants it.
 * @returns {Promise<{port: number, tlsPort: number | null, relayPorts: [number, number], spki: string | null,
 *   urls: string[], url: {udp: string, tcp: string, tls: string | null},
 *   stop: () => Promise<void>, log: () => string}>}
 */
export async function startTurn({ secret, realm = 'floe.test', tls = false, timeoutMs = 15000 }) {
  const port = await freePort();
  const tlsPort = tls ? await freePort() : null;
  const cert = tls ? await selfSignedCert() : null;
  const spki = cert ? spkiHash(await readFile(cert.cert, 'utf8')) : null;
  const minPort = 40000 + Math.floor(Math.random() * 10000);
  const relayPorts = [minPort, minPort + 99];
  const args = [
    'turn',
    '--listen', `127.0.0.1:${port}`,
    '--relay-ip', '127.0.0.1',
    '--relay-ports', `${relayPorts[0]}-${relayPorts[1]}`,
    '--realm', realm,
    '--auth-secret', secret,
    '--allow-peer', '127.0.0.0/8',
  ];
  if (tls) args.push('--tls-listen', `127.0.0.1:${tlsPort}`, '--tls-cert', cert.cert, '--tls-key', cert.key);
  const proc = spawn(FLOE_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLOE_LOG: process.env.FLOE_LOG || 'info' },
  });
  let out = '';
  let log = '';
  proc.stdout.on('data', (d) => {
    out += d;
  });
  proc.stderr.on('data', (d) => {
    log = (log + d).slice(-50000);
  });
  const stopProc = stopper(proc);
  const stop = async () => {
    await stopProc();
    if (cert) await rm(cert.dir, { recursive: true, force: true });
  };
  try {
    await new Promise((resolveReady, reject) => {
      const ready = () =>
        out.includes(`tcp://127.0.0.1:${port}`) && (!tls || out.includes(`tls://127.0.0.1:${tlsPort}`));
      const timer = setTimeout(() => reject(new Error(`floe turn did not start: ${out}${log}`)), timeoutMs);
      const check = () => {
        if (ready()) {
          clearTimeout(timer);
          resolveReady();
        }
      };
      proc.stdout.on('data', check);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`floe turn exited with ${code}: ${out}${log}`));
      });
      check();
    });
    await waitTcp(port, timeoutMs);
    if (tls) await waitTcp(tlsPort, timeoutMs);
  } catch (e) {
    await stop();
    throw e;
  }
  const url = {
    udp: `turn:127.0.0.1:${port}?transport=udp`,
    tcp: `turn:127.0.0.1:${port}?transport=tcp`,
    tls: tls ? `turns:127.0.0.1:${tlsPort}?transport=tcp` : null,
  };
  return { port, tlsPort, relayPorts, urls: [url.udp], url, spki, stop, log: () => out + log };
}
