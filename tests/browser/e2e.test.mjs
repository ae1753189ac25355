// End to end through `floe signal` with headless Chromium: two pages connect, chat and transfer
// a 1 MiB file (iceTransportPolicy 'all'); fake camera video is decoded; a page whose network
// drops and returns resumes without losing a message; a REST-only client reaches a WebSocket
// client; the demo page works by clicking.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from './lib/chromium.mjs';
import { startFloeSignal } from './lib/servers.mjs';
import { joinRoom, paths, sendFile, waitConnected, waitInPage } from './lib/pages.mjs';

const MiB = 1024 * 1024;

describe('floe signalling with Chromium', { timeout: 240_000 }, () => {
  let floe;
  let chrome;

  before(async () => {
    floe = await startFloeSignal();
    chrome = await launchChromium({ fakeMedia: true });
  });

  after(async () => {
    // Stop both even if closing Chromium fails, so no process outlives the test.
    try {
      await chrome?.close();
    } finally {
      await floe?.stop();
    }
  });

  test('two pages connect, chat and transfer 1 MiB (iceTransportPolicy all)', { timeout: 60_000 }, async () => {
    const a = await joinRoom(chrome, floe.url, 'all', 'alice');
    const b = await joinRoom(chrome, floe.url, 'all', 'bob');
    await waitConnected(a, 'bob');
    await waitConnected(b, 'alice');
    // Roles come from the server: bob joined later, so bob offered and is impolite.
    assert.deepEqual(await b.evaluate(() => [room.peers.get('alice').offerer, room.peers.get('alice').polite]), [true, false]);
    await a.evaluate(() => room.broadcastChat('hello bob'));
    await b.evaluate(() => room.broadcastChat('hi alice'));
    await waitInPage(b, () => window.t.chats.some((c) => c.text === 'hello bob' && c.from === 'alice'));
    await waitInPage(a, () => window.t.chats.some((c) => c.text === 'hi alice' && c.from === 'bob'));
    const sha = await sendFile(a, 'bob', MiB, 'one-mib.bin');
    await waitInPage(b, () => window.t.files.length === 1, undefined, 40_000);
    const got = await b.evaluate(() => window.t.files[0]);
    assert.deepEqual(got, { name: 'one-mib.bin', size: MiB, sha256: sha });
    const p = await paths(a, 'bob');
    assert.ok(p.selected, 'a selected candidate pair');
    assert.ok(['host', 'srflx', 'prflx', 'relay'].includes(p.selected.local), JSON.stringify(p));
    assert.deepEqual(await a.evaluate(() => window.t.errors), []);
    await a.close();
    await b.close();
  });

  test('fake camera video is decoded by the receiver', { timeout: 60_000 }, async () => {
    const a = await joinRoom(chrome, floe.url, 'video', 'cam', { media: true });
    const b = await joinRoom(chrome, floe.url, 'video', 'viewer');
    await waitConnected(b, 'cam');
    await waitInPage(
      b,
      async () => {
        const stats = await window.room.peers.get('cam').pc.getStats();
        let frames = 0;
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
        });
        return frames > 10;
      },
      undefined,
      40_000,
    );
    assert.ok((await b.evaluate(() => window.t.tracks)) >= 1);
    await a.close();
    await b.close();
  });

  test('a page whose network drops and returns resumes without losing a message', { timeout: 60_000 }, async () => {
    const a = await joinRoom(chrome, floe.url, 'blip', 'steady');
    const b = await joinRoom(chrome, floe.url, 'blip', 'flaky');
    await waitConnected(a, 'flaky');
    const session = await b.evaluate(() => room.signal.session);
    // Take the flaky page's network away: DevTools offline emulation makes every reconnect fail
    // until it comes back, and the open WebSocket breaks (emulation leaves established sockets
    // alone, so the page drops it, as a network change would).
    const cdp = await b.context().newCDPSession(b);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await b.evaluate(() => room.signal.dropConnection());
    await waitInPage(b, () => room.signal.state === 'reconnecting');
    // Both sides send through the signalling server while the flaky page is offline.
    await a.evaluate(() => {
      for (let i = 0; i < 5; i++) room.sendData({ n: i }, 'flaky');
    });
    await b.evaluate(() => {
      for (let i = 0; i < 3; i++) room.sendData({ m: i }, 'steady');
    });
    // The steady side's messages reached the server (the pong acknowledges them) while the
    // flaky page was still away.
    await waitInPage(a, () => room.signal.outbox.length === 0);
    // Reconnect attempts fail while offline.
    await waitInPage(b, () => room.signal.reconnectAttempts >= 2);
    assert.equal(await b.evaluate(() => room.signal.state), 'reconnecting');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await waitInPage(b, () => room.signal.state === 'open', undefined, 20_000);
    assert.equal(await b.evaluate(() => room.signal.session), session, 'the same session was resumed');
    await waitInPage(b, () => window.t.data.length >= 5);
    await waitInPage(a, () => window.t.data.length >= 3);
    assert.deepEqual(await b.evaluate(() => window.t.data.map((d) => d.data.n)), [0, 1, 2, 3, 4]);
    assert.deepEqual(await a.evaluate(() => window.t.data.map((d) => d.data.m)), [0, 1, 2]);
    // Nobody saw the flaky peer leave.
    assert.equal(await a.evaluate(() => room.peers.has('flaky')), true);
    await a.close();
    await b.close();
  });

  test('a REST-only client connects to a WebSocket client', { timeout: 60_000 }, async () => {
    const a = await joinRoom(chrome, floe.url, 'rest', 'ws-peer', { transport: 'ws' });
    const b = await joinRoom(chrome, floe.url, 'rest', 'rest-peer', { transport: 'rest' });
    assert.equal(await b.evaluate(() => room.signal.activeTransport), 'rest');
    await waitConnected(b, 'ws-peer');
    await waitConnected(a, 'rest-peer');
    await b.evaluate(() => room.broadcastChat('over rest-signalled webrtc'));
    await waitInPage(a, () => window.t.chats.some((c) => c.text === 'over rest-signalled webrtc'));
    await a.close();
    await b.close();
  });

  test('the demo page: join by clicking, chat, see the path', { timeout: 60_000 }, async () => {
    const pages = [];
    for (const name of ['ann', 'ben']) {
      const p = await chrome.newPage();
      await p.goto(`${floe.url}/`);
      await p.fill('#room', 'demo-ui');
      await p.fill('#name', name);
      await p.click('#joinBtn');
      await p.waitForSelector('#chatText:not([disabled])', { timeout: 10_000 });
      pages.push(p);
    }
    const [ann, ben] = pages;
    await ann.waitForSelector('tr[data-peer="ben"] .state:text("connected")', { timeout: 30_000 });
    await ben.waitForFunction(() => window.floeRoom.peers.get('ann')?.chat.readyState === 'open', undefined, { timeout: 30_000 });
    await ben.fill('#chatText', 'hello from the demo');
    await ben.click('#sendBtn');
    await ann.waitForSelector('#log div:text("ben: hello from the demo")', { timeout: 10_000 });
    await ann.waitForFunction(() => /→/.test(document.querySelector('tr[data-peer="ben"] .path')?.textContent || ''), undefined, { timeout: 10_000 });
    const path = await ann.textContent('tr[data-peer="ben"] .path');
    assert.match(path, /^(host|srflx|prflx|relay) → (host|srflx|prflx|relay)/);
    await ann.close();
    await ben.close();
  });
});
