#!/usr/bin/env node
// A headless Chromium peer for the NAT lab (issue 5 §2): run inside a lab host's network
// namespace, it opens a page served by floe, joins a room on floe's signalling server with
// web/floe.js (FloeRoom), waits for the WebRTC connection with the other peer, and sends or
// receives one file over floe.js's "file" data channel (negotiated id 1). It prints
// machine-readable lines on stdout, in the same shapes as `floe peer`:
//
//   joined room R as P
//   local candidate: host 192.168.1.10:40000 priority N (as gathered; ` via turn udp|tcp|tls` for relay)
//   remote candidate: srflx 11.0.0.101:40000          (as in getStats, prflx included)
//   selected pair: local host 192.168.1.10:40000 <-> remote srflx 11.0.0.101:40000 via udp rtt 0.4 ms
//                  (a remote prflx address that Chromium keeps to itself is printed as `?:PORT`)
//   floe.js selectedPath: {"local":"host","remote":"srflx",...}
//   sent NAME N bytes sha256 HEX                       (sender, after the receiver's file-ack)
//   received NAME N bytes sha256 HEX [verified]        (receiver; verified: the header's sha256 matched)
//
// and exits 0; on failure an `error: ...` line and exit status 1. Diagnostics go to stderr.
//
//   ip netns exec NS node tests/natlab/browser-peer.mjs --signal http://11.0.0.10:8080 \
//       --room R --peer alice --token JWT --mode send --file PATH [--relay-only] \
//       [--ca-file PEM] [--timeout SECS]
//
// Options:
//   --signal URL     floe's HTTP base (the page and /floe.js are loaded from it)
//   --room R         room id;  --peer P  peer id (must match the token's peer claim if it has one)
//   --token JWT      signalling token (floe serve in production mode, `floe token`)
//   --mode M         send | receive | chat
//   --file PATH      (send) the file to send;  --out PATH  (receive) where to write it
//   --relay-only     iceTransportPolicy 'relay'
//   --ca-file PEM    trust this certificate for turns: (Chromium pins its public key)
//   --timeout SECS   overall bound (default 60)
//
// The file protocol is floe.js's: a JSON text header {kind:"file", name, size, type, sha256?},
// then binary chunks; the receiver answers {kind:"file-ack", name, size, sha256, ok} (floe.js
// does both; docs/how-peers-connect.md §5). The script checks the bytes again in node.
//
// Chromium is launched by tests/browser/lib/chromium.mjs (playwright-core from
// tests/browser/node_modules, `npm ci` there first). Its profile lives under $TMPDIR: the NAT lab
// points TMPDIR at a directory it removes, so nothing is left behind even if this process is killed.

import { createHash, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { launchChromium } from '../browser/lib/chromium.mjs';

const { values: opt } = parseArgs({
  options: {
    signal: { type: 'string' },
    room: { type: 'string' },
    peer: { type: 'string' },
    token: { type: 'string' },
    mode: { type: 'string', default: 'chat' },
    file: { type: 'string' },
    out: { type: 'string' },
    'relay-only': { type: 'boolean', default: false },
    'ca-file': { type: 'string' },
    timeout: { type: 'string', default: '60' },
  },
});

const say = (line) => process.stdout.write(`${line}\n`);
const note = (line) => process.stderr.write(`[browser-peer ${opt.peer || ''}] ${line}\n`);

let chrome = null;
let page = null;
let finished = false;

/** Stops Chromium (by PID, via chromium.mjs) and exits with `code`. */
async function finish(code) {
  if (finished) return;
  finished = true;
  if (code !== 0 && page) {
    try {
      note(`page record: ${JSON.stringify(await page.evaluate(() => window.t), null, 0)}`);
    } catch {
      // the page may be gone
    }
  }
  // Leave the room explicitly, so the other side sees peer_left at once (a closed browser's
  // session would wait for its resume TTL).
  try {
    await page?.evaluate(() => window.room?.leave());
  } catch {
    // the page may be gone
  }
  try {
    await chrome?.close();
  } catch (e) {
    note(`closing chromium: ${e}`);
  }
  process.exit(code);
}

async function fail(message) {
  say(`error: ${message}`);
  if (chrome && !finished) note(`chromium stderr (tail): ${chrome.stderr().slice(-3000)}`);
  await finish(1);
}

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => fail(`stopped by ${sig}`));

