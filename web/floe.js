// floe.js: browser client for floe signalling (protocol v1). ES module, no build step.
//
//   import { FloeRoom } from '/floe.js';
//   const room = new FloeRoom({ room: 'demo', peer: 'alice' });
//   room.addEventListener('peer', (e) => { const p = e.detail; p.addEventListener('chat', ...); });
//   await room.join();
//   room.broadcastChat('hello');
//
// Two layers:
// - FloeSignal: the signalling session. WebSocket at /v1/ws (or the HTTP post box), join,
//   heartbeats, acknowledgements, resume after a network blip (every missed message is replayed
//   in order, unacknowledged outgoing messages are resent and deduplicated by the server),
//   go_away handling, and automatic fallback to REST when a WebSocket cannot be opened.
// - FloeRoom / FloePeer: one RTCPeerConnection per other peer, perfect negotiation using the
//   server-assigned roles (`offerer`, `polite`), trickle ICE, ICE servers from the join answer,
//   a chat data channel and a file channel with progress, optional media.
//
// docs/signalling.md describes the wire protocol.

export const PROTOCOL_VERSION = 1;
/** The close code the client uses when it leaves a node that sent `go_away` (4000-4999: private use). */
const GO_AWAY_CLOSE = 4000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Fatal errors after which the server has ended the session (docs/signalling.md §4): the
 * client does not try to resume it. (`heartbeat_timeout` and `server_shutdown` keep it.) */
const SESSION_ENDING = new Set(['kicked', 'session_replaced', 'token_expired', 'mailbox_overflow']);

/** ICE restarts in a row after the connection failed, and the pause before the second (doubling). */
const ICE_RESTART_MAX = 4;
const ICE_RESTART_PAUSE_MS = 2000;

/** An error answer from the server (`code` is stable; see docs/signalling.md). */
export class FloeError extends Error {
  constructor(body) {
    super(`${body.code}: ${body.message}`);
    this.code = body.code;
    this.fatal = !!body.fatal;
    this.refSeq = body.refSeq;
  }
}

function httpBase(url) {
  const u = new URL(url || globalThis.location?.origin || 'http://127.0.0.1:8080');
  return `${u.protocol}//${u.host}`;
}

function wsUrl(base) {
  return `${base.replace(/^http/, 'ws')}/v1/ws`;
}

/**
 * One signalling session: join, heartbeats, acknowledgements, resume after a network blip, the
 * outbox of unconfirmed messages, go_away, and the HTTP post box as a fallback transport.
 *
 * Events (CustomEvent, data in `detail`):
 * - `welcome` (the join answer), `resumed` (the resume answer, after a reconnect)
 * - `message` (every numbered server message, exactly once and in order)
 * - `state` ('connecting' | 'open' | 'reconnecting' | 'closed')
 * - `error` (FloeError for refused messages), `transport` ('ws' | 'rest')
 * - `sessionlost` (the session could not be resumed; a fresh join follows), `refreshed` (the
 *   answer to refresh())
 *
 * Read-only for the application: `state`, `peer`, `session`, `welcome`, `lastSeq`, `outbox`,
 * `activeTransport`, `reconnectAttempts`.
 */
