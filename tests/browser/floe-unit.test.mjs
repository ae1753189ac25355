// Unit tests of web/floe.js's FloeSignal under node: no browser, no server. A fake WebSocket
// (injected with the `WebSocket` option) plays the server's side of docs/signalling.md, and
// node:test's mock timers drive the reconnect backoff, acks and heartbeats without real sleeps.
// Covered: the outbox while disconnected, resending what the server did not confirm (cumulative
// `resumed.received` / `pong.ack`), the bounded backoff, stopping on close() and on a refused
// join, go_away, duplicate replays, and a fresh join after `resume_failed`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FloeSignal } from '../../web/floe.js';

/** A network of fake WebSockets: every one the client opens lands in `sockets`. */
function fakeNet() {
  const sockets = [];
  class FakeWebSocket extends EventTarget {
    constructor(url) {
      super();
      this.url = url;
      this.readyState = 0; // CONNECTING
      this.sent = []; // frames from the client, parsed
      this.closedWith = null; // {code, reason} when the client closed it
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('InvalidStateError: the socket is not open');
      this.sent.push(JSON.parse(text));
    }

    /** The client closes: as in a browser, the close event comes later. */
    close(code = 1005, reason = '') {
      if (this.readyState >= 2) return;
      this.readyState = 2;
      this.closedWith = { code, reason };
      queueMicrotask(() => this._closed(code, reason));
    }

    // ---- the server's side ----

    accept() {
      this.readyState = 1;
      this.onopen?.(new Event('open'));
    }

    deliver(m) {
      this.onmessage?.({ data: JSON.stringify(m) });
    }

    /** The connection breaks (or the server closes it) with `code`. */
    drop(code = 1006, reason = '') {
      if (this.readyState !== 3) this._closed(code, reason);
    }

    _closed(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      const ev = Object.assign(new Event('close'), { code, reason });
      this.onclose?.(ev);
      this.dispatchEvent(ev);
    }

    /** The routed messages (those with a client seq) the client sent on this socket. */
    routed() {
      return this.sent.filter((m) => typeof m.seq === 'number' && m.type !== 'ack');
    }
  }
  return { WebSocket: FakeWebSocket, sockets, last: () => sockets.at(-1) };
}

/** Lets every pending promise continuation run (setImmediate is not mocked). */
const settle = () => new Promise((r) => setImmediate(r));

/** Advances the mock clock by `ms`, in steps so that timers set by continuations fire too. */
async function advance(t, ms, step = 50) {
  for (let left = ms; left > 0; left -= step) {
    t.mock.timers.tick(Math.min(step, left));
    await settle();
  }
}

const welcome = (session, resumeToken, extra = {}) => ({
  type: 'welcome',
  v: 1,
  room: 'r',
  peer: 'alice',
  session,
  resumeToken,
  resumeTtlMs: 30000,
  heartbeatMs: 10000,
  maxMessageBytes: 65536,
  peers: [],
  iceServers: [],
  permissions: ['publish', 'subscribe', 'data'],
  tokenExp: null,
  ...extra,
});

const resumed = (received, lastSeq) => ({
  type: 'resumed',
  room: 'r',
  peer: 'alice',
  session: 's1',
  peers: [],
  iceServers: [],
  received,
  lastSeq,
});

const data = (seq, n) => ({ type: 'data', seq, from: 'bob', data: { n }, broadcast: false });

/** A FloeSignal joined as alice in room r over a fake WebSocket (session s1, token tok1). */
async function joined(t) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const net = fakeNet();
  const s = new FloeSignal({ room: 'r', peer: 'alice', url: 'http://floe.test', WebSocket: net.WebSocket });
  const got = []; // every `message` event
  s.addEventListener('message', (e) => got.push(e.detail));
  const joining = s.join();
  const ws = net.last();
  assert.equal(ws.url, 'ws://floe.test/v1/ws');
  ws.accept();
  assert.deepEqual(ws.sent, [{ type: 'join', v: 1, room: 'r', peer: 'alice' }]);
  ws.deliver(welcome('s1', 'tok1'));
  await joining;
  assert.equal(s.state, 'open');
  return { s, net, ws, got };
}

/** After a drop: waits out the first reconnect delay and accepts the new socket. */
async function reconnected(t, net, delayMs = 250) {
  const before = net.sockets.length;
  await advance(t, delayMs);
  assert.equal(net.sockets.length, before + 1, 'a reconnect attempt was made');
  const ws = net.last();
  ws.accept();
  return ws;
}

