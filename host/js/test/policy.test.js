// The host's http_send policy (abi/ABI.md, http_send): what it refuses is answered
// {"error", "policy": true} and never sent; real transport failures are a plain {"error"}. Checked on
// httpSender directly (no plugin), then end to end through the plugin's `token`.
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient, httpSender, DEFAULT_ALLOWED_HOSTS } from '../src/index.js';
import { MAX_RESPONSE_BYTES } from '../src/http.js';
import { WASM, ROOT, serve } from './support.js';

/** countingFetch is a fetch that answers a token and counts its calls: a refusal must not call it. */
function countingFetch() {
  const f = async () => {
    f.calls++;
    return new Response('{"access_token":"t","expires_in":3600}', { status: 200, headers: { 'Content-Type': 'application/json' } });
  };
  f.calls = 0;
  return f;
}

const post = (url, extra = {}) => ({ method: 'POST', url, headers: {}, body: 'grant_type=client_credentials', timeout_ms: 2000, ...extra });

test('every policy refusal answers policy: true and sends nothing', async (t) => {
  const cases = [
    ['not a URL', {}, 'not a url at all'],
    ['credentials in the URL', {}, 'https://user:pw@api.candescent.com/token'],
    ['loopback without allowLoopback (http)', {}, 'http://127.0.0.1:9/token'],
    ['loopback without allowLoopback (https)', {}, 'https://localhost/token'],
    ['IPv6 loopback without allowLoopback', {}, 'https://[::1]:8443/token'],
    ['plain http to a listed host', { allowedHosts: ['idp.example.com'] }, 'http://idp.example.com/token'],
    ['another scheme', { allowLoopback: true }, 'ftp://127.0.0.1/token'],
    ['a host outside allowedHosts', { allowedHosts: ['idp.example.com'] }, 'https://evil.example.net/token'],
  ];
  for (const [name, opts, url] of cases) {
    await t.test(name, async () => {
      const fetch = countingFetch();
      const got = await httpSender({ ...opts, fetch })(post(url));
      assert.equal(got.policy, true, JSON.stringify(got));
      assert.match(got.error, /^refused by host policy: /);
      assert.equal(Object.keys(got).sort().join(','), 'error,policy', 'nothing but the error and the flag');
      assert.equal(fetch.calls, 0, 'nothing was sent');
    });
  }
});

test('DEFAULT_ALLOWED_HOSTS is the Go host\'s DefaultAllowedHosts()', () => {
  const src = readFileSync(join(ROOT, 'host/httpsend.go'), 'utf8');
  const m = /var defaultAllowedHosts = \[\]string\{([^}]*)\}/.exec(src);
  assert.ok(m, 'defaultAllowedHosts in host/httpsend.go');
  assert.deepEqual([...DEFAULT_ALLOWED_HOSTS], JSON.parse(`[${m[1]}]`));
  assert.ok(Object.isFrozen(DEFAULT_ALLOWED_HOSTS));
});

/**
 * verdicts runs each URL through an httpSender with opts and a counting fetch, and returns for each
 * 'sent' (fetch called once, a response answered) or 'policy' (refused, nothing sent).
 */
async function verdicts(opts, urls) {
  const out = {};
  for (const url of urls) {
    const fetch = countingFetch();
    const got = await httpSender({ ...opts, fetch })(post(url));
    if (got.policy === true && fetch.calls === 0) out[url] = 'policy';
    else if (got.status === 200 && fetch.calls === 1) out[url] = 'sent';
    else out[url] = `unexpected: ${JSON.stringify(got)} after ${fetch.calls} fetches`;
  }
  return out;
}

test('the default policy: https to the providers\' hosts on port 443 only', async () => {
  const want = {
    'https://api.joincandidhealth.com/api/auth/v2/token': 'sent',
    'https://api.candescent.com/digitalbanking/oauth2/v1/token': 'sent',
    'https://API.Candescent.com:443/token': 'sent', // case and the explicit default port
    'https://acme.nikohealth.com/api/identity/connect/token': 'sent',
    'https://a.b.nikohealth.com/token': 'sent',
    'https://idp.example.com/token': 'policy', // a caller's token_url to any other host
    'https://nikohealth.com/token': 'policy', // "*.domain" matches subdomains only
    'https://evilnikohealth.com/token': 'policy',
    'https://api.candescent.com.evil.example/token': 'policy',
    'https://api.candescent.com:22/token': 'policy',
    'https://api.candescent.com:6379/token': 'policy',
    'https://acme.nikohealth.com:8443/token': 'policy',
    'http://api.candescent.com/token': 'policy',
    'http://api.candescent.com:443/token': 'policy',
    'http://127.0.0.1:6379/': 'policy',
    'https://localhost/token': 'policy',
  };
  assert.deepEqual(await verdicts({}, Object.keys(want)), want);
});

