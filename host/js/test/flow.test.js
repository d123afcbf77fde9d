// The whole token flow in this host: a token from each of the four providers' Go fakes
// (`tokenwasm fakes`), then from the host's cache, counted at the fakes; then the host's own duties
// against small loopback servers: the 429 gate, fleet single-flight over a shared cache, the URL
// policy, the timeout, the body cap and redirects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, MemoryCache } from '../src/index.js';
import { WASM, startFakes, serve } from './support.js';

let fakes; // {provider: {token_url, api_url, stats_url, config}}
let stopFakes;
let host; // allowLoopback: the fakes are plain http on 127.0.0.1

before(async () => {
  ({ fakes, stop: stopFakes } = await startFakes());
  host = await createClient({ wasm: WASM, allowLoopback: true });
});
after(async () => {
  await host?.close();
  await stopFakes?.();
});

/** requests returns how many token requests a fake has received. */
const requests = async (provider) => (await (await fetch(fakes[provider].stats_url)).json()).requests;

/** credentials builds a client_credentials TokenRequest from a fake's config. */
function credentials(provider, extra = {}) {
  const { config, token_url: tokenURL } = fakes[provider];
  return { provider, client_id: config.client_id, client_secret: config.client_secret, token_url: tokenURL, ...extra };
}

test('a token from each provider, then from the cache: one request per credential set', async (t) => {
  const desc = fakes.candescent.config;
  const cases = [
    ['candid', credentials('candid')],
    ['pattern', credentials('pattern')],
    ['candescent', credentials('candescent', { institution_id: desc.institution_id })],
    ['candescent', credentials('candescent', { grant_type: 'password', institution_id: desc.institution_id, username: desc.username, password: desc.password })],
    ['nikohealth', credentials('nikohealth')],
  ];
  for (const [provider, req] of cases) {
    await t.test(`${provider} ${req.grant_type ?? 'client_credentials'}`, async () => {
      const start = await requests(provider);
      const first = await host.token(req);
      assert.ok(first.token, `first call: ${JSON.stringify(first)}`);
      assert.equal(first.cached, false);
      assert.equal(first.token.token_type, 'Bearer');
      assert.ok(first.token.expires_in > 60, `expires_in ${first.token.expires_in}`);
      const now = Date.now();
      assert.ok(Math.abs(first.token.issued_at_ms - now) < 5000, 'issued_at_ms is now');
      assert.equal(first.token.expires_at_ms, first.token.issued_at_ms + first.token.expires_in * 1000);
      if (req.grant_type === 'password') assert.ok(first.token.refresh_token, 'the password grant returns a refresh token');

      const second = await host.token(req);
      assert.equal(second.cached, true, `second call: ${JSON.stringify(second)}`);
      assert.equal(second.token.access_token, first.token.access_token);
      assert.equal(second.token.refresh_token, undefined, 'a cached token never carries refresh_token');
      assert.equal((await requests(provider)) - start, 1, 'exactly one request reached the fake');

      // The token works at the fake's API.
      const api = await fetch(fakes[provider].api_url, { headers: { Authorization: `Bearer ${first.token.access_token}` } });
      assert.equal(api.status, 200);
    });
  }
});

test('units are normalized: Pattern answers milliseconds, Candid is capped by its JWT exp', async () => {
  const pattern = await host.token(credentials('pattern'));
  assert.equal(pattern.token.expires_in, 3600, JSON.stringify(pattern));
  const candid = (await host.token(credentials('candid'))).token.expires_in;
  // The JWT's exp has whole seconds: the fake may round its 5 hours up by one.
  assert.ok(candid <= 5 * 3600 + 1 && candid > 5 * 3600 - 120, `candid expires_in ${candid}`);
});

