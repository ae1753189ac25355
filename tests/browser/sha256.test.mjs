// web/floe.js's plain-JavaScript SHA-256 (used by pages that are not a secure context, where
// crypto.subtle is missing) against node's OpenSSL, at the padding boundaries and beyond.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { sha256Hex, sha256Js } from '../../web/floe.js';

const hex = (u) => [...u].map((b) => b.toString(16).padStart(2, '0')).join('');

test('sha256Js matches OpenSSL at every padding boundary', () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 65537, 300001]) {
    const b = randomBytes(n);
    assert.equal(hex(sha256Js(new Uint8Array(b))), createHash('sha256').update(b).digest('hex'), `length ${n}`);
  }
});

test('sha256Hex gives the FIPS 180-4 example digests', async () => {
  const enc = new TextEncoder();
  assert.equal(await sha256Hex(enc.encode('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(
    hex(sha256Js(enc.encode('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  );
});