test('messages sent while disconnected wait in the outbox and go out in order after the resume', async (t) => {
  const { s, net, ws } = await joined(t);
  ws.drop();
  assert.equal(s.state, 'reconnecting');
  for (let n = 1; n <= 3; n++) s.send({ type: 'data', to: 'bob', data: { n } });
  assert.deepEqual(s.outbox.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(ws.routed(), [], 'nothing went out on the broken socket');

  const ws2 = await reconnected(t, net);
  assert.deepEqual(ws2.sent, [{ type: 'resume', session: 's1', resumeToken: 'tok1', lastSeq: 0 }]);
  // Sent while the resume is in flight on an open socket: it waits for the answer, too.
  s.send({ type: 'data', to: 'bob', data: { n: 4 } });
  assert.deepEqual(ws2.routed(), [], 'nothing is sent before the server answers the resume');
  ws2.deliver(resumed(0, 0));
  assert.equal(s.state, 'open');
  assert.deepEqual(
    ws2.routed().map((m) => [m.seq, m.to, m.data.n]),
    [
      [1, 'bob', 1],
      [2, 'bob', 2],
      [3, 'bob', 3],
      [4, 'bob', 4],
    ],
  );
  // Kept until the server confirms them, then dropped.
  assert.deepEqual(s.outbox.map((m) => m.seq), [1, 2, 3, 4]);
  ws2.deliver({ type: 'pong', ack: 4 });
  assert.deepEqual(s.outbox, []);
});

test('on resume the messages the server did not confirm are resent and confirmed ones dropped', async (t) => {
  const { s, net, ws } = await joined(t);
  for (let n = 1; n <= 4; n++) s.send({ type: 'data', to: 'bob', data: { n } });
  assert.deepEqual(ws.routed().map((m) => m.seq), [1, 2, 3, 4]);
  // pong.ack is cumulative: everything up to 1 arrived.
  ws.deliver({ type: 'pong', ack: 1 });
  assert.deepEqual(s.outbox.map((m) => m.seq), [2, 3, 4]);
  ws.drop();

  const ws2 = await reconnected(t, net);
  // resumed.received is cumulative too: 2 and 3 arrived before the connection broke, 4 did not.
  ws2.deliver(resumed(3, 0));
  assert.deepEqual(ws2.routed().map((m) => m.seq), [4]);
  assert.deepEqual(s.outbox.map((m) => m.seq), [4]);
  // New messages go out at once, numbered after the old ones.
  s.send({ type: 'data', to: 'bob', data: { n: 5 } });
  assert.deepEqual(ws2.routed().map((m) => m.seq), [4, 5]);
  ws2.deliver({ type: 'pong', ack: 5 });
  assert.deepEqual(s.outbox, []);
});

test('the reconnect backoff grows to 5 s and stays there while the network is away', async (t) => {
  const { s, net, ws } = await joined(t);
  ws.drop();
  // 250 ms first, then ×1.7 + 100 ms, capped at 5 s.
  const delays = [250, 525, 993, 1788, 3140, 5000, 5000, 5000, 5000];
  for (const [i, d] of delays.entries()) {
    const before = net.sockets.length;
    await advance(t, d - 1, 1);
    assert.equal(net.sockets.length, before, `attempt ${i + 1} not before ${d} ms`);
    await advance(t, 1);
    assert.equal(net.sockets.length, before + 1, `attempt ${i + 1} after ${d} ms`);
    assert.equal(s.reconnectAttempts, i + 1);
    net.last().drop(); // the network is still away: the attempt fails
    await settle();
    assert.equal(s.state, 'reconnecting');
  }
  // The network returns: the next attempt resumes.
  const ws2 = await reconnected(t, net, 5000);
  assert.equal(ws2.sent[0].type, 'resume');
  ws2.deliver(resumed(0, 0));
  assert.equal(s.state, 'open');
});

test('close() while reconnecting stops the attempts', async (t) => {
  const { s, net, ws } = await joined(t);
  ws.drop();
  await advance(t, 250);
  net.last().drop(); // the first attempt fails; the next one waits 525 ms
  await settle();
  s.close();
  assert.equal(s.state, 'closed');
  const opened = net.sockets.length;
  await advance(t, 60_000, 500);
  assert.equal(net.sockets.length, opened, 'no attempt after close()');
  assert.equal(s.state, 'closed');
});

test('close() on a live session sends leave, closes with 1000 and never reconnects', async (t) => {
  const { s, net, ws } = await joined(t);
  s.close();
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  assert.deepEqual(ws.closedWith, { code: 1000, reason: 'bye' });
  await advance(t, 60_000, 500);
  assert.equal(net.sockets.length, 1);
  assert.equal(s.reconnectAttempts, 0);
});

test('a join refused with a fatal error rejects join() and does not reconnect', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const net = fakeNet();
  const s = new FloeSignal({ room: 'r', peer: 'alice', url: 'http://floe.test', WebSocket: net.WebSocket });
  const joining = s.join();
  const ws = net.last();
  ws.accept();
  ws.deliver({ type: 'error', code: 'join_timeout', message: 'no join within 10 s', fatal: true });
  ws.drop(1008, 'join_timeout');
  await assert.rejects(joining, (e) => e.code === 'join_timeout' && e.fatal === true);
  await advance(t, 60_000, 500);
  assert.equal(net.sockets.length, 1, 'no reconnect without a session');
  assert.equal(s.reconnectAttempts, 0);
});