test('allowedHosts adds to the defaults; "host:port" allows that port only', async () => {
  const want = {
    'https://api.candescent.com/token': 'sent', // the defaults stay
    'https://pattern.example.com/token': 'sent',
    'https://pattern.example.com:8443/token': 'policy',
    'https://pattern.example.com:22/token': 'policy',
    'https://idp.example.org:8443/token': 'sent',
    'https://idp.example.org/token': 'policy', // its entry names 8443: not 443
    'https://idp.example.org:8444/token': 'policy',
    'https://x.tenants.example:9443/token': 'sent',
    'https://tenants.example:9443/token': 'policy',
    'https://x.tenants.example/token': 'policy',
    'https://other.example.com/token': 'policy',
  };
  assert.deepEqual(await verdicts({ allowedHosts: ['pattern.example.com', 'idp.example.org:8443', '*.tenants.example:9443'] }, Object.keys(want)), want);
});

test('loopback with allowLoopback: any port, http or https; nothing else changes', async () => {
  const want = {
    'http://127.0.0.1:6379/': 'sent',
    'https://127.0.0.1:22/': 'sent',
    'http://localhost:8080/token': 'sent',
    'http://[::1]:9/token': 'sent',
    'https://idp.example.com/token': 'policy',
    'http://idp.example.com/token': 'policy',
    'https://api.candescent.com:22/token': 'policy',
  };
  assert.deepEqual(await verdicts({ allowLoopback: true }, Object.keys(want)), want);
});

test('a malformed allowedHosts entry is refused when the host is made', async () => {
  for (const bad of ['', 'https://idp.example.com', 'idp.example.com/token', 'user@idp.example.com', 'idp.example.com:99999', '*', '*.', 7]) {
    assert.throws(() => httpSender({ allowedHosts: [bad] }), TypeError, JSON.stringify(bad));
    await assert.rejects(createClient({ wasm: WASM, allowedHosts: [bad] }), TypeError, JSON.stringify(bad));
  }
  assert.throws(() => httpSender({ allowedHosts: 'idp.example.com' }), TypeError, 'a string, not an array');
});

test('token without allowedHosts: a caller\'s token_url to another https host is refused, nothing sent', async () => {
  const fetch = countingFetch();
  const host = await createClient({ wasm: WASM, fetch });
  try {
    for (const url of ['https://attacker.example/token', 'https://api.candescent.com:6379/token']) {
      const res = await host.token({ provider: 'custom', client_id: 'c', client_secret: 'custom-secret-1', token_url: url, profile: { client_auth: 'basic' } });
      assert.match(res.error?.message ?? '', /refused by host policy: .* is not an allowed token host/, JSON.stringify(res));
    }
    assert.equal(fetch.calls, 0, 'the credentials went nowhere');
    const ok = await host.token({ provider: 'candid', client_id: 'c', client_secret: 'candid-secret-1' });
    assert.equal(ok.token?.access_token, 't', JSON.stringify(ok));
    assert.equal(fetch.calls, 1, 'the provider\'s own host is allowed');
  } finally {
    await host.close();
  }
});


