// Relay-only end to end through floe's own TURN relay (`floe turn`, REST credentials):
//
// * two RTCPeerConnections in one page with floe as their only ICE server and
//   iceTransportPolicy 'relay' exchange data-channel messages, for `turn:` over UDP, over TCP
//   (`?transport=tcp`) and `turns:` (TLS); getStats() must show a relay-to-relay selected pair
//   whose local candidate reached floe over the intended transport and got a relay port from
//   floe's range, and every pair that carried bytes must be relay-to-relay;
// * two pages joined through floe's signalling server, which mints the TURN credentials, chat
//   and transfer 1 MiB over relay candidates only;
// * negative cases: a wrong password (UDP and TCP) or a wrong secret yields icecandidateerror 401
//   and no relay candidate; without the certificate pin, turns: to floe's self-signed certificate
//   fails with 701 and no relay candidate.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from './lib/chromium.mjs';
import { floeCredentials, startFloeSignal, startTurn } from './lib/servers.mjs';
import { joinRoom, paths, sendFile, waitConnected, waitInPage } from './lib/pages.mjs';

const SECRET = 'relay-test-secret';
const MESSAGES = 200;

/**
 * In `page`: two relay-only RTCPeerConnections through `url`, `count` data-channel messages from
 * A to B, each echoed back by B. Returns what was received, ICE errors and both sides' paths.
 */
