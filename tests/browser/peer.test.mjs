// Headless Chromium (web/floe.js) and the Rust peer (`floe peer`) in one room: a file goes from
// the browser to `floe peer receive` and from `floe peer send` to the browser, SHA-256 checked by
// both sides (the receiver's file-ack carries its digest). Directly over loopback host candidates,
// and relay-only through floe TURN (both sides relay-only, so every packet crosses the relay).
// Everything stays on this machine (loopback and its own address). The NAT-lab versions are in crates/floe/tests/natlab_peers.rs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium } from './lib/chromium.mjs';
import { FLOE_BIN, startFloeSignal, startTurn } from './lib/servers.mjs';
import { joinRoom, sendFile, waitInPage } from './lib/pages.mjs';

const SECRET = 'peer-test-secret';

/** Runs `floe peer ...args`; resolves {code, stdout, stderr} (killed after `timeoutMs`). */
function floePeer(args, timeoutMs = 90_000, stdin = 'ignore') {
  const proc = spawn(FLOE_BIN, ['peer', ...args], {
    stdio: [stdin, 'pipe', 'pipe'],
    env: { ...process.env, FLOE_LOG: 'warn' },
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const done = new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { proc, done };
}

function line(out, prefix) {
  const l = out.stdout.split('\n').find((x) => x.startsWith(prefix));
  assert.ok(l, `no "${prefix}" line in:\n${out.stdout}\n${out.stderr}`);
  return l;
}

describe('Chromium and floe peer', { timeout: 300_000 }, () => {
  let chrome;
  let dir;
  const stops = [];

  before(async () => {
    chrome = await launchChromium();
    dir = await mkdtemp(join(tmpdir(), 'floe-peer-'));
  });

  after(async () => {
    try {
      await chrome?.close();
    } finally {
      for (const s of stops) await s();
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  });

  async function bothWays(signalUrl, room, { relay = false } = {}) {
    const extra = relay ? ['--relay-only'] : [];
    const page = await joinRoom(chrome, signalUrl, room, 'browser', relay ? { iceTransportPolicy: 'relay' } : {});

    // Browser -> floe peer receive.
    const out = join(dir, `${room}-from-browser.bin`);
    const recv = floePeer(['receive', '--room', room, '--signal', signalUrl, '--out', out, '--timeout', '40', ...extra]);
    await waitInPage(page, () => window.room.peers.size === 1 && [...window.room.peers.values()][0].files.readyState === 'open', undefined, 40_000);
    const peerId = await page.evaluate(() => [...window.room.peers.keys()][0]);
    const sha = await sendFile(page, peerId, 700_000, 'from-browser.bin');
    const r = await recv.done;
    assert.equal(r.code, 0, `floe peer receive failed:\n${r.stdout}\n${r.stderr}`);
    assert.equal(line(r, 'received '), `received from-browser.bin 700000 bytes sha256 ${sha} verified`);
    assert.equal(createHash('sha256').update(await readFile(out)).digest('hex'), sha);
    const pairIn = line(r, 'selected pair: ');
    await waitInPage(page, () => window.room.peers.size === 0, undefined, 20_000);

    // floe peer send -> browser.
    const src = join(dir, `${room}-to-browser.bin`);
    const bytes = Buffer.alloc(500_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    await writeFile(src, bytes);
    const want = createHash('sha256').update(bytes).digest('hex');
    const send = floePeer(['send', src, '--room', room, '--signal', signalUrl, '--timeout', '40', ...extra]);
    const s = await send.done;
    assert.equal(s.code, 0, `floe peer send failed:\n${s.stdout}\n${s.stderr}`);
    assert.equal(line(s, 'sent '), `sent ${room}-to-browser.bin 500000 bytes sha256 ${want}`);
    await waitInPage(page, () => window.t.files.length === 1, undefined, 20_000);
    const got = await page.evaluate(() => window.t.files[0]);
    assert.deepEqual(got, { name: `${room}-to-browser.bin`, size: 500_000, sha256: want });
    assert.deepEqual(await page.evaluate(() => window.t.errors), []);
    await page.close();
    return { pairIn, pairOut: line(s, 'selected pair: ') };
  }

  test('a file each way over loopback host candidates', { timeout: 120_000 }, async () => {
    const floe = await startFloeSignal();
    stops.push(floe.stop);
    const { pairIn, pairOut } = await bothWays(floe.url, 'rust-direct');
    for (const p of [pairIn, pairOut]) {
      // Chromium's host candidates are this machine's own addresses (loopback, allowed by
      // --allow-loopback-in-peer-connection, and the interface address, which the kernel also
      // delivers over lo); floe peer's is the route to the signalling server: 127.0.0.1.
      assert.match(p, /^selected pair: local host 127\.0\.0\.1:\d+ <-> remote (host|prflx) [0-9.]+:\d+ via udp rtt [0-9.]+ ms$/);
    }
  });

  test('a file each way relay-only through floe TURN', { timeout: 120_000 }, async () => {
    const turn = await startTurn({ secret: SECRET });
    stops.push(turn.stop);
    const floe = await startFloeSignal(['--turn-url', turn.url.udp, '--turn-secret', SECRET]);
    stops.push(floe.stop);
    const { pairIn, pairOut } = await bothWays(floe.url, 'rust-relay', { relay: true });
    for (const p of [pairIn, pairOut]) {
      assert.match(p, /^selected pair: local relay 127\.0\.0\.1:\d+ <-> remote (relay|prflx) 127\.0\.0\.1:\d+ via turn-udp rtt [0-9.]+ ms$/);
    }
  });

  test('the demo page by clicking: floe peer send -> download link, file input -> floe peer receive', { timeout: 120_000 }, async () => {
    const floe = await startFloeSignal();
    stops.push(floe.stop);
    const page = await chrome.newPage();
    await page.goto(`${floe.url}/`);
    await page.fill('#room', 'demo-rust');
    await page.fill('#name', 'dora');
    await page.click('#joinBtn');
    await page.waitForSelector('#chatText:not([disabled])', { timeout: 10_000 });

    // floe peer -> demo page: the page offers the file as a download, checksum verified.
    const src = join(dir, 'letter-to-dora.txt');
    await writeFile(src, 'Dear Dora,\n'.repeat(20_000));
    const want = createHash('sha256').update(await readFile(src)).digest('hex');
    const s = await floePeer(['send', src, '--room', 'demo-rust', '--signal', floe.url, '--timeout', '40']).done;
    assert.equal(s.code, 0, `floe peer send failed:\n${s.stdout}\n${s.stderr}`);
    assert.equal(line(s, 'sent '), `sent letter-to-dora.txt 220000 bytes sha256 ${want}`);
    await page.waitForSelector('#downloads a', { timeout: 20_000 });
    assert.match(await page.textContent('#fileStatus'), /received letter-to-dora\.txt \(220000 bytes, sha256 [0-9a-f]{16}… verified\)/);
    const downloaded = await page.evaluate(async () => {
      const a = document.querySelector('#downloads a');
      const buf = await (await fetch(a.href)).arrayBuffer();
      return { name: a.download, hex: [...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))].map((b) => b.toString(16).padStart(2, '0')).join('') };
    });
    assert.deepEqual(downloaded, { name: 'letter-to-dora.txt', hex: want });
    await page.waitForFunction(() => document.querySelectorAll('#peers tr[data-peer]').length === 0, undefined, { timeout: 20_000 });

    // demo page -> floe peer: pick a file in the file input.
    const reply = join(dir, 'reply.txt');
    await writeFile(reply, 'Dear Alice, thank you.\n'.repeat(5000));
    const replySha = createHash('sha256').update(await readFile(reply)).digest('hex');
    const out = join(dir, 'reply-received.txt');
    const recv = floePeer(['receive', '--room', 'demo-rust', '--signal', floe.url, '--out', out, '--timeout', '40']);
    await page.waitForSelector('tr[data-peer] .state:text("connected")', { timeout: 30_000 });
    await page.setInputFiles('#fileInput', reply);
    const r = await recv.done;
    assert.equal(r.code, 0, `floe peer receive failed:\n${r.stdout}\n${r.stderr}`);
    assert.equal(line(r, 'received '), `received reply.txt 115000 bytes sha256 ${replySha} verified`);
    assert.equal(createHash('sha256').update(await readFile(out)).digest('hex'), replySha);
    await page.waitForFunction(() => /checksum confirmed/.test(document.querySelector('#fileStatus').textContent), undefined, { timeout: 10_000 });
    await page.close();
  });

  test('chat both ways between the demo page and floe peer chat', { timeout: 60_000 }, async () => {
    const floe = await startFloeSignal();
    stops.push(floe.stop);
    const page = await joinRoom(chrome, floe.url, 'rust-chat', 'browser');
    const chat = floePeer(['chat', '--room', 'rust-chat', '--signal', floe.url, '--peer-id', 'rusty', '--timeout', '40'], 60_000, 'pipe');
    await waitInPage(page, () => window.room.peers.get('rusty')?.chat.readyState === 'open', undefined, 40_000);
    chat.proc.stdin.write('hello from rust\n');
    await waitInPage(page, () => window.t.chats.some((c) => c.from === 'rusty' && c.text === 'hello from rust'));
    await page.evaluate(() => window.room.broadcastChat('hello from the browser'));
    // floe peer prints "<peer>: <line>" on stdout; end its input once the line is there.
    let out = '';
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 20_000);
      chat.proc.stdout.on('data', (d) => {
        out += d;
        if (out.includes('browser: hello from the browser')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    chat.proc.stdin.end();
    const r = await chat.done;
    assert.equal(r.code, 0, `floe peer chat failed:\n${r.stdout}\n${r.stderr}`);
    assert.ok(r.stdout.split('\n').includes('browser: hello from the browser'), r.stdout);
    await page.close();
  });
});
