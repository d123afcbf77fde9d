// The edge worker in real workerd (this folder's config.capnp, with loopback bindings), against the
// Go fake providers and a fake upstream on loopback: the token reaches the upstream and works at the
// provider's API, three requests cost one token request, a 401 is retried once with a fresh token,
// the caller's own Authorization never goes upstream, and a token failure is a typed 502/503.
//   node --test examples/edge-worker/  (host/js/run-tests.sh runs it after npm ci in host/js)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakes } from '../../host/js/test/support.js';
import { upstreamURL } from './upstream.js';

const here = dirname(fileURLToPath(import.meta.url));
const WORKERD = join(here, '../../host/js/node_modules/.bin/workerd');
let fakes, stopFakes, upstream, other, otherPort, workerd, base, configPath;
const stolen = []; // what another host received: must stay empty
const seen = []; // what the upstream received: {path, auth}
let rejected = 0;

/** listen starts a loopback server and resolves to its port. */
const listen = (server) => new Promise((r) => server.listen(0, '127.0.0.1', () => r(server.address().port)));

before(async () => {
  ({ fakes, stop: stopFakes } = await startFakes());
  upstream = createServer(async (req, res) => {
    const auth = req.headers.authorization ?? '';
    seen.push({ path: req.url, auth });
    if (req.url.startsWith('/v1/reject-once') && rejected++ === 0) {
      res.writeHead(401);
      return res.end();
    }
    // The upstream trusts what the provider's API says of the token.
    const api = await fetch(fakes.nikohealth.api_url, { headers: { Authorization: auth } });
    res.writeHead(api.status, { 'Content-Type': 'text/plain' });
    res.end(`upstream ${req.method} ${req.url}`);
  });
  const upPort = await listen(upstream);
  // Another host on loopback that a crafted path might try to reach.
  other = createServer((req, res) => {
    stolen.push({ path: req.url, auth: req.headers.authorization ?? '' });
    res.end('other');
  });
  otherPort = await listen(other);
  const port = await freePort();
  const niko = fakes.nikohealth;
  const tokenRequest = { provider: 'nikohealth', client_id: niko.config.client_id, client_secret: niko.config.client_secret, token_url: niko.token_url };
  // This folder's config, with the test's port and bindings, and loopback allowed out of the worker
  // (workerd's default network reaches public addresses only).
  const config = readFileSync(join(here, 'config.capnp'), 'utf8')
    .replace('"127.0.0.1:8080"', `"127.0.0.1:${port}"`)
    .replace('"https://api.example.com/v1"', JSON.stringify(`http://127.0.0.1:${upPort}/v1`))
    .replace(/\(name = "TOKEN_REQUEST", text = ".*"\),/, `(name = "TOKEN_REQUEST", text = ${JSON.stringify(JSON.stringify(tokenRequest))}),\n    (name = "ALLOW_LOOPBACK", text = "true"),`)
    .replace('services = [(name = "main", worker = .gateway)],', 'services = [(name = "main", worker = .gateway), (name = "net", network = (allow = ["public", "private", "local"]))],')
    .replace('compatibilityDate = "2026-11-01",', 'compatibilityDate = "2026-11-01",\n  globalOutbound = "net",');
  assert.match(config, /ALLOW_LOOPBACK/);
  configPath = join(here, `.test-${process.pid}.capnp`);
  writeFileSync(configPath, config);
  workerd = spawn(WORKERD, ['serve', configPath], { stdio: ['ignore', 'inherit', 'inherit'] });
  base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(`${base}/v1/ping`);
      break;
    } catch {
      if (i > 200 || workerd.exitCode !== null) throw new Error('workerd did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});
after(async () => {
  workerd?.kill('SIGTERM');
  upstream?.close();
  other?.close();
  await stopFakes?.();
  if (configPath) rmSync(configPath, { force: true });
});

function freePort() {
  return new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });
}

const requests = async () => (await (await fetch(fakes.nikohealth.stats_url)).json()).requests;

test('requests reach the upstream with a provider token that works; one token request for three', async () => {
  const start = await requests();
  for (const path of ['/orders?page=1', '/orders?page=2', '/patients']) {
    const res = await fetch(`${base}${path}`, { headers: { Authorization: 'Bearer caller-own-credential' } });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(await res.text(), `upstream GET /v1${path}`);
  }
  // ping from before() fetched the token
  assert.ok((await requests()) - start <= 1, 'at most one token request for three calls');
  assert.ok(seen.every((s) => s.auth.startsWith('Bearer ') && !s.auth.includes('caller-own-credential')), JSON.stringify(seen));
  assert.equal(new Set(seen.map((s) => s.auth)).size, 1, 'one token for all');
});

test('a 401 from the upstream: the token is invalidated once and the request retried with a new one', async () => {
  const start = await requests();
  const before = seen.length;
  const res = await fetch(`${base}/reject-once`, { method: 'POST', body: 'payload' });
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(await res.text(), 'upstream POST /v1/reject-once');
  const tries = seen.slice(before);
  assert.equal(tries.length, 2, 'sent twice');
  assert.notEqual(tries[0].auth, tries[1].auth, 'with a fresh token the second time');
  assert.equal((await requests()) - start, 1, 'one new token request');
});

// Request paths that name another host, or a path above UPSTREAM's, when resolved as a URL reference
// or decoded by an upstream. Each is sent raw (no client-side normalization).
const crafted = (host) => [
  `/http://${host}/steal`,
  `///${host}/steal`,
  `//${host}/steal`,
  `/http:${host}/steal`,
  `/https://${host}/steal`,
  `/https:${host}/steal`,
  `/\\${host}/steal`,
  `/\\\\${host}/steal`,
  `/%2F%2F${host}/steal`,
  `/%2f%2f${host}/steal`,
  `/%5C%5C${host}/steal`,
  `/..%2F..%2Fadmin`,
  `/%2e%2e/admin`,
  `/%2E%2E%2Fadmin`,
  `/../admin`,
  `/x/../../admin`,
  `/./../admin`,
];

test('upstreamURL: no spelling leaves UPSTREAM\'s origin or path', () => {
  const upstream = 'https://api.example.com/v1';
  for (const path of crafted('evil.example')) {
    const target = upstreamURL(`http://gw.example${path}`, upstream);
    if (target) {
      assert.equal(target.origin, 'https://api.example.com', path);
      assert.ok(target.pathname.startsWith('/v1/'), path);
    }
  }
  for (const path of ['/%2F%2Fevil/x', '/\\evil/x', '/..%2fadmin', '/a/../b', '/%2e/x']) {
    assert.equal(upstreamURL(`http://gw.example${path}`, upstream), null, path);
  }
  assert.equal(upstreamURL('http://gw.example/orders?page=1', upstream).href, 'https://api.example.com/v1/orders?page=1');
  assert.equal(upstreamURL('http://gw.example/', 'https://api.example.com/v1/').href, 'https://api.example.com/v1/');
  assert.equal(upstreamURL('http://gw.example/x', 'https://api.example.com').href, 'https://api.example.com/x');
});

/** rawGet sends a GET with the path exactly as given and resolves to its status. */
const rawGet = (path) =>
  new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const req = httpRequest({ host: hostname, port, path, method: 'GET' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });

test('no crafted path sends the token to another host or above the upstream path', async () => {
  const before = seen.length;
  for (const path of crafted(`127.0.0.1:${otherPort}`)) {
    const status = await rawGet(path);
    assert.ok(status === 200 || status === 400 || status === 404, `${path}: ${status}`);
  }
  assert.deepEqual(stolen, [], 'another host received a request');
  for (const s of seen.slice(before)) assert.ok(s.path.startsWith('/v1/'), `upstream saw ${s.path}`);
});
