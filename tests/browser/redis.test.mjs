// Multi-node signalling with headless Chromium: two `floe signal` nodes share rooms through a
// real redis-server (started here on a free loopback port, no persistence, stopped by PID). A page
// served by node A and a page served by node B join one room through floe.js, connect, chat and
// transfer a file. redis-server is required (./test.sh installs it): without it this test fails.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { launchChromium } from './lib/chromium.mjs';
import { freePort, startFloeSignal } from './lib/servers.mjs';
import { joinRoom, sendFile, waitConnected, waitInPage } from './lib/pages.mjs';

/** Resolves true when something answers `+PONG` on 127.0.0.1:port. */
function ping(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 500);
    s.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => {
      clearTimeout(timer);
      s.destroy();
      resolve(String(d).startsWith('+PONG'));
    });
  });
}

async function startRedis() {
  const which = spawnSync('sh', ['-c', 'command -v redis-server']);
  assert.equal(which.status, 0, 'redis-server is not installed: run ./test.sh (it installs the redis-server package)');
  const dir = await mkdtemp(join(tmpdir(), 'floe-redis-'));
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const exited = new Promise((r) => proc.once('exit', r));
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port}`);
    await delay(50);
  }
  return {
    url: `redis://127.0.0.1:${port}/0`,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        process.kill(proc.pid, 'SIGKILL');
        await Promise.race([exited, delay(3000)]);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe('floe signalling on two nodes sharing Redis, with Chromium', { timeout: 180_000 }, () => {
  let redis;
  let nodeA;
  let nodeB;
  let chrome;

  before(async () => {
    redis = await startRedis();
    nodeA = await startFloeSignal(['--redis-url', redis.url, '--redis-node-ttl', '2']);
    nodeB = await startFloeSignal(['--redis-url', redis.url, '--redis-node-ttl', '2']);
    chrome = await launchChromium();
  });

  after(async () => {
    // Stop everything even if one step fails, so no process outlives the test.
    try {
      await chrome?.close();
    } finally {
      try {
        await nodeA?.stop();
        await nodeB?.stop();
      } finally {
        await redis?.stop();
      }
    }
  });

  test('a page on node A and a page on node B connect, chat and transfer a file', { timeout: 90_000 }, async () => {
    const a = await joinRoom(chrome, nodeA.url, 'two-nodes', 'alice');
    const b = await joinRoom(chrome, nodeB.url, 'two-nodes', 'bob');
    await waitConnected(a, 'bob');
    await waitConnected(b, 'alice');
    // Roles across nodes are the same as on one node: bob joined later, so bob offered.
    assert.deepEqual(await b.evaluate(() => [room.peers.get('alice').offerer, room.peers.get('alice').polite]), [true, false]);
    assert.deepEqual(await a.evaluate(() => [room.peers.get('bob').offerer, room.peers.get('bob').polite]), [false, true]);
    await a.evaluate(() => room.broadcastChat('hello from node A'));
    await b.evaluate(() => room.broadcastChat('hello from node B'));
    await waitInPage(b, () => window.t.chats.some((c) => c.text === 'hello from node A' && c.from === 'alice'));
    await waitInPage(a, () => window.t.chats.some((c) => c.text === 'hello from node B' && c.from === 'bob'));
    const sha = await sendFile(b, 'alice', 256 * 1024, 'across-nodes.bin');
    await waitInPage(a, () => window.t.files.length === 1, undefined, 40_000);
    assert.deepEqual(await a.evaluate(() => window.t.files[0]), { name: 'across-nodes.bin', size: 256 * 1024, sha256: sha });
    assert.deepEqual(await a.evaluate(() => window.t.errors), []);
    assert.deepEqual(await b.evaluate(() => window.t.errors), []);
    // Bob (node B) leaving is seen by alice (node A).
    await b.evaluate(() => room.leave());
    await waitInPage(a, () => !window.room.peers.has('bob'), undefined, 10_000);
    await b.close();
    await a.close();
  });
});