export class FloeSignal extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.room room id
   * @param {string} [o.peer] peer id (server-assigned when omitted)
   * @param {string} [o.token] JWT (production mode)
   * @param {string} [o.url] server base URL (default: this page's origin)
   * @param {'auto'|'ws'|'rest'} [o.transport] default 'auto': WebSocket, REST if it cannot open
   * @param {typeof WebSocket} [o.WebSocket] WebSocket constructor (default: the global one; the
   *   unit tests pass a fake)
   */
  constructor(o) {
    super();
    this.room = o.room;
    this.peer = o.peer; // as requested until `welcome`, then the server's answer
    this.token = o.token;
    this.base = httpBase(o.url);
    this.transport = o.transport || 'auto'; // as configured
    this.activeTransport = null; // 'ws' | 'rest': the transport of the current join
    this.state = 'closed';
    this.welcome = null; // the last `welcome`
    this.session = null; // session id; null before the join and after the session is lost
    this.resumeToken = null;
    this.lastSeq = 0; // highest server seq processed
    this.clientSeq = 0; // last client seq assigned
    this.outbox = []; // sent but not confirmed by the server (pong.ack / resumed.received)
    this.ws = null; // the current WebSocket (null while there is none)
    this.closed = false; // close() was called: no reconnecting
    this.reconnectAttempts = 0; // resume attempts since construction
    this._WebSocket = o.WebSocket || null; // null: globalThis.WebSocket, looked up when opening
    this._pending = null; // {resolve, reject} of join()
    this._reconnecting = false; // the _reconnect loop runs
    this._resumeWaiter = null; // settles the current resume attempt (true, false or 'lost')
    this._goAwayMs = null; // `go_away.reconnectMs`: the delay before reconnecting after 1012
    this._ackTimer = null; // pending `ack` (sent 200 ms after the first unacknowledged message)
    this._hb = null; // heartbeat interval
    this._restChain = Promise.resolve(); // REST POSTs, one at a time and in order
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(s) {
    if (this.state !== s) {
      this.state = s;
      this._emit('state', s);
    }
  }

  /** Joins the room; resolves with the `welcome` message. */
  async join() {
    this.closed = false;
    if (this.transport === 'rest') return this._restJoin();
    try {
      return await this._wsJoin();
    } catch (e) {
      if (this.transport === 'auto' && e && e.wsUnavailable) return this._restJoin();
      throw e;
    }
  }

  _joinMsg() {
    const m = { type: 'join', v: PROTOCOL_VERSION, room: this.room };
    if (this.peer) m.peer = this.peer;
    if (this.token) m.token = this.token;
    return m;
  }

  // ---- WebSocket transport ------------------------------------------------------------------

  _wsJoin() {
    this._setState('connecting');
    this.activeTransport = 'ws';
    this._emit('transport', 'ws');
    return new Promise((resolve, reject) => {
      this._pending = { resolve, reject };
      this._openWs((ws) => ws.send(JSON.stringify(this._joinMsg())), true);
    });
  }

  _openWs(onOpen, first) {
    let ws;
    try {
      ws = new (this._WebSocket || globalThis.WebSocket)(wsUrl(this.base));
    } catch (e) {
      if (first && this._pending) this._pending.reject(Object.assign(new Error(String(e)), { wsUnavailable: true }));
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      onOpen(ws);
    };
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._stopHeartbeat();
      if (first && !opened && this._pending) {
        const p = this._pending;
        this._pending = null;
        p.reject(Object.assign(new Error('WebSocket could not be opened'), { wsUnavailable: true }));
        return;
      }
      const goneAway = ev.code === 1012 || ev.code === GO_AWAY_CLOSE;
      if (!this.closed && this.session) this._reconnect(goneAway ? this._goAwayMs || 500 : 250);
      else if (!this.session && this._pending) {
        const p = this._pending;
        this._pending = null;
        p.reject(new Error(`connection closed (${ev.code} ${ev.reason})`));
      }
    };
  }

  async _reconnect(delayMs) {
    if (this._reconnecting || this.closed) return;
    this._reconnecting = true;
    this._setState('reconnecting');
    let delay = delayMs;
    while (!this.closed) {
      await sleep(delay);
      if (this.closed) break;
      this.reconnectAttempts += 1;
      const ok = await new Promise((resolve) => {
        let settled = false;
        const done = (v) => {
          if (!settled) {
            settled = true;
            resolve(v);
          }
        };
        this._resumeWaiter = done;
        this._openWs((ws) => {
          ws.send(
            JSON.stringify({ type: 'resume', session: this.session, resumeToken: this.resumeToken, lastSeq: this.lastSeq }),
          );
        }, false);
        const ws = this.ws;
        if (!ws) return done(false);
        ws.addEventListener('close', () => done(false));
        setTimeout(() => done(false), 5000);
      });
      this._resumeWaiter = null;
      if (ok === 'lost') break;
      if (ok) {
        this._reconnecting = false;
        return;
      }
      delay = Math.min(5000, Math.round(delay * 1.7) + 100);
    }
    this._reconnecting = false;
  }

  _onFrame(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    this._handle(m);
  }

  _handle(m) {
    switch (m.type) {
      case 'welcome':
        this.welcome = m;
        this.session = m.session;
        this.resumeToken = m.resumeToken;
        this.peer = m.peer;
        this.lastSeq = 0;
        this._setState('open');
        this._startHeartbeat(m.heartbeatMs);
        if (this._pending) {
          const p = this._pending;
          this._pending = null;
          p.resolve(m);
        }
        this._emit('welcome', m);
        this._flushOutbox();
        return;
      case 'resumed':
        this._confirm(m.received);
        this._setState('open');
        this._startHeartbeat(this.welcome?.heartbeatMs || 10000);
        if (this._resumeWaiter) this._resumeWaiter(true);
        this._emit('resumed', m);
        this._flushOutbox();
        return;
      case 'pong':
        this._confirm(m.ack);
        return;
      case 'go_away':
        // The node is shutting down (it closes with 1012 next) or draining (it keeps the
        // connection open): either way, leave it and `resume` after reconnectMs, through the
        // same URL (a load balancer sends the new connection to a node that takes it).
        this._goAwayMs = m.reconnectMs;
        this._emit('goaway', m);
        if (this.ws && this.ws.readyState === 1) this.ws.close(GO_AWAY_CLOSE, 'go_away');
        return;
      case 'refreshed':
        this._emit('refreshed', m);
        return;
      case 'error': {
        const err = new FloeError(m);
        if (m.code === 'resume_failed') {
          if (this._resumeWaiter) this._resumeWaiter('lost');
          this._sessionLost();
          return;
        }
        if (this._pending && !this.session) {
          const p = this._pending;
          this._pending = null;
          p.reject(err);
          return;
        }
        if (err.fatal && SESSION_ENDING.has(m.code) && this.session) {
          // The server ended the session (kicked, replaced, expired, overflowed): reconnecting
          // would walk a kicked peer back in, or fight the connection that replaced us.
          this.session = null;
          this.outbox = [];
          this._setState('closed');
        }
        this._emit('error', err);
        return;
      }
      default:
        if (typeof m.seq === 'number') {
          if (m.seq <= this.lastSeq) return; // a replay we already processed
          this.lastSeq = m.seq;
          this._scheduleAck();
          this._emit('message', m);
        }
    }
  }

  /** The session is gone for good (TTL passed): join afresh and tell the app. */
  async _sessionLost() {
    this.session = null;
    this.outbox = [];
    this._emit('sessionlost', {});
    if (this.closed) return;
    try {
      if (this.ws) this.ws.close();
      this.ws = null;
      await this.join();
    } catch (e) {
      this._emit('error', e);
    }
  }

  _confirmOne(m) {
    this.outbox = this.outbox.filter((x) => x !== m);
  }

  _confirm(upto) {
    if (typeof upto === 'number') this.outbox = this.outbox.filter((m) => m.seq > upto);
  }

  _scheduleAck() {
    if (this._ackTimer || this.activeTransport === 'rest') return; // REST polls acknowledge

    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      this._raw({ type: 'ack', seq: this.lastSeq });
    }, 200);
  }

  _startHeartbeat(ms) {
    this._stopHeartbeat();
    const every = Math.max(1000, Math.floor((ms || 10000) * 0.8));
    this._hb = setInterval(() => this._raw({ type: 'ping', ack: this.lastSeq }), every);
  }

  _stopHeartbeat() {
    if (this._hb) clearInterval(this._hb);
    this._hb = null;
  }

  /** Sends an unnumbered control message if connected (dropped otherwise: they are idempotent). */
  _raw(m) {
    if (this.activeTransport === 'rest') {
      if (this.session) {
        this._restChain = this._restChain.then(() => this._restPost(m)).catch(() => {});
      }
      return;
    }
    if (this.ws && this.ws.readyState === 1 && this.state === 'open') this.ws.send(JSON.stringify(m));
  }

  /**
   * Sends a routed message (offer, answer, candidate, end_of_candidates, bye, data). It gets a
   * client `seq` and is kept until the server confirms it, so a network blip loses nothing.
   */
  send(msg) {
    const m = { ...msg, seq: ++this.clientSeq };
    this.outbox.push(m);
    if (this.outbox.length > 4096) this.outbox.shift();
    if (this.state === 'open') this._transmit(m);
  }

  _transmit(m) {
    if (this.activeTransport === 'rest') {
      // One POST at a time, so the server sees client seqs in order.
      this._restChain = this._restChain
        .then(() => (this.outbox.includes(m) ? this._restPost(m) : null))
        .then(() => this._confirmOne(m))
        .catch(() => {});
    } else if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(m));
    }
  }

  _flushOutbox() {
    for (const m of this.outbox) this._transmit(m);
  }

  /** Replaces the token on the live session (before `exp`). */
  refresh(token) {
    this.token = token;
    this._raw({ type: 'refresh', token });
  }

  /** Simulates a network blip: drops the connection without leaving (the session resumes). */
  dropConnection() {
    const ws = this.ws;
    if (!ws) return;
    // Treat the socket as gone now, as the close handler would: with the network away the
    // closing handshake may never finish, and `onclose` could come much later.
    this.ws = null;
    this._stopHeartbeat();
    ws.close(4000, 'client blip');
    if (!this.closed && this.session) this._reconnect(250);
  }

  /** Leaves the room for good. */
  close() {
    this.closed = true;
    this._stopHeartbeat();
    if (this.activeTransport === 'rest') {
      if (this.session) {
        fetch(`${this.base}/v1/rest/sessions/${this.session}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${this.resumeToken}` },
        }).catch(() => {});
      }
    } else if (this.ws) {
      if (this.ws.readyState === 1) this.ws.send(JSON.stringify({ type: 'leave' }));
      this.ws.close(1000, 'bye');
    }
    this.ws = null;
    this._setState('closed');
  }

  // ---- REST transport -----------------------------------------------------------------------

  async _restJoin() {
    this._setState('connecting');
    this.activeTransport = 'rest';
    this._emit('transport', 'rest');
    const r = await fetch(`${this.base}/v1/rest/join`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(this._joinMsg()),
    });
    const m = await r.json();
    if (m.type === 'error') throw new FloeError(m);
    this._handle(m);
    this._stopHeartbeat(); // polling is the heartbeat
    this._pollLoop();
    return m;
  }

  async _restPost(m) {
    const r = await fetch(`${this.base}/v1/rest/sessions/${this.session}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.resumeToken}` },
      body: JSON.stringify(m),
    });
    const body = await r.json();
    if (body.type === 'error') {
      if (body.code === 'session_not_found') return this._sessionLost();
      this._emit('error', new FloeError(body));
      return;
    }
    for (const reply of body.replies || []) this._handle(reply);
  }

  async _pollLoop() {
    const session = this.session;
    let backoff = 250;
    while (!this.closed && this.session === session) {
      try {
        const r = await fetch(
          `${this.base}/v1/rest/sessions/${session}/messages?after=${this.lastSeq}&wait=20`,
          { headers: { authorization: `Bearer ${this.resumeToken}` } },
        );
        const body = await r.json();
        if (body.type === 'error') {
          if (body.code === 'session_not_found') return this._sessionLost();
          throw new FloeError(body);
        }
        if (this.state !== 'open') {
          this._setState('open');
          this._flushOutbox();
        }
        for (const m of body.messages) this._handle(m);
        backoff = 250;
      } catch (e) {
        if (this.closed) return;
        this._setState('reconnecting');
        await sleep(backoff);
        backoff = Math.min(5000, backoff * 2);
      }
    }
  }
}

