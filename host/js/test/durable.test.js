// DurableObjectCache and TokenCoordinator in real workerd: two Workers ("a" owns the Durable Object
// namespace, "b" is bound to the same one), as two Workers of a fleet (test/durable-worker.js):
// the cache's contract (TTL, nx, if_value) through the object; 200 concurrent requests across both
// Workers on a cold cache make one provider request; a 429 seen by one closes the gate for the
// other; a one-time grant's lineage followed across them (no code or refresh token sent twice);
// nothing readable at rest (HMAC names, sealed values). In Node: names and sealing are redis.js's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DurableObjectCache, TokenCoordinator } from '../src/index.js';
import { RedisCache } from '../src/redis.js';
import { WASM, serve, startFakes } from './support.js';
import { candescent, codeRequest, replaysSince } from './rotation.js';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const WORKERD = join(PKG, 'node_modules/.bin/workerd');
const KEY = Buffer.alloc(32, 5).toString('base64'); // the fleet's cache key (a secret binding)
let dir, child, a, b, fakes, stopFakes, provider;
let issued = 0;

const freePort = () =>
  new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });

const q = JSON.stringify;
/** The two Workers' config: the same modules, one namespace, loopback reachable (the fakes). */
function config(pa, pb) {
  const mods = [
    ['test/durable-worker.js', 'esModule', join(PKG, 'test/durable-worker.js')],
    ['test/plugin.wasm', 'wasm', WASM],
    ...['edge.js', 'client.js', 'kernel.js', 'http.js', 'redact.js', 'cache.js', 'durable.js'].map((f) => [`src/${f}`, 'esModule', join(PKG, 'src', f)]),
  ];
  const modules = mods.map(([n, kind, p]) => `    (name = ${q(n)}, ${kind} = embed ${q(relative(dir, p))}),`).join('\n');
  const worker = (ns) => `(
  modules = [
${modules}
  ],
  compatibilityDate = "2026-11-01",
  globalOutbound = "net",
${ns}
)`;
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "a", worker = .a),
    (name = "b", worker = .b),
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "a", address = "127.0.0.1:${pa}", http = (), service = "a"),
    (name = "b", address = "127.0.0.1:${pb}", http = (), service = "b"),
  ],
);
const a :Workerd.Worker = ${worker(`  durableObjectNamespaces = [(className = "TestCoordinator", uniqueKey = "tokenwasm-durable-test")],
  durableObjectStorage = (inMemory = void),
  bindings = [(name = "COORD", durableObjectNamespace = "TestCoordinator"), (name = "CACHE_KEY", text = ${q(KEY)})],`)};