test('go_away: the client reconnects after reconnectMs and resumes', async (t) => {
  const { s, net, ws } = await joined(t);
  ws.deliver({ type: 'go_away', reason: 'shutdown', reconnectMs: 2000 });
  ws.drop(1012, 'server_shutdown');
  assert.equal(s.state, 'reconnecting');
  await advance(t, 1999, 1);
  assert.equal(net.sockets.length, 1, 'not before reconnectMs');
  const ws2 = await reconnected(t, net, 1);
  assert.equal(ws2.sent[0].type, 'resume');
});

test('go_away from a draining node: the client leaves the open connection and resumes after reconnectMs', async (t) => {
  const { s, net, ws } = await joined(t);
  const seen = [];
  s.addEventListener('goaway', (e) => seen.push(e.detail.reason));
  ws.deliver({ type: 'go_away', reason: 'draining', reconnectMs: 700 });
  await settle();
  assert.deepEqual(seen, ['draining']);
  assert.deepEqual(ws.closedWith, { code: 4000, reason: 'go_away' });
  assert.equal(s.state, 'reconnecting');
  await advance(t, 699, 1);
  assert.equal(net.sockets.length, 1, 'not before reconnectMs');
  const ws2 = await reconnected(t, net, 1);
  assert.equal(ws2.sent[0].type, 'resume');
});

test('messages the server replays after a resume are delivered once, and acknowledged', async (t) => {
  const { net, ws, got } = await joined(t);
  for (let seq = 1; seq <= 3; seq++) ws.deliver(data(seq, seq));
  ws.deliver(data(2, 2)); // a duplicate on the same connection, too
  assert.deepEqual(got.map((m) => m.seq), [1, 2, 3]);
  ws.drop();

  const ws2 = await reconnected(t, net);
  assert.deepEqual(ws2.sent[0], { type: 'resume', session: 's1', resumeToken: 'tok1', lastSeq: 3 });
  ws2.deliver(resumed(0, 4));
  // The server replays from its mailbox: messages 2 and 3 again (an ack was lost with the old
  // connection), then the new one, twice.
  for (const seq of [2, 3, 4, 4]) ws2.deliver(data(seq, seq));
  assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4]);
  await advance(t, 200);
  assert.deepEqual(ws2.sent.filter((m) => m.type === 'ack'), [{ type: 'ack', seq: 4 }]);
});

test('resume_failed ends the old session and joins afresh', async (t) => {
  const { s, net, ws, got } = await joined(t);
  let lost = 0;
  s.addEventListener('sessionlost', () => lost++);
  const welcomes = [];
  s.addEventListener('welcome', (e) => welcomes.push(e.detail));
  ws.deliver(data(1, 1));
  ws.deliver(data(2, 2));
  ws.drop();
  s.send({ type: 'data', to: 'bob', data: { n: 1 } });

  const ws2 = await reconnected(t, net);
  assert.equal(ws2.sent[0].type, 'resume');
  ws2.deliver({ type: 'error', code: 'resume_failed', message: 'unknown session', fatal: false });
  assert.equal(lost, 1);
  assert.ok(ws2.closedWith, 'the resume socket is closed');
  const ws3 = net.last();
  assert.notEqual(ws3, ws2, 'a new connection for the join');
  ws3.accept();
  assert.deepEqual(ws3.sent, [{ type: 'join', v: 1, room: 'r', peer: 'alice' }]);
  ws3.deliver(welcome('s2', 'tok2'));
  await settle();
  assert.equal(s.state, 'open');
  assert.equal(s.session, 's2');
  assert.equal(welcomes.length, 1);
  // The old session's outbox is dropped: its messages were for connections the room closes.
  assert.deepEqual(s.outbox, []);
  assert.deepEqual(ws3.routed(), []);
  // The new session numbers its messages from 1 again.
  ws3.deliver(data(1, 10));
  assert.deepEqual(got.map((m) => m.data.n), [1, 2, 10]);
  // The reconnect loop is over: no more resume attempts.
  await advance(t, 30_000, 500);
  assert.equal(net.sockets.length, 3);
  assert.ok(net.sockets.every((w) => w === ws2 || !w.sent.some((m) => m.type === 'resume')));
});