// ---- WebRTC --------------------------------------------------------------------------------

const FILE_CHUNK = 16 * 1024;

const SHA256_K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 (FIPS 180-4) in plain JavaScript, for pages that are not a secure context. */
export function sha256Js(bytes) {
  const len = bytes.length;
  const padded = (((len + 9 + 63) / 64) | 0) * 64;
  const buf = new Uint8Array(padded);
  buf.set(bytes);
  buf[len] = 0x80;
  const view = new DataView(buf.buffer);
  view.setUint32(padded - 8, Math.floor(len / 0x20000000));
  view.setUint32(padded - 4, (len * 8) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const ror = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) | 0;
      const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(4 * i, h[i]);
  return out;
}

/** Lower-case hex SHA-256 of an ArrayBuffer or Uint8Array: WebCrypto when available, else sha256Js. */
export async function sha256Hex(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const digest = globalThis.crypto?.subtle
    ? new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes))
    : sha256Js(bytes);
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The connection with one other peer of a FloeRoom (created by the room: listen for its `peer`
 * event): an RTCPeerConnection negotiated with perfect negotiation in the roles the server
 * assigned, a `chat` data channel (negotiated id 0) and a `file` channel (id 1).
 *
 * Events (CustomEvent, data in `detail`): `open` (the chat channel opened), `chat` ({from, text}),
 * `file` ({name, size, type, blob, sha256, verified}), `fileprogress` ({direction, name,
 * sent|received, size}), `fileack` (the receiver's answer to a file we sent), `track`
 * (RTCTrackEvent), `state` (connectionState), `closed`.
 *
 * Read-only for the application: `id`, `offerer`, `polite`, `pc`, `chat`, `files`, `closed`.
 */
export class FloePeer extends EventTarget {
  /**
   * @param {FloeRoom} room
   * @param {{peer: string, polite: boolean, offerer: boolean}} info the PeerInfo from the server
   */
  constructor(room, info) {
    super();
    this.room = room;
    this.id = info.peer;
    this.polite = info.polite;
    this.offerer = info.offerer;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.negotiated = false; // first negotiation done (the non-offerer may start renegotiations after)
    this.pendingCandidates = []; // received before the remote description
    this.queue = Promise.resolve(); // incoming signals, handled one after another
    this.ackWaiters = []; // resolvers of sendFile() calls waiting for the receiver's file-ack
    this.incoming = null; // the file being received: its header, chunks and byte count
    this.closed = false;
    this._iceRestarts = 0; // ICE restarts since the connection was last 'connected'
    this._iceRestartTimer = null;
    this.pc = new RTCPeerConnection(room._rtcConfig());
    this.chat = this.pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.files = this.pc.createDataChannel('file', { negotiated: true, id: 1 });
    this.files.binaryType = 'arraybuffer';
    this._listen();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Wires the connection's and the channels' handlers, and adds the room's local media. */
  _listen() {
    const pc = this.pc;
    this.chat.onmessage = (e) => this._emit('chat', { from: this.id, text: String(e.data) });
    this.chat.onopen = () => this._emit('open', {});
    this.files.onmessage = (e) => this._onFileData(e.data);
    const stream = this.room.localStream;
    if (stream) for (const t of stream.getTracks()) pc.addTrack(t, stream);
    pc.onnegotiationneeded = () => this._negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && candidate.candidate) {
        this.room.signal.send({
          type: 'candidate',
          to: this.id,
          candidate: candidate.candidate,
          sdpMid: candidate.sdpMid,
          sdpMLineIndex: candidate.sdpMLineIndex,
          usernameFragment: candidate.usernameFragment,
        });
      } else if (!candidate) {
        this.room.signal.send({ type: 'end_of_candidates', to: this.id });
      }
    };
    pc.ontrack = (e) => this._emit('track', e);
    pc.onconnectionstatechange = () => {
      this._emit('state', pc.connectionState);
      if (pc.connectionState === 'connected') this._iceRestarts = 0;
      // A path that broke (e.g. after a network change) gets an ICE restart from the offerer,
      // a few times with growing pauses: each restart allocates on every TURN server again, so
      // restarting at once and forever against a relay that refuses the path would burn the
      // user's allocation quota (seen in the NAT lab: 79 allocations, then 486).
      if (pc.connectionState === 'failed' && this.offerer) this._scheduleIceRestart();
    };
  }

  /** The offerer's ICE restart after 'failed': at most ICE_RESTART_MAX in a row, the first at
   * once, then after ICE_RESTART_PAUSE_MS doubling; reset once the connection is 'connected'. */
  _scheduleIceRestart() {
    if (this.closed || this._iceRestartTimer || this._iceRestarts >= ICE_RESTART_MAX) return;
    const delay = this._iceRestarts === 0 ? 0 : ICE_RESTART_PAUSE_MS * 2 ** (this._iceRestarts - 1);
    this._iceRestarts += 1;
    this._iceRestartTimer = setTimeout(() => {
      this._iceRestartTimer = null;
      if (!this.closed && this.pc.connectionState === 'failed') this.pc.restartIce();
    }, delay);
  }

  async _negotiate() {
    if (!this.offerer && !this.negotiated) return; // the server said the other side offers first
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const d = this.pc.localDescription;
      this.room.signal.send({ type: d.type, to: this.id, sdp: d.sdp });
    } catch (e) {
      this.room._emit('error', e);
    } finally {
      this.makingOffer = false;
    }
  }

  /** Signals are handled strictly one after another. */
  handleSignal(m) {
    this.queue = this.queue.then(() => this._onSignal(m)).catch((e) => this.room._emit('error', e));
    return this.queue;
  }

  async _onSignal(m) {
    const pc = this.pc;
    if (m.type === 'offer' || m.type === 'answer') {
      const collision = m.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription({ type: m.type, sdp: m.sdp });
      if (m.type === 'offer') {
        await pc.setLocalDescription();
        const d = pc.localDescription;
        this.room.signal.send({ type: d.type, to: this.id, sdp: d.sdp });
      }
      this.negotiated = true;
      const held = this.pendingCandidates;
      this.pendingCandidates = [];
      for (const c of held) await this._addCandidate(c);
    } else if (m.type === 'candidate') {
      const c = {
        candidate: m.candidate,
        sdpMid: m.sdpMid,
        sdpMLineIndex: m.sdpMLineIndex,
        usernameFragment: m.usernameFragment,
      };
      if (!pc.remoteDescription) this.pendingCandidates.push(c);
      else await this._addCandidate(c);
    } else if (m.type === 'end_of_candidates') {
      if (pc.remoteDescription) await pc.addIceCandidate().catch(() => {});
    } else if (m.type === 'bye') {
      this.close();
    }
  }

  async _addCandidate(c) {
    try {
      await this.pc.addIceCandidate(c);
    } catch (e) {
      if (!this.ignoreOffer) this.room._emit('error', e);
    }
  }

  /** Sends a chat line over the data channel. */
  sendChat(text) {
    if (this.chat.readyState === 'open') this.chat.send(text);
  }

  /**
   * Sends a File/Blob over the file channel (protocol: docs/how-peers-connect.md): a JSON header
   * with the SHA-256, the bytes, then the receiver answers `file-ack` with its own digest.
   * Resolves with that ack ({name, size, sha256, ok}); rejects when the receiver's digest differs.
   */
  async sendFile(file) {
    const ch = this.files;
    if (ch.readyState === 'connecting') {
      await new Promise((resolve, reject) => {
        ch.addEventListener('open', resolve, { once: true });
        ch.addEventListener('close', () => reject(new Error('the file channel closed')), { once: true });
      });
    }
    ch.bufferedAmountLowThreshold = 256 * 1024;
    const name = file.name || 'blob';
    const sha256 = await sha256Hex(await file.arrayBuffer());
    const acked = new Promise((resolve) => this.ackWaiters.push(resolve));
    ch.send(JSON.stringify({ kind: 'file', name, size: file.size, type: file.type || '', sha256 }));
    let sent = 0;
    while (sent < file.size) {
      if (ch.bufferedAmount > 1024 * 1024) {
        await new Promise((r) => {
          ch.onbufferedamountlow = () => {
            ch.onbufferedamountlow = null;
            r();
          };
        });
      }
      const chunk = await file.slice(sent, sent + FILE_CHUNK).arrayBuffer();
      ch.send(chunk);
      sent += chunk.byteLength;
      this._emit('fileprogress', { direction: 'send', name, sent, size: file.size });
    }
    const ack = await acked;
    if (!ack.ok || ack.size !== file.size || ack.sha256 !== sha256) {
      throw new Error(`${name}: the receiver got ${ack.size} bytes with sha256 ${ack.sha256}, we sent ${sha256}`);
    }
    return ack;
  }

  _onFileData(data) {
    if (typeof data === 'string') {
      const h = JSON.parse(data);
      if (h.kind === 'file-ack') {
        const w = this.ackWaiters.shift();
        if (w) w(h);
        this._emit('fileack', h);
        return;
      }
      this.incoming = { ...h, chunks: [], received: 0 };
      if (h.size === 0) this._fileDone();
      return;
    }
    const f = this.incoming;
    if (!f) return;
    f.chunks.push(data);
    f.received += data.byteLength;
    this._emit('fileprogress', { direction: 'receive', name: f.name, received: f.received, size: f.size });
    if (f.received >= f.size) this._fileDone();
  }

  async _fileDone() {
    const f = this.incoming;
    this.incoming = null;
    const blob = new Blob(f.chunks, { type: f.type });
    const sha256 = await sha256Hex(await blob.arrayBuffer());
    const verified = typeof f.sha256 === 'string' && f.sha256.toLowerCase() === sha256;
    const ok = blob.size === f.size && (verified || typeof f.sha256 !== 'string');
    if (this.files.readyState === 'open') {
      this.files.send(JSON.stringify({ kind: 'file-ack', name: f.name, size: blob.size, sha256, ok }));
    }
    if (!ok) {
      this.room._emit('error', new Error(`${f.name}: checksum mismatch (header ${f.sha256}, data ${sha256})`));
      return;
    }
    this._emit('file', { name: f.name, size: f.size, type: f.type, blob, sha256, verified });
  }

  /** The selected candidate pair: { local, remote, protocol, rtt } (types host/srflx/prflx/relay). */
  async selectedPath() {
    const stats = await this.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      local: local?.candidateType,
      remote: remote?.candidateType,
      protocol: local?.protocol,
      relayProtocol: local?.relayProtocol,
      rtt: pair.currentRoundTripTime,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  }

  /** Closes the connection (no signalling message: the room's peer_left or bye caused it). */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._iceRestartTimer);
    this.pc.close();
    this._emit('closed', {});
  }
}