const b :Workerd.Worker = ${worker(`  bindings = [(name = "COORD", durableObjectNamespace = (serviceName = "a", className = "TestCoordinator")), (name = "CACHE_KEY", text = ${q(KEY)})],`)};
`;
}

before(async () => {
  ({ fakes, stop: stopFakes } = await startFakes());
  provider = await serve((req, res) => {
    if (req.headers['x-case'] === '429') {
      res.writeHead(429, { 'Retry-After': '30' });
      return res.end();
    }
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ access_token: `do-token-${++issued}`, expires_in: 3600 }));
    }, 200);
  });
  dir = mkdtempSync(join(tmpdir(), 'tokenwasm-durable-'));
  const [pa, pb] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'config.capnp'), config(pa, pb));
  child = spawn(WORKERD, ['serve', join(dir, 'config.capnp')], { stdio: ['ignore', 'inherit', 'inherit'] });
  [a, b] = [`http://127.0.0.1:${pa}`, `http://127.0.0.1:${pb}`];
  for (const url of [a, b]) {
    for (let i = 0; ; i++) {
      try {
        await fetch(url);
        break;
      } catch {
        if (i > 200 || child.exitCode !== null) throw new Error(`workerd did not start (exit ${child.exitCode})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
});
after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await provider?.close();
  await stopFakes?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const post = async (base, path, body) => {
  const res = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(res.status, 200, `${path}: ${res.status} ${await res.clone().text()}`);
  return res.json();
};
const cacheOp = (base, op) => post(base, '/cache', op);
const stored = async () => (await fetch(`${a}/stored`)).json();

test('the cache contract through the object: TTL, set nx, delete if_value, from either Worker', async () => {
  const k = 'tokenwasm/1/nikohealth/contract';
  assert.deepEqual(await cacheOp(a, { op: 'get', key: k }), { value: null });
  assert.deepEqual(await cacheOp(a, { op: 'set', key: k, value: 'v1', ttl_ms: 60000 }), { stored: true });
  assert.deepEqual(await cacheOp(b, { op: 'get', key: k }), { value: 'v1' }, 'the other Worker reads it');
  assert.deepEqual(await cacheOp(a, { op: 'set', key: `${k}/lock`, value: 'id-1', ttl_ms: 60000, nx: true }), { stored: true });
  assert.deepEqual(await cacheOp(b, { op: 'set', key: `${k}/lock`, value: 'id-2', ttl_ms: 60000, nx: true }), { stored: false }, 'nx: held');
  await cacheOp(b, { op: 'delete', key: `${k}/lock`, if_value: 'id-2' });
  assert.deepEqual(await cacheOp(a, { op: 'get', key: `${k}/lock` }), { value: 'id-1' }, 'if_value: not the owner, kept');
  await cacheOp(a, { op: 'delete', key: `${k}/lock`, if_value: 'id-1' });
  assert.deepEqual(await cacheOp(b, { op: 'get', key: `${k}/lock` }), { value: null }, 'if_value: the owner, deleted');
  await cacheOp(a, { op: 'set', key: `${k}/gate`, value: '{"until_ms":1}', ttl_ms: 50 });
  await new Promise((r) => setTimeout(r, 120));
  assert.deepEqual(await cacheOp(b, { op: 'get', key: `${k}/gate` }), { value: null }, 'past its TTL');
  assert.deepEqual(await cacheOp(b, { op: 'set', key: `${k}/gate`, value: 'again', ttl_ms: 60000, nx: true }), { stored: true }, 'nx on an expired key');
  // A key whose TTL is longer than any lock's and this set's is stale (redis.js takes it over too).
  await cacheOp(a, { op: 'set', key: `${k}/lock`, value: 'stale', ttl_ms: 3_600_000 });
  assert.deepEqual(await cacheOp(b, { op: 'set', key: `${k}/lock`, value: 'id-3', ttl_ms: 5000, nx: true }), { stored: true }, 'a stale key taken over');
  await cacheOp(a, { op: 'delete', key: k });
  assert.deepEqual(await cacheOp(b, { op: 'get', key: k }), { value: null }, 'deleted');

  const name = (await cacheOp(a, { op: 'name', key: `${k}/lock` })).name;
  const { entries, alarm } = await stored();
  const raw = entries[name];
  assert.ok(raw && typeof raw.v === 'string' && !raw.v.includes('id-3'), `sealed at rest: ${JSON.stringify(raw)}`);
  assert.ok(alarm > Date.now() + 3_000_000, `the sweep's alarm is set: ${alarm}`);
});

test('200 concurrent requests across two Workers on a cold cache: one provider request', async () => {
  const request = { provider: 'nikohealth', client_id: 'niko-client', client_secret: 'do-secret-1', token_url: provider.url };
  const start = provider.count();
  // Eight clients per Worker: sixteen flows racing on the one object's fleet lock (each Worker's
  // isolate alone would join its callers to one flow).
  const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => post(i % 2 ? b : a, '/token', { request, client: i % 8 })));
  assert.equal(provider.count() - start, 1, 'provider requests');
  const tokens = new Set(answers.map((r) => r.token?.access_token));
  assert.deepEqual([...tokens], [`do-token-${issued}`], JSON.stringify(answers.find((r) => !r.token)));
  assert.ok(answers.filter((r) => r.cached).length >= 1, 'some answered from the object');
});

test('one 429 closes the gate for both Workers', async () => {
  const request = { provider: 'nikohealth', client_id: 'niko-client', client_secret: 'do-secret-2', token_url: provider.url, headers: { 'X-Case': '429' } };
  const start = provider.count();
  const first = await post(a, '/token', { request });
  assert.equal(first.error?.kind, 'rate_limited', JSON.stringify(first));
  assert.equal(first.error.status, 429);
  for (const [base, extra] of [[b, {}], [b, { force: true }], [a, { force: true }]]) {
    const gated = await post(base, '/token', { request: { ...request, ...extra }, client: 3 });
    assert.equal(gated.error?.kind, 'rate_limited', JSON.stringify(gated));
    assert.equal(gated.error.status, undefined, 'answered by the shared gate');
    assert.ok(gated.error.retry_after_ms > 20000 && gated.error.retry_after_ms <= 30000, `retry_after_ms ${gated.error.retry_after_ms}`);
  }
  assert.equal(provider.count() - start, 1, 'provider requests');
});

test("a one-time grant's lineage is shared: each Worker sends the newest refresh token, the code once", async () => {
  const f = candescent({ fakes });
  const replays = await replaysSince(f);
  const request = codeRequest(f.c, await f.authorize(0));
  const first = await post(a, '/token', { request, client: 5 });
  assert.equal(first.cached, false, JSON.stringify(first));
  const shared = await post(b, '/token', { request, client: 5 });
  assert.equal(shared.token?.access_token, first.token.access_token, 'the other Worker has the token from the object');
  let last = first.token.access_token;
  for (const base of [b, a, b]) {
    const next = await post(base, '/token', { request: { ...request, force: true }, client: 6 });
    assert.ok(next.token && next.token.access_token !== last, JSON.stringify(next));
    assert.equal(await f.api(next.token.access_token), 200, 'the token works at the fake');
    last = next.token.access_token;
  }
  assert.equal(await replays(), 0, 'no code or refresh token sent twice (each exchange followed the lineage in the object)');

  // At rest: HMAC names, sealed values; no token, code or secret in plain text.
  const all = (await stored()).entries;
  const names = Object.keys(all);
  assert.ok(names.length >= 3, names.join(' '));
  for (const n of names) assert.match(n, /^tokenwasm\/1\/(nikohealth|candescent|_)\/[0-9a-f]{64}(\/gate|\/lock)?$/);
  const text = JSON.stringify(all);
  for (const secret of ['do-token-', 'do-secret', 'until_ms', 'refresh_token', last, request.code, request.client_secret]) {
    assert.ok(!text.includes(secret), `${secret} at rest`);
  }
});