test('invalidate drops the cached token only if it is the one named', async () => {
  const req = credentials('nikohealth', { scope: 'external' });
  const start = await requests('nikohealth');
  const first = await host.token(req);
  assert.ok(first.token, JSON.stringify(first));
  assert.deepEqual(await host.invalidate({ ...req, access_token: 'some-older-token' }), { retry: true });
  assert.equal((await host.token(req)).cached, true, 'another token named: the cached one stays');
  assert.deepEqual(await host.invalidate({ ...req, access_token: first.token.access_token }), { retry: true });
  const again = await host.token(req);
  assert.equal(again.cached, false, 'dropped: fetched again');
  assert.notEqual(again.token.access_token, first.token.access_token);
  assert.equal((await requests('nikohealth')) - start, 2);
  // The 401 window: within 30 s of a drop, a 401 to the new token is the API's answer.
  assert.deepEqual(await host.invalidate({ ...req, access_token: again.token.access_token }), { retry: false });
  const kept = await host.token(req);
  assert.equal(kept.token.access_token, again.token.access_token, 'nothing dropped within the window');
  assert.equal((await requests('nikohealth')) - start, 2);
});

test('a token URL outside the policy is refused and reaches nothing', async () => {
  const strict = await createClient({ wasm: WASM }); // no allowLoopback
  try {
    const start = await requests('nikohealth');
    const res = await strict.token(credentials('nikohealth'));
    // The kind is `policy` from the plugin that knows it, `transport` before (test/policy.test.js).
    assert.match(res.error?.message ?? '', /refused by host policy/, JSON.stringify(res));
    const plain = await strict.token(credentials('nikohealth', { token_url: 'http://acme.nikohealth.com/token' }));
    assert.match(plain.error?.message ?? '', /https only/, JSON.stringify(plain));
    assert.equal(await requests('nikohealth'), start);
  } finally {
    await strict.close();
  }
  // allowedHosts adds to the providers' hosts (Pattern's are per customer, so the host's allow-list
  // decides for it); a fetch that must never be called stands in for the network, so a policy gap
  // cannot reach a real host from this test.
  const listed = await createClient({ wasm: WASM, allowedHosts: ['idp.example.com'], fetch: async () => assert.fail('fetch called') });
  try {
    const res = await listed.token({ provider: 'pattern', client_id: 'c', client_secret: 'secret-1', token_url: 'https://idp.example.net/token' });
    assert.match(res.error?.message ?? '', /idp\.example\.net is not an allowed token host/, JSON.stringify(res));
    const port = await listed.token({ provider: 'pattern', client_id: 'c', client_secret: 'secret-1', token_url: 'https://idp.example.com:6379/token' });
    assert.match(port.error?.message ?? '', /idp\.example\.com:6379 is not an allowed token host/, JSON.stringify(port));
  } finally {
    await listed.close();
  }
});


const niko = (url, extra = {}) => ({ provider: 'nikohealth', client_id: 'niko-client', client_secret: 'niko-secret-1', token_url: url, ...extra });
const issue = (res, token) => {
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: 3600 }));
};

test('a 429 closes a gate in the cache: later calls, forced or not, send nothing until Retry-After', async () => {
  const srv = await serve((req, res) => {
    res.writeHead(429, { 'Retry-After': '30', 'Content-Type': 'application/json' });
    res.end('{"message":"Too Many Requests"}');
  });
  try {
    const first = await host.token(niko(srv.url));
    assert.equal(first.error?.kind, 'rate_limited', JSON.stringify(first));
    assert.equal(first.error.status, 429);
    assert.equal(first.error.retry_after_ms, 30000);
    for (const extra of [{}, { force: true }]) {
      const gated = await host.token(niko(srv.url, extra));
      assert.equal(gated.error?.kind, 'rate_limited', JSON.stringify(gated));
      assert.ok(gated.error.retry_after_ms > 25000 && gated.error.retry_after_ms <= 30000, `retry_after_ms ${gated.error.retry_after_ms}`);
      assert.equal(gated.error.status, undefined, 'answered by the gate: nothing sent');
    }
    assert.equal(srv.count(), 1);
  } finally {
    await srv.close();
  }
});