const timeoutSecs = Number(opt.timeout);
setTimeout(() => fail(`timed out after ${timeoutSecs} s`), timeoutSecs * 1000).unref();

const hex = (buf) => createHash('sha256').update(buf).digest('hex');

/** Polls `fn` in the page until it returns a truthy value; the overall --timeout bounds it. */
function waitInPage(fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: 0, polling: 100 }).then((h) => h.jsonValue());
}

async function main() {
  for (const k of ['signal', 'room']) if (!opt[k]) throw new Error(`--${k} is required`);
  if (!['send', 'receive', 'chat'].includes(opt.mode)) throw new Error(`unknown --mode ${opt.mode}`);
  if (opt.mode === 'send' && !opt.file) throw new Error('--mode send needs --file');
  const origin = new URL(opt.signal).origin;
  const host = new URL(opt.signal).hostname;
  const extraFlags = [
    // crypto.subtle (floe.js hashes files) needs a secure context; the lab serves plain HTTP.
    `--unsafely-treat-insecure-origin-as-secure=${origin}`,
  ];
  if (opt['ca-file']) {
    const pem = await readFile(opt['ca-file'], 'utf8');
    const spki = createHash('sha256')
      .update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }))
      .digest('base64');
    extraFlags.push(`--ignore-certificate-errors-spki-list=${spki}`);
  }
  // TURN over TCP resolves even IP literals through the host resolver: let the lab's public
  // segment (11.0.0.0/24, where floe is) through; every other name stays unresolvable (nothing
  // leaves the lab).
  const resolverExcludes = [host, '11.0.0.*'];
  chrome = await launchChromium({ extraFlags, resolverExcludes });
  page = await chrome.newPage();
  page.on('pageerror', (e) => note(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // (the favicon's 404 is noise)
    if ((m.type() === 'error' || m.type() === 'warning') && !m.text().startsWith('Failed to load resource')) {
      note(`console.${m.type()}: ${m.text()}`);
    }
  });
  await page.goto(`${origin}/`, { timeout: 20000 });

  const welcome = await page.evaluate(
    async ({ room, peer, token, relayOnly, url }) => {
      const { FloeRoom } = await import('/floe.js');
      const t = {
        local: [],
        iceErrors: [],
        errors: [],
        states: {},
        chats: [],
        headers: [],
        acksIn: [],
        acksOut: [],
        file: null,
        peer: null,
        left: false,
        path: null,
      };
      window.t = t;
      // The path of connection `p`: gathered local candidates, remote ones, the selected pair.
      window.pathInfo = async (p) => {
        const stats = await p.pc.getStats();
        const cand = (id) => {
          const c = stats.get(id);
          return c && {
            type: c.candidateType,
            address: c.address,
            port: c.port,
            protocol: c.protocol,
            relayProtocol: c.relayProtocol,
            tcpType: c.tcpType,
          };
        };
        const remote = [];
        const localStats = [];
        let pair = null;
        stats.forEach((s) => {
          if (s.type === 'remote-candidate') remote.push(cand(s.id));
          if (s.type === 'local-candidate') localStats.push(cand(s.id));
          if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
        });
        const selected = pair && {
          local: cand(pair.localCandidateId),
          remote: cand(pair.remoteCandidateId),
          rtt:
            pair.currentRoundTripTime ??
            (pair.responsesReceived ? pair.totalRoundTripTime / pair.responsesReceived : null),
        };
        return {
          local: [...t.local],
          localStats,
          remote,
          selected,
          floePath: await p.selectedPath(),
          gathering: p.pc.iceGatheringState,
          iceErrors: [...t.iceErrors],
        };
      };
      const snapshot = (p) => {
        if (p.pc.connectionState !== 'connected') return;
        window
          .pathInfo(p)
          .then((info) => {
            if (info.selected) t.path = info;
          })
          .catch(() => {});
      };
      const r = new FloeRoom({ room, peer, token, url, iceTransportPolicy: relayOnly ? 'relay' : 'all' });
      window.room = r;
      r.addEventListener('error', (e) => t.errors.push(String(e.detail?.message || e.detail)));
      r.addEventListener('peerleft', (e) => {
        if (e.detail.peer === t.peer) t.left = true;
      });
      r.addEventListener('peer', (e) => {
        const p = e.detail;
        if (t.peer && t.peer !== p.id) return; // one other peer per run
        t.peer = p.id;
        t.states[p.id] = p.pc.connectionState;
        p.addEventListener('state', (ev) => {
          t.states[p.id] = ev.detail;
        });
        p.addEventListener('closed', () => {
          t.left = true;
        });
        p.pc.addEventListener('icecandidate', (ev) => {
          if (ev.candidate && ev.candidate.candidate) t.local.push({ c: ev.candidate.candidate, relayProtocol: ev.candidate.relayProtocol || null, url: ev.url || null });
        });
        p.pc.addEventListener('icecandidateerror', (ev) => {
          t.iceErrors.push({ code: ev.errorCode, text: ev.errorText, url: ev.url });
        });
        p.addEventListener('chat', (ev) => t.chats.push(ev.detail));
        const timer = setInterval(() => snapshot(p), 250);
        p.addEventListener('closed', () => clearInterval(timer));
        // Right when the last byte arrives (before the ack goes out) and when the ack comes back:
        // the other side may leave right after.
        p.addEventListener('fileprogress', (ev) => {
          if (ev.detail.direction === 'receive' && ev.detail.received >= ev.detail.size) snapshot(p);
        });
        p.addEventListener('file', (ev) => {
          t.file = { name: ev.detail.name, size: ev.detail.size, type: ev.detail.type, blob: ev.detail.blob };
        });
        // The file protocol's text messages (headers, acks), seen next to floe.js's own handler.
        p.files.addEventListener('message', (ev) => {
          if (typeof ev.data !== 'string') return;
          try {
            const m = JSON.parse(ev.data);
            if (m.kind === 'file-ack') {
              snapshot(p);
              t.acksIn.push(m);
            }
            else if (m.kind === 'file') t.headers.push(m);
          } catch {
            // not JSON: not ours
          }
        });
        // Record the acks floe.js sends.
        const send = p.files.send.bind(p.files);
        p.files.send = (data) => {
          if (typeof data === 'string' && data.includes('"file-ack"')) t.acksOut.push(data);
          return send(data);
        };
      });
      const w = await r.join();
      return { peer: w.peer, iceServers: w.iceServers.map((s) => s.urls).flat() };
    },
    { room: opt.room, peer: opt.peer, token: opt.token, relayOnly: opt['relay-only'], url: origin },
  );
  say(`joined room ${opt.room} as ${welcome.peer}`);
  note(`ice servers: ${welcome.iceServers.join(' ')}`);

  const other = await waitInPage(() => {
    const id = window.t.peer;
    const p = id && window.room.peers.get(id);
    return p && window.t.states[id] === 'connected' && p.files.readyState === 'open' && p.chat.readyState === 'open'
      ? id
      : null;
  });
  say(`connected to ${other}`);

  if (opt.mode === 'send') await sendFile(other);
  else if (opt.mode === 'receive') await receiveFile(other);
  else await chat(other);
  await finish(0);
}