test('transport failures and oversized bodies are not policy refusals', async (t) => {
  const send = httpSender({ allowLoopback: true });
  const srv = await serve((req, res) => {
    if (req.headers['x-case'] === 'slow') return; // never answers
    if (req.headers['x-case'] === 'reset') return req.socket.destroy();
    if (req.headers['x-case'] === 'gzip') {
      // 2 MiB inflated, a few KB on the wire: its Content-Length is no bound on what fetch reads.
      const body = gzipSync(Buffer.alloc(2 << 20, 'a'));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip', 'Content-Length': body.length });
      return res.end(body);
    }
    if (req.headers['x-case'] === 'chunked') {
      res.writeHead(200, { 'Content-Type': 'application/json' }); // no Content-Length
      for (let i = 0; i < 5; i++) res.write(Buffer.alloc(300 << 10, 'c'));
      return res.end();
    }
    const n = req.headers['x-case'] === 'at-cap' ? MAX_RESPONSE_BYTES : (1 << 20) + 100;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': n });
    res.end(Buffer.alloc(n, 'a'));
  });
  try {
    await t.test('timeout', async () => {
      const got = await send(post(srv.url, { headers: { 'X-Case': 'slow' }, timeout_ms: 200 }));
      assert.match(got.error ?? '', /timeout after 200 ms/, JSON.stringify(got));
      assert.equal(got.policy, undefined);
    });
    await t.test('connection reset', async () => {
      const got = await send(post(srv.url, { headers: { 'X-Case': 'reset' } }));
      assert.ok(got.error, JSON.stringify(got));
      assert.equal(got.policy, undefined);
    });
    await t.test('a body over 1 MiB is a response, cut at 1 MiB + 1', async () => {
      const got = await send(post(srv.url));
      assert.equal(got.status, 200);
      assert.equal(got.body.length, (1 << 20) + 1);
      assert.equal(got.policy, undefined);
      assert.equal(got.error, undefined);
    });
    // A body of a stated length within the cap is read whole; compressed or of no stated length,
    // chunk by chunk: either way never past the cap.
    for (const [name, len] of [['at-cap', MAX_RESPONSE_BYTES], ['gzip', MAX_RESPONSE_BYTES], ['chunked', MAX_RESPONSE_BYTES]]) {
      await t.test(`a body ${name}: ${len} bytes`, async () => {
        const got = await send(post(srv.url, { headers: { 'X-Case': name } }));
        assert.equal(got.status, 200, JSON.stringify(got).slice(0, 200));
        assert.equal(got.body.length, len);
      });
    }
  } finally {
    await srv.close();
  }
  await t.test('a Content-Length bounds nothing: a body past the cap under a small one is cut at the cap', async () => {
    // As Deno, Bun and workerd answer "Content-Length: 10" with a chunked body of any size, and as a
    // caller's fetch may: the cap is counted on the bytes read.
    const lying = httpSender({ fetch: async () => new Response('a'.repeat(3 << 20), { headers: { 'content-length': '10' } }) });
    const got = await lying({ url: 'https://api.candescent.com/token', method: 'POST' });
    assert.equal(got.status, 200);
    assert.equal(got.body.length, MAX_RESPONSE_BYTES);
  });
  await t.test('response headers over 64 KiB are a transport error, at the cap a response', async () => {
    // A caller's fetch may lift undici's own header limit: the host caps headers itself.
    const withHeaders = (n) => httpSender({ fetch: async () => new Response('{}', { headers: { 'x-pad': 'a'.repeat(n) } }) });
    const url = 'https://api.candescent.com/token';
    const over = await withHeaders((64 << 10) - 'x-pad'.length + 1)({ url, method: 'POST' });
    assert.match(over.error ?? '', /headers exceed 65536 bytes/, JSON.stringify(over).slice(0, 200));
    assert.equal(over.policy, undefined);
    const at = await withHeaders((64 << 10) - 'x-pad'.length - 'content-type'.length - 'text/plain;charset=UTF-8'.length)({ url, method: 'POST' });
    assert.equal(at.status, 200, JSON.stringify(at).slice(0, 200));
  });
  await t.test('connection refused', async () => {
    const gone = await serve(() => {});
    await gone.close();
    const got = await send(post(gone.url));
    assert.match(got.error ?? '', /ECONNREFUSED/, JSON.stringify(got));
    assert.equal(got.policy, undefined);
  });
});

test('a logger that throws does not change the answer', async () => {
  const boom = () => {
    throw new Error('logger down');
  };
  const got = await httpSender({ logger: { warn: boom, debug: boom } })(post('http://127.0.0.1:9/token'));
  assert.equal(got.policy, true, JSON.stringify(got));
});

test('token: a refused URL is one http_send, nothing reaches it, and the error is policy, not retryable', async (t) => {
  const srv = await serve((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"access_token":"must-not-be-fetched","expires_in":3600}');
  });
  const refusals = [];
  const host = await createClient({ wasm: WASM, logger: { warn: (msg, attrs) => refusals.push(attrs) } }); // no allowLoopback
  try {
    const res = await host.token({ provider: 'nikohealth', client_id: 'niko-client', client_secret: 'niko-secret-1', token_url: srv.url });
    assert.ok(res.error, JSON.stringify(res));
    assert.match(res.error.message, /refused by host policy: loopback host 127\.0\.0\.1 is not allowed; allowLoopback: true allows it/);
    assert.equal(res.error.status, undefined, 'nothing was received');
    assert.equal(refusals.length, 1, `http_send calls: ${JSON.stringify(refusals)}`);
    assert.equal(srv.count(), 0, 'nothing reached the server');
    if (res.error.kind === 'transport') {
      // The plugin maps {"policy": true} to the kind `policy` from the release that knows it; the
      // wasm under test predates it. The host's side is asserted above and in the tests before.
      t.skip(`the plugin under test (${WASM}) does not know the error kind "policy" yet: it answers transport, retryable ${res.error.retryable}`);
      return;
    }
    assert.equal(res.error.kind, 'policy', JSON.stringify(res));
    assert.equal(res.error.retryable, false);
  } finally {
    await host.close();
    await srv.close();
  }
});