test('fleet_lock over a shared cache: two hosts on a cold cache make one request', async () => {
  const srv = await serve((req, res, n) => setTimeout(() => issue(res, `fleet-token-${n}`), 300));
  const cache = new MemoryCache();
  const [a, b] = await Promise.all([0, 1].map(() => createClient({ wasm: WASM, allowLoopback: true, cache })));
  try {
    const req = niko(srv.url, { fleet_lock: true });
    const [ra, rb] = await Promise.all([a.token(req), b.token(req)]);
    assert.equal(srv.count(), 1);
    assert.equal(ra.token?.access_token, 'fleet-token-1', JSON.stringify(ra));
    assert.equal(rb.token?.access_token, 'fleet-token-1', JSON.stringify(rb));
    assert.deepEqual([ra.cached, rb.cached].sort(), [false, true]);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await srv.close();
  }
});

test('http_send: a timeout, a body over 1 MiB, a redirect not followed, a refused connection', async () => {
  const big = Buffer.alloc(2 << 20, 'a');
  let followed = 0;
  const srv = await serve((req, res) => {
    const kase = req.headers['x-case']; // TokenRequest.headers reach the server as they are
    if (req.url === '/elsewhere') {
      followed++;
      return issue(res, 'should-not-be-fetched');
    }
    if (kase === 'slow') return; // never answers
    if (kase === 'big') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(big);
    }
    res.writeHead(302, { Location: `http://${req.headers.host}/elsewhere` });
    res.end();
  });
  try {
    const started = Date.now();
    const slow = await host.token(niko(srv.url, { timeout_ms: 300, headers: { 'X-Case': 'slow' } }));
    assert.equal(slow.error?.kind, 'transport', JSON.stringify(slow));
    assert.match(slow.error.message, /timeout after 300 ms/);
    assert.ok(Date.now() - started < 3000, 'the timeout was honoured');

    const large = await host.token(niko(srv.url, { headers: { 'X-Case': 'big' } }));
    assert.equal(large.error?.kind, 'malformed_response', JSON.stringify(large));
    assert.match(large.error.message, /exceeds 1 MiB/);

    const moved = await host.token(niko(srv.url, { headers: { 'X-Case': 'redirect' } }));
    assert.equal(moved.error?.status, 302, JSON.stringify(moved));
    assert.equal(followed, 0);
  } finally {
    await srv.close();
  }
  // A port nobody listens on (a fresh server's, closed before any connection was made to it).
  const gone = await serve(() => {});
  await gone.close();
  const refused = await host.token(niko(gone.url));
  assert.equal(refused.error?.kind, 'transport', JSON.stringify(refused));
  assert.match(refused.error.message, /ECONNREFUSED/);
});

test('invalidate says when the cache could not drop the token (error.not_dropped), as Go returns a NotDroppedError', async () => {
  // A cache whose deletes fail, as a shared cache that cannot be reached: the token stays there and
  // would be served again, so the caller must know.
  class DropFails extends MemoryCache {
    delete() {
      throw new Error('cache unreachable');
    }
  }
  const client = await createClient({ wasm: WASM, allowLoopback: true, cache: new DropFails() });
  try {
    const req = credentials('nikohealth', { scope: 'external' });
    const first = await client.token(req);
    assert.ok(first.token, JSON.stringify(first));
    const res = await client.invalidate({ ...req, access_token: first.token.access_token });
    assert.equal(res.error?.not_dropped, true, JSON.stringify(res));
    assert.equal(res.error.kind, 'transport');
    assert.ok(!JSON.stringify(res).includes(first.token.access_token) && !JSON.stringify(res).includes(req.client_secret));
    const plain = await client.invalidate(req); // without access_token: the same
    assert.equal(plain.error?.not_dropped, true, JSON.stringify(plain));
  } finally {
    await client.close();
  }
});