async function relayPair(page, { url, username, credential, count = MESSAGES, timeoutMs = 40000 }) {
  return page.evaluate(
    async ({ url, username, credential, count, timeoutMs }) => {
      const cfg = { iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' };
      const a = new RTCPeerConnection(cfg);
      const b = new RTCPeerConnection(cfg);
      const errors = [];
      const candidates = { a: [], b: [] };
      for (const [name, pc, other] of [['a', a, b], ['b', b, a]]) {
        pc.onicecandidate = (e) => {
          if (!e.candidate) return;
          candidates[name].push(e.candidate.type);
          other.addIceCandidate(e.candidate).catch((err) => errors.push({ add: String(err) }));
        };
        pc.onicecandidateerror = (e) => errors.push({ code: e.errorCode, text: e.errorText, url: e.url });
      }
      const timeout = (what) =>
        new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out: ${what}`)), timeoutMs));
      const dc = a.createDataChannel('t');
      b.ondatachannel = (e) => {
        e.channel.onmessage = (m) => e.channel.send(`echo ${m.data}`);
      };
      const echoes = [];
      const allEchoed = new Promise((res) => {
        dc.onmessage = (m) => {
          echoes.push(m.data);
          if (echoes.length === count) res();
        };
      });
      const opened = new Promise((res) => {
        dc.onopen = res;
      });
      const pathOf = async (pc) => {
        const stats = await pc.getStats();
        const cand = (id) => {
          const c = stats.get(id);
          return c && { type: c.candidateType, protocol: c.relayProtocol, address: c.address, port: c.port };
        };
        let selected = null;
        const used = [];
        stats.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) {
            const p = stats.get(s.selectedCandidatePairId);
            selected = { local: cand(p.localCandidateId), remote: cand(p.remoteCandidateId) };
          }
          if (s.type === 'candidate-pair' && (s.bytesSent > 0 || s.bytesReceived > 0)) {
            used.push({ local: cand(s.localCandidateId), remote: cand(s.remoteCandidateId), bytesSent: s.bytesSent });
          }
        });
        return { selected, used };
      };
      let failure = null;
      try {
        await a.setLocalDescription();
        await b.setRemoteDescription(a.localDescription);
        await b.setLocalDescription();
        await a.setRemoteDescription(b.localDescription);
        await Promise.race([opened, timeout('data channel open')]);
        for (let i = 0; i < count; i++) dc.send(`message ${i} ${'x'.repeat(i % 100)}`);
        await Promise.race([allEchoed, timeout(`echoes (${echoes.length} of ${count})`)]);
      } catch (e) {
        failure = String(e);
      }
      const result = {
        failure,
        errors,
        candidates,
        echoes,
        states: [a.connectionState, b.connectionState],
        paths: { a: await pathOf(a), b: await pathOf(b) },
      };
      a.close();
      b.close();
      return result;
    },
    { url, username, credential, count, timeoutMs },
  );
}

/** In `page`: relay-only gathering alone through `url`; returns candidate types and ICE errors. */
async function gatherOnly(page, { url, username, credential, timeoutMs = 20000 }) {
  return page.evaluate(
    async ({ url, username, credential, timeoutMs }) => {
      const pc = new RTCPeerConnection({
        iceServers: [{ urls: url, username, credential }],
        iceTransportPolicy: 'relay',
      });
      const errors = [];
      const cands = [];
      pc.onicecandidateerror = (e) => errors.push(e.errorCode);
      pc.onicecandidate = (e) => e.candidate && cands.push(e.candidate.type);
      const done = new Promise((r) => {
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      });
      pc.createDataChannel('x');
      await pc.setLocalDescription();
      await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs))]);
      const state = pc.iceGatheringState;
      pc.close();
      return { errors, cands, state };
    },
    { url, username, credential, timeoutMs },
  );
}

function assertRelayOnly(result, protocol, turn) {
  const ctx = JSON.stringify(result, (k, v) => (k === 'echoes' ? `${v.length} echoes` : v));
  assert.equal(result.failure, null, ctx);
  assert.equal(result.echoes.length, MESSAGES, ctx);
  result.echoes.forEach((m, i) => assert.equal(m, `echo message ${i} ${'x'.repeat(i % 100)}`));
  for (const side of ['a', 'b']) {
    const { selected, used } = result.paths[side];
    assert.equal(selected?.local?.type, 'relay', ctx);
    assert.equal(selected?.remote?.type, 'relay', ctx);
    // The local relay candidate reached floe over the intended transport, and its relayed
    // address is one of floe's relay ports.
    assert.equal(selected.local.protocol, protocol, ctx);
    assert.equal(selected.local.address, '127.0.0.1', ctx);
    assert.ok(selected.local.port >= turn.relayPorts[0] && selected.local.port <= turn.relayPorts[1], ctx);
    assert.ok(used.length >= 1, ctx);
    for (const u of used) assert.deepEqual([u.local?.type, u.remote?.type], ['relay', 'relay'], ctx);
  }
}

describe('relay-only through floe turn', { timeout: 300_000 }, () => {
  let turn;
  let floe;
  let chrome;
  let page;

  before(async () => {
    turn = await startTurn({ secret: SECRET, tls: true });
    floe = await startFloeSignal(['--turn-url', turn.url.udp, '--turn-secret', SECRET, '--turn-ttl', '600']);
    // floe's TLS certificate is self-signed: Chromium refuses it for turns: (701) unless told to
    // trust it. Pinning exactly its public key is enough (and narrower than
    // --ignore-certificate-errors, which also works).
    chrome = await launchChromium({ extraFlags: [`--ignore-certificate-errors-spki-list=${turn.spki}`] });
    page = await chrome.newPage();
  });

  after(async () => {
    // Stop everything even if one step fails, so no process outlives the test.
    try {
      await chrome?.close();
    } finally {
      try {
        await floe?.stop();
      } finally {
        await turn?.stop();
      }
    }
  });

  for (const [name, protocol] of [['udp', 'udp'], ['tcp', 'tcp'], ['tls', 'tls']]) {
    test(`data channel over ${name === 'tls' ? 'turns:' : `turn:?transport=${name}`}, relay to relay`, { timeout: 60_000 }, async (t) => {
      const cred = await floeCredentials(SECRET, `pair-${name}`);
      const started = Date.now();
      const result = await relayPair(page, { url: turn.url[name], ...cred });
      assertRelayOnly(result, protocol, turn);
      const { selected, used } = result.paths.a;
      t.diagnostic(
        `${turn.url[name]}: ${result.echoes.length}/${MESSAGES} echoed in ${Date.now() - started} ms; ` +
          `selected ${selected.local.type}(${selected.local.protocol}) ${selected.local.address}:${selected.local.port}` +
          ` -> ${selected.remote.type} ${selected.remote.address}:${selected.remote.port}; ${used.length} pair(s) carried bytes`,
      );
    });
  }

  test('chat and 1 MiB between two pages over relay candidates only (credentials from floe signal)', { timeout: 90_000 }, async () => {
    const opts = { iceTransportPolicy: 'relay' };
    const a = await joinRoom(chrome, floe.url, 'relay', 'alice', opts);
    const b = await joinRoom(chrome, floe.url, 'relay', 'bob', opts);
    const ice = await a.evaluate(() => room.signal.welcome.iceServers);
    assert.equal(ice.length, 1);
    // The username carries the peer and its room (docs/turn.md §3); Chromium relays with it.
    assert.match(ice[0].username, /^\d+:alice;room=relay$/);
    await waitConnected(a, 'bob', 45_000);
    await waitConnected(b, 'alice', 45_000);
    await a.evaluate(() => room.broadcastChat('relayed hello'));
    await waitInPage(b, () => window.t.chats.some((c) => c.text === 'relayed hello'));
    const sha = await sendFile(b, 'alice', 1024 * 1024, 'relayed.bin');
    await waitInPage(a, () => window.t.files.length === 1, undefined, 60_000);
    assert.equal((await a.evaluate(() => window.t.files[0])).sha256, sha);
    for (const [p, peer] of [[a, 'bob'], [b, 'alice']]) {
      const x = await paths(p, peer);
      assert.deepEqual([x.selected?.local, x.selected?.remote], ['relay', 'relay'], JSON.stringify(x));
      assert.ok(x.used.length >= 1);
      for (const u of x.used) assert.deepEqual([u.local, u.remote], ['relay', 'relay'], JSON.stringify(x));
    }
    await a.close();
    await b.close();
  });

  test('without the certificate pin, Chromium refuses the self-signed turns: server (701, no relay candidate)', { timeout: 60_000 }, async () => {
    const plain = await launchChromium();
    try {
      const cred = await floeCredentials(SECRET, 'no-pin');
      const result = await gatherOnly(await plain.newPage(), { url: turn.url.tls, ...cred });
      assert.deepEqual(result.cands, [], JSON.stringify(result));
      assert.ok(result.errors.includes(701), JSON.stringify(result));
      assert.ok(!result.errors.includes(401), JSON.stringify(result));
    } finally {
      await plain.close();
    }
  });

  for (const name of ['udp', 'tcp']) {
    test(`a wrong TURN password over ${name} yields 401 and no relay candidate`, { timeout: 60_000 }, async () => {
      const cred = await floeCredentials(SECRET, `wrong-${name}`);
      const result = await gatherOnly(page, { url: turn.url[name], username: cred.username, credential: 'wrong' });
      assert.deepEqual(result.cands, [], JSON.stringify(result));
      assert.ok(result.errors.includes(401), JSON.stringify(result));
    });
  }

  test('a wrong TURN secret in floe signal yields no relay candidate', { timeout: 60_000 }, async () => {
    const wrong = await startFloeSignal(['--turn-url', turn.url.udp, '--turn-secret', 'not-the-secret']);
    try {
      const p = await chrome.newPage();
      await p.goto(`${wrong.url}/`);
      const result = await p.evaluate(async () => {
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
      await p.close();
    } finally {
      await wrong.stop();
    }
  });
});