test("in Node: DurableObjectCache's names and sealing are redis.js's (one fleet key, one format)", async () => {
  const key = new Uint8Array(32).fill(7);
  const sent = [];
  const namespace = {
    idFromName: (n) => n,
    get: () => ({
      async fetch(_url, init) {
        const op = JSON.parse(init.body);
        sent.push(op);
        return Response.json(op.op === 'set' ? { stored: true } : {});
      },
    }),
  };
  const cache = new DurableObjectCache(namespace, { keys: [Buffer.from(key).toString('base64')] });
  assert.equal(cache.shared, true);
  const redis = new RedisCache({ withTypeMapping: () => ({ get: async () => Buffer.from(sent.at(-1).value, 'base64') }) }, { keys: [key] });
  for (const k of ['tokenwasm/1/nikohealth/abc', 'tokenwasm/1/nikohealth/abc/gate', 'tokenwasm/1/pattern/abc/lock', 'tokenwasm/1/candescent/abc/grant', 'other']) {
    assert.equal(await cache.storageKey(k), redis.redisKey(k), k);
  }
  assert.equal(await cache.set('tokenwasm/1/nikohealth/abc', 'sealed value', 1000), true);
  assert.equal(await redis.get('tokenwasm/1/nikohealth/abc'), 'sealed value', 'RedisCache opens what DurableObjectCache sealed');
  assert.equal(await redis.get('tokenwasm/1/nikohealth/other'), undefined, 'under another key (associated data) it does not open');
  const hints = [];
  const hinted = new DurableObjectCache({ idFromName: (n) => `id:${n}`, get: (id, opts) => (hints.push([id, opts]), namespace.get()) }, { keys: [key], name: 'fleet-1', locationHint: 'weur' });
  await hinted.get('k');
  assert.deepEqual(hints, [['id:fleet-1', { locationHint: 'weur' }]], 'the object by name, created where the hint says');
  assert.throws(() => new DurableObjectCache(namespace, { keys: [new Uint8Array(16)] }), /16 bytes, want 32/);
  assert.throws(() => new DurableObjectCache(namespace, {}), /at least one 32-byte key/);
  assert.throws(() => new DurableObjectCache({}, { keys: [key] }), /namespace binding/);
});

test("in Node: the object's alarm drops entries past their TTL and keeps the rest; malformed operations are refused", async () => {
  const map = new Map();
  let alarm = null;
  const storage = {
    get: async (k) => map.get(k),
    put: async (k, v) => void map.set(k, v),
    delete: async (k) => (Array.isArray(k) ? k.forEach((x) => map.delete(x)) : map.delete(k)),
    list: async () => new Map(map),
    getAlarm: async () => alarm,
    setAlarm: async (t) => void (alarm = t),
  };
  const obj = new TokenCoordinator({ storage });
  const op = async (body) => {
    const res = await obj.fetch(new Request('https://coordinator/', { method: 'POST', body: JSON.stringify(body) }));
    return [res.status, await res.json()];
  };
  assert.deepEqual(await op({ op: 'set', key: 'short', value: 'a', ttl_ms: 1 }), [200, { stored: true }]);
  assert.deepEqual(await op({ op: 'set', key: 'long', value: 'b', ttl_ms: 60000 }), [200, { stored: true }]);
  assert.ok(alarm > Date.now(), 'an alarm for the sweep');
  await new Promise((r) => setTimeout(r, 5));
  alarm = null; // the runtime clears an alarm as it fires
  await obj.alarm();
  assert.deepEqual([...map.keys()], ['long'], 'the expired entry is gone');
  assert.ok(alarm > Date.now(), 'the next sweep is set while entries remain');
  for (const bad of [null, [], { op: 'list', key: 'k' }, { op: 'get' }, { op: 'get', key: '' }, { op: 'set', key: 'k', value: 1, ttl_ms: 5 }, { op: 'set', key: 'k', value: 'v' }, { op: 'set', key: 'k', value: 'v', ttl_ms: 0 }, { op: 'delete', key: 'k', if_value: 2 }]) {
    assert.equal((await op(bad))[0], 400, JSON.stringify(bad));
  }
  assert.equal((await obj.fetch(new Request('https://coordinator/'))).status, 405);
  assert.deepEqual([...map.keys()], ['long'], 'nothing changed');
});
