// Page helpers: open floe's demo page and drive the floe.js module inside it.

/** Polls `fn` in the page until it returns a truthy value (bounded). */
export async function waitInPage(page, fn, arg, timeoutMs = 20000) {
  return page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
}

/**
 * Opens `${url}/` in a new page and joins `room` through floe.js with `options` (FloeRoom
 * options). The page keeps a record in `window.t`: chat lines, files (with SHA-256), data
 * messages, peer states.
 */
export async function joinRoom(chrome, url, room, peer, options = {}) {
  const page = await chrome.newPage();
  page.on('pageerror', (e) => console.error(`[${peer}] pageerror`, e.message));
  await page.goto(`${url}/`);
  await page.evaluate(
    async ({ room, peer, options }) => {
      const { FloeRoom } = await import('/floe.js');
      const t = { chats: [], files: [], data: [], errors: [], states: {}, tracks: 0 };
      window.t = t;
      let localStream = null;
      if (options.media) {
        localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      }
      const r = new FloeRoom({ room, peer, ...options, localStream });
      window.room = r;
      r.addEventListener('error', (e) => t.errors.push(String(e.detail?.message || e.detail)));
      r.addEventListener('data', (e) => t.data.push(e.detail));
      r.addEventListener('peer', (e) => {
        const p = e.detail;
        t.states[p.id] = p.pc.connectionState;
        p.addEventListener('state', (ev) => {
          t.states[p.id] = ev.detail;
        });
        p.addEventListener('chat', (ev) => t.chats.push(ev.detail));
        p.addEventListener('track', () => {
          t.tracks += 1;
        });
        p.addEventListener('file', async (ev) => {
          const buf = await ev.detail.blob.arrayBuffer();
          const digest = await crypto.subtle.digest('SHA-256', buf);
          const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
          t.files.push({ name: ev.detail.name, size: ev.detail.size, sha256: hex });
        });
      });
      await r.join();
    },
    { room, peer, options },
  );
  return page;
}

/** Waits until `page`'s connection with `peer` is connected and its chat channel is open. */
export async function waitConnected(page, peer, timeoutMs = 30000) {
  await waitInPage(
    page,
    (peer) => window.t.states[peer] === 'connected' && window.room.peers.get(peer)?.chat.readyState === 'open',
    peer,
    timeoutMs,
  );
}

/** Sends `size` deterministic bytes as a file from `page` to `peer`; returns its SHA-256. */
export async function sendFile(page, peer, size, name = 'blob.bin') {
  return page.evaluate(
    async ({ peer, size, name }) => {
      const bytes = new Uint8Array(size);
      let x = 0x12345678;
      for (let i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        bytes[i] = x & 0xff;
      }
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
      await window.room.peers.get(peer).sendFile(new File([bytes], name));
      return hex;
    },
    { peer, size, name },
  );
}

/** The selected pair of `page`'s connection with `peer`, and every pair that carried bytes. */
export async function paths(page, peer) {
  return page.evaluate(async (peer) => {
    const pc = window.room.peers.get(peer).pc;
    const stats = await pc.getStats();
    const type = (id) => stats.get(id)?.candidateType;
    let selected = null;
    const used = [];
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const p = stats.get(s.selectedCandidatePairId);
        selected = { local: type(p.localCandidateId), remote: type(p.remoteCandidateId), rtt: p.currentRoundTripTime };
      }
      if (s.type === 'candidate-pair' && (s.bytesSent > 0 || s.bytesReceived > 0)) {
        used.push({ local: type(s.localCandidateId), remote: type(s.remoteCandidateId) });
      }
    });
    return { selected, used };
  }, peer);
}