/** Prints the gathered local candidates, the remote ones and the selected pair. */
async function printPath(other) {
  // A fresh look while the connection lives; after the other side left, the last snapshot
  // (taken when the file or its ack arrived, and every 250 ms while connected).
  const info = await page.evaluate(async (other) => {
    const p = window.room.peers.get(other);
    if (p && p.pc.connectionState !== 'closed') {
      try {
        return await window.pathInfo(p);
      } catch {
        // closed meanwhile
      }
    }
    return null;
  }, other).then((fresh) => fresh || waitInPage(() => window.t.path));
  note(`ice gathering ${info.gathering}; candidate errors: ${JSON.stringify(info.iceErrors)}`);
  for (const { c, relayProtocol, url } of info.local) {
    // candidate:F C PROTO PRIO IP PORT typ TYPE [raddr ..] [tcptype ..]
    const f = c.split(' ');
    const type = f[f.indexOf('typ') + 1];
    const tcp = f[2].toLowerCase() === 'tcp' ? ` ice-tcp ${f[f.indexOf('tcptype') + 1]}` : '';
    // The TURN transport: from the candidate, the URL that produced it, or its stats entry.
    const fromUrl = url && (url.startsWith('turns:') ? 'tls' : /transport=tcp/.test(url) ? 'tcp' : 'udp');
    const fromStats = info.localStats.find((x) => x.address === f[4] && String(x.port) === f[5])?.relayProtocol;
    const turn = type === 'relay' ? ` via turn ${relayProtocol || fromUrl || fromStats || '?'}` : '';
    say(`local candidate: ${type} ${f[4]}:${f[5]}${turn}${tcp} priority ${f[3]}`);
  }
  // Chromium does not reveal a peer-reflexive remote candidate's address in getStats: `?`.
  const addr = (c) => `${c.address || '?'}:${c.port}`;
  for (const c of info.remote) {
    const tcp = c.protocol === 'tcp' ? ` ice-tcp ${c.tcpType || ''}`.trimEnd() : '';
    say(`remote candidate: ${c.type} ${addr(c)}${tcp}`);
  }
  const s = info.selected;
  if (!s) throw new Error('no selected candidate pair in getStats');
  const via = s.local.type === 'relay' ? `turn-${s.local.relayProtocol}` : s.local.protocol;
  const rtt = s.rtt == null ? 'n/a' : (s.rtt * 1000).toFixed(1);
  say(
    `selected pair: local ${s.local.type} ${addr(s.local)} <-> ` +
      `remote ${s.remote.type} ${addr(s.remote)} via ${via} rtt ${rtt} ms`,
  );
  say(`floe.js selectedPath: ${JSON.stringify(info.floePath)}`);
}