test('a session the server ends (kicked) is not resumed: no reconnect, the error reaches the app', async (t) => {
  const { s, net, ws } = await joined(t);
  const errors = [];
  s.addEventListener('error', (e) => errors.push(e.detail));
  ws.deliver({ type: 'error', code: 'kicked', message: 'an admin removed you', fatal: true });
  ws.drop(1008, 'kicked');
  await advance(t, 60_000, 500);
  assert.equal(net.sockets.length, 1, 'a kicked client must not reconnect and rejoin');
  assert.equal(s.reconnectAttempts, 0);
  assert.equal(s.state, 'closed');
  assert.deepEqual(errors.map((e) => e.code), ['kicked']);
});

test('heartbeat_timeout keeps the session: the client resumes', async (t) => {
  const { net, ws } = await joined(t);
  ws.deliver({ type: 'error', code: 'heartbeat_timeout', message: 'silent', fatal: true });
  ws.drop(1008, 'heartbeat_timeout');
  const next = await reconnected(t, net);
  assert.equal(next.sent[0].type, 'resume');
});

// ---------------------------------------------------------------------------------------------
// FloePeer's ICE restarts, with a fake RTCPeerConnection (no browser)
// ---------------------------------------------------------------------------------------------

/** A fake RTCPeerConnection: records restartIce() calls; the test sets connectionState. */
class FakePeerConnection extends EventTarget {
  constructor(config) {
    super();
    this.config = config;
    this.connectionState = 'new';
    this.restarts = 0;
    this.closed = false;
    this.onconnectionstatechange = null;
  }

  createDataChannel(label) {
    return Object.assign(new EventTarget(), { label, binaryType: 'blob', readyState: 'connecting' });
  }

  addTrack() {}

  restartIce() {
    this.restarts += 1;
  }

  close() {
    this.closed = true;
  }

  /** The connection moves to `state`, as the browser reports it. */
  moveTo(state) {
    this.connectionState = state;
    this.onconnectionstatechange?.();
  }
}

/** A FloePeer that offers, in a stand-in room, over a fake RTCPeerConnection. */
async function offeringPeer(t) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const saved = globalThis.RTCPeerConnection;
  globalThis.RTCPeerConnection = FakePeerConnection;
  t.after(() => {
    globalThis.RTCPeerConnection = saved;
  });
  const { FloePeer } = await import('../../web/floe.js');
  const room = Object.assign(new EventTarget(), {
    localStream: null,
    _rtcConfig: () => ({ iceServers: [], iceTransportPolicy: 'relay' }),
    _emit: () => {},
    signal: { send: () => {} },
  });
  const peer = new FloePeer(room, { peer: 'bob', polite: false, offerer: true });
  return { peer, pc: peer.pc };
}

test('a failed connection gets a few ICE restarts with growing pauses, not a restart loop', async (t) => {
  const { pc } = await offeringPeer(t);
  pc.moveTo('failed');
  await advance(t, 1);
  assert.equal(pc.restarts, 1, 'the first restart is immediate');
  // Each restart fails again: pauses of 2 s, 4 s, 8 s, then no more.
  for (const [pause, total] of [[2000, 2], [4000, 3], [8000, 4]]) {
    pc.moveTo('failed');
    await advance(t, pause - 100, 100);
    assert.equal(pc.restarts, total - 1, `not before ${pause} ms`);
    await advance(t, 100, 100);
    assert.equal(pc.restarts, total, `after ${pause} ms`);
  }
  pc.moveTo('failed');
  await advance(t, 120_000, 1000);
  assert.equal(pc.restarts, 4, 'no fifth restart in a row');
});

test('a connection that recovers gets its restarts back; a closed peer restarts nothing', async (t) => {
  const { peer, pc } = await offeringPeer(t);
  for (let i = 0; i < 4; i++) {
    pc.moveTo('failed');
    await advance(t, 10_000, 500);
  }
  assert.equal(pc.restarts, 4);
  pc.moveTo('connected');
  pc.moveTo('failed');
  await advance(t, 1);
  assert.equal(pc.restarts, 5, 'connected again: the next failure restarts at once');
  pc.moveTo('failed');
  peer.close();
  await advance(t, 10_000, 500);
  assert.equal(pc.restarts, 5, 'nothing after close()');
});