/**
 * A room: signalling plus one FloePeer per other peer. Events: `peer` (FloePeer),
 * `peerleft` ({peer, reason}), `state` (signalling state), `error`, `welcome`, `data`
 * ({from, data, broadcast}: signalling-level `data` messages).
 *
 * Options: those of FloeSignal plus `iceTransportPolicy` ('all' | 'relay'), `iceServers`
 * (override the server's list), `localStream` (MediaStream to send).
 *
 * Read-only for the application: `id` (our peer id), `signal` (the FloeSignal), `peers` (Map of
 * peer id to FloePeer).
 */
export class FloeRoom extends EventTarget {
  /** @param {object} o the options of FloeSignal and those above */
  constructor(o) {
    super();
    this.options = o;
    this.signal = new FloeSignal(o);
    this.peers = new Map(); // peer id -> FloePeer
    this.localStream = o.localStream || null;
    this.iceServers = null; // from the last welcome/resumed (fresh TURN credentials)
    this.signal.addEventListener('message', (e) => this._onMessage(e.detail));
    this.signal.addEventListener('state', (e) => this._emit('state', e.detail));
    this.signal.addEventListener('error', (e) => this._emit('error', e.detail));
    this.signal.addEventListener('welcome', (e) => this._onWelcome(e.detail));
    this.signal.addEventListener('resumed', (e) => this._onResumed(e.detail));
    this.signal.addEventListener('sessionlost', () => {
      for (const p of this.peers.values()) p.close();
      this.peers.clear();
    });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _rtcConfig() {
    return {
      iceServers: this.options.iceServers || this.iceServers || [],
      iceTransportPolicy: this.options.iceTransportPolicy || 'all',
    };
  }

  /** Joins; resolves with the welcome message. */
  join() {
    return this.signal.join();
  }

  get id() {
    return this.signal.peer;
  }

  _onWelcome(w) {
    this.iceServers = w.iceServers;
    this._emit('welcome', w);
    for (const info of w.peers) this._addPeer(info);
  }

  _onResumed(r) {
    this.iceServers = r.iceServers; // fresh TURN credentials
    const present = new Set(r.peers.map((p) => p.peer));
    for (const [id, p] of this.peers) if (!present.has(id)) {
      p.close();
      this.peers.delete(id);
    }
    for (const info of r.peers) if (!this.peers.has(info.peer)) this._addPeer(info);
  }

  _addPeer(info) {
    const p = new FloePeer(this, info);
    this.peers.set(info.peer, p);
    this._emit('peer', p);
    return p;
  }

  _onMessage(m) {
    switch (m.type) {
      case 'peer_joined': {
        const old = this.peers.get(m.peer);
        if (old) old.close();
        this._addPeer(m);
        return;
      }
      case 'peer_left': {
        const p = this.peers.get(m.peer);
        if (p) p.close();
        this.peers.delete(m.peer);
        this._emit('peerleft', { peer: m.peer, reason: m.reason });
        return;
      }
      case 'data':
        this._emit('data', { from: m.from, data: m.data, broadcast: m.broadcast });
        return;
      default: {
        const p = this.peers.get(m.from);
        if (p) p.handleSignal(m);
      }
    }
  }

  /** Sends a chat line to every connected peer over the data channels. */
  broadcastChat(text) {
    for (const p of this.peers.values()) p.sendChat(text);
  }

  /** Sends application data through the signalling server (to one peer, or all when `to` is omitted). */
  sendData(data, to) {
    const m = { type: 'data', data };
    if (to) m.to = to;
    this.signal.send(m);
  }

  /** Adds local media to every connection (renegotiates; glare is settled by the roles). */
  addStream(stream) {
    this.localStream = stream;
    for (const p of this.peers.values()) for (const t of stream.getTracks()) p.pc.addTrack(t, stream);
  }

  /** Leaves the room. */
  leave() {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    this.signal.close();
  }
}