async function sendFile(other) {
  const bytes = await readFile(opt.file);
  const name = basename(opt.file);
  const sha = hex(bytes);
  await page.evaluate(
    async ({ other, b64, name }) => {
      const bin = atob(b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      await window.room.peers.get(other).sendFile(new File([bytes], name, { type: 'application/octet-stream' }));
    },
    { other, b64: bytes.toString('base64'), name },
  );
  const ack = await waitInPage((name) => window.t.acksIn.find((a) => a.name === name) || null, name);
  await printPath(other);
  if (!ack.ok || ack.size !== bytes.length || (ack.sha256 && ack.sha256 !== sha)) {
    throw new Error(`the receiver refused the file: ${JSON.stringify(ack)} (sent ${bytes.length} bytes sha256 ${sha})`);
  }
  say(`sent ${name} ${bytes.length} bytes sha256 ${sha}`);
}

async function receiveFile(other) {
  await waitInPage(() => window.t.file !== null || window.t.errors.length > 0);
  const errors = await page.evaluate(() => window.t.errors);
  if (errors.length > 0) throw new Error(`floe.js: ${errors.join('; ')}`);
  const got = await page.evaluate(async () => {
    const f = window.t.file;
    const buf = new Uint8Array(await f.blob.arrayBuffer());
    let bin = '';
    for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode(...buf.subarray(i, i + 0x8000));
    const header = window.t.headers.filter((h) => h.name === f.name).pop() || null;
    return { name: f.name, size: f.size, b64: btoa(bin), header };
  });
  const bytes = Buffer.from(got.b64, 'base64');
  const sha = hex(bytes);
  const claimed = got.header?.sha256 || null;
  const ok = bytes.length === got.size && (!claimed || claimed === sha);
  if (opt.out) await writeFile(opt.out, bytes);
  // floe.js answers every file with a file-ack before it emits `file`.
  const acks = await page.evaluate(() => window.t.acksOut);
  if (acks.length === 0) throw new Error('floe.js sent no file-ack');
  await printPath(other);
  if (!ok) {
    throw new Error(`received ${got.name} ${bytes.length} of ${got.size} bytes sha256 ${sha}, header said ${claimed}`);
  }
  say(`received ${got.name} ${bytes.length} bytes sha256 ${sha}${claimed ? ' verified' : ''}`);
  // Stay until the sender has the ack and leaves (bounded by --timeout).
  await waitInPage(() => window.t.left);
}

async function chat(other) {
  await page.evaluate((other) => window.room.peers.get(other).sendChat(`hello from ${window.room.id}`), other);
  const line = await waitInPage(() => window.t.chats[0] || null);
  say(`chat from ${line.from}: ${line.text}`);
  await printPath(other);
  // Let our own line leave before closing.
  await waitInPage((other) => window.room.peers.get(other)?.chat.bufferedAmount === 0, other);
}

main().catch((e) => fail(e?.message || String(e)));
