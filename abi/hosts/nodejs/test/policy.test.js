// The host's http_send policy (abi/ABI.md, http_send): what it refuses is answered
// {"error", "policy": true} and never sent; real transport failures are a plain {"error"}. Checked on
// httpSender directly (no plugin), then end to end through the plugin's `token`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHost, httpSender } from '../host.js';
import { WASM } from '../support.js';

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

/** serve starts a loopback server; handler(req, res) decides what each request gets. */
async function serve(handler) {
  let n = 0;
  const server = createServer((req, res) => {
    n++;
    req.resume();
    req.on('end', () => handler(req, res));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/token`,
    count: () => n,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

test('transport failures and oversized bodies are not policy refusals', async (t) => {
  const send = httpSender({ allowLoopback: true });
  const srv = await serve((req, res) => {
    if (req.headers['x-case'] === 'slow') return; // never answers
    if (req.headers['x-case'] === 'reset') return req.socket.destroy();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(Buffer.alloc((1 << 20) + 100, 'a'));
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
  } finally {
    await srv.close();
  }
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
  const host = await createHost({ wasm: WASM, logger: { warn: (msg, attrs) => refusals.push(attrs) } }); // no allowLoopback
  try {
    const res = await host.token({ provider: 'nikohealth', client_id: 'niko-client', client_secret: 'niko-secret-1', token_url: srv.url });
    assert.ok(res.error, JSON.stringify(res));
    assert.match(res.error.message, /refused by host policy: loopback host 127\.0\.0\.1 is not allowed/);
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
