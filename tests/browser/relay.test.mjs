// Relay-only end to end: two Chromium pages with iceTransportPolicy 'relay' connect through a
// TURN server whose REST credentials floe mints in the join answer, then chat and transfer
// 1 MiB; getStats() must show a relay-to-relay selected pair and only relay-to-relay pairs
// carrying bytes.
//
// The TURN server is coturn's turnserver (use-auth-secret) until floe's own TURN relay has a
// command; switching is a one-line change in lib/servers.mjs startTurn().

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from './lib/chromium.mjs';
import { startFloeSignal, startTurn } from './lib/servers.mjs';
import { joinRoom, paths, sendFile, waitConnected, waitInPage } from './lib/pages.mjs';

const SECRET = 'relay-test-secret';

describe('relay-only through TURN with floe-minted credentials', { timeout: 180_000 }, () => {
  let turn;
  let floe;
  let chrome;

  before(async () => {
    turn = await startTurn({ secret: SECRET });
    floe = await startFloeSignal(['--turn-url', turn.urls[0], '--turn-secret', SECRET, '--turn-ttl', '600']);
    chrome = await launchChromium();
  });

  after(async () => {
    await chrome?.close();
    await floe?.stop();
    await turn?.stop();
  });

  test('chat and 1 MiB over relay candidates only', { timeout: 90_000 }, async () => {
    const opts = { iceTransportPolicy: 'relay' };
    const a = await joinRoom(chrome, floe.url, 'relay', 'alice', opts);
    const b = await joinRoom(chrome, floe.url, 'relay', 'bob', opts);
    const ice = await a.evaluate(() => room.signal.welcome.iceServers);
    assert.equal(ice.length, 1);
    assert.match(ice[0].username, /^\d+:alice$/);
    await waitConnected(a, 'bob', 45_000);
    await waitConnected(b, 'alice', 45_000);
    await a.evaluate(() => room.broadcastChat('relayed hello'));
    await waitInPage(b, () => window.t.chats.some((c) => c.text === 'relayed hello'));
    const sha = await sendFile(b, 'alice', 1024 * 1024, 'relayed.bin');
    await waitInPage(a, () => window.t.files.length === 1, undefined, 60_000);
    assert.equal((await a.evaluate(() => window.t.files[0])).sha256, sha);
    for (const [page, peer] of [[a, 'bob'], [b, 'alice']]) {
      const p = await paths(page, peer);
      assert.deepEqual([p.selected?.local, p.selected?.remote], ['relay', 'relay'], JSON.stringify(p));
      assert.ok(p.used.length >= 1);
      for (const u of p.used) assert.deepEqual([u.local, u.remote], ['relay', 'relay'], JSON.stringify(p));
    }
    await a.close();
    await b.close();
  });

  test('a wrong TURN secret yields no relay candidate', { timeout: 60_000 }, async () => {
    const wrong = await startFloeSignal(['--turn-url', turn.urls[0], '--turn-secret', 'not-the-secret']);
    try {
      const page = await chrome.newPage();
      await page.goto(`${wrong.url}/`);
      const result = await page.evaluate(async () => {
        const { FloeSignal } = await import('/floe.js');
        const s = new FloeSignal({ room: 'neg', peer: 'x' });
        const w = await s.join();
        const pc = new RTCPeerConnection({ iceServers: w.iceServers, iceTransportPolicy: 'relay' });
        const errors = [];
        const cands = [];
        pc.onicecandidateerror = (e) => errors.push(e.errorCode);
        pc.createDataChannel('x');
        const done = new Promise((r) => {
          pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
        });
        pc.onicecandidate = (e) => e.candidate && cands.push(e.candidate.type);
        await pc.setLocalDescription();
        await Promise.race([done, new Promise((r) => setTimeout(r, 20000))]);
        s.close();
        return { errors, cands };
      });
      assert.deepEqual(result.cands, []);
      assert.ok(result.errors.includes(401), JSON.stringify(result));
      await page.close();
    } finally {
      await wrong.stop();
    }
  });
});
