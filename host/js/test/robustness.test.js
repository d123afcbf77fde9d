// Robustness against a hostile or careless environment, each a test that failed on a version of the
// package: a cache that stalls, an API that refuses every token, a frozen request with a getter, a
// runtime whose fetch errors quote the URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, httpSender } from '../src/index.js';
import { createServer } from 'node:http';
import { WASM, serve } from './support.js';

/** tokenServer answers tok-<client_id>-<n> for every request (n counts from 1). */
const tokenServer = () =>
  serve((req, res, n) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ access_token: `tok-${n}`, token_type: 'Bearer', expires_in: 3600 }));
  });

/** settled resolves to p's outcome, or to 'hung' when p has not settled after ms. */
const settled = (p, ms) => {
  let timer;
  const hung = new Promise((resolve) => (timer = setTimeout(resolve, ms, 'hung')));
  return Promise.race([p.then((v) => v, (err) => ({ threw: err })), hung]).finally(() => clearTimeout(timer));
};

test('a cache that never answers is a miss: the token comes from the provider, nothing hangs', async () => {
  const provider = await tokenServer();
  const stalled = () => new Promise(() => {});
  const warnings = [];
  const host = await createClient({
    wasm: WASM,
    allowLoopback: true,
    cache: { get: stalled, set: stalled, delete: stalled },
    logger: { warn: (msg) => warnings.push(msg) },
  });
  try {
    const req = { provider: 'candid', client_id: 'stall', client_secret: 's', token_url: provider.url, timeout_ms: 1000 };
    const first = await settled(host.token(req), 8000);
    assert.notEqual(first, 'hung', 'token() must not wait on a cache that never answers');
    assert.equal(first.token?.access_token, 'tok-1', JSON.stringify(first));
    const other = await settled(host.token({ ...req, client_id: 'stall-2' }), 8000);
    assert.equal(other.token?.access_token, 'tok-2', JSON.stringify(other));
    assert.ok(warnings.some((m) => /cache/.test(m)), 'the stalled cache is logged');
  } finally {
    await settled(host.close(), 8000);
    await provider.close();
  }
});

test('an API that refuses every token costs no token request per call (one invalidation per 30 s)', async () => {
  const provider = await tokenServer();
  const api = await serve((req, res) => {
    res.writeHead(401);
    res.end('no');
  });
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  try {
    const req = { provider: 'candid', client_id: 'storm', client_secret: 's', token_url: provider.url };
    const first = await host.fetch(req, api.url);
    assert.equal(first.status, 401);
    assert.equal(provider.count(), 2, 'the first 401 drops the token and retries once with a new one');
    for (let i = 0; i < 10; i++) assert.equal((await host.fetch(req, api.url)).status, 401);
    await Promise.all(Array.from({ length: 50 }, () => host.fetch(req, api.url)));
    assert.equal(provider.count(), 2, 'later 401s within 30 s are the API\'s answer: no token request each');
    assert.equal(api.count(), 2 + 10 + 50);
  } finally {
    await host.close();
    await provider.close();
    await api.close();
  }
});

test('a frozen request whose members are getters is looked up by its JSON, not its identity', async () => {
  const provider = await tokenServer();
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  try {
    // One frozen object serving two tenants (a getter reading the current tenant): each must get
    // its own token, never the other's.
    let tenant = 'tenant-a';
    const req = Object.freeze({
      provider: 'candid',
      get client_id() {
        return tenant;
      },
      client_secret: 's',
      token_url: provider.url,
    });
    const a = await host.token(req);
    tenant = 'tenant-b';
    const b = await host.token(req);
    assert.notEqual(b.token.access_token, a.token.access_token, "tenant b was served tenant a's token");
    assert.equal(provider.count(), 2);
    tenant = 'tenant-a';
    assert.equal((await host.token(req)).token.access_token, a.token.access_token, 'tenant a again: its own, from memory');
    // The same through a toJSON that reads the tenant.
    const viaToJSON = Object.freeze({ toJSON: () => ({ provider: 'candid', client_id: tenant, client_secret: 's', token_url: provider.url }) });
    const c = await host.token(viaToJSON);
    tenant = 'tenant-b';
    assert.notEqual((await host.token(viaToJSON)).token.access_token, c.token.access_token);
  } finally {
    await host.close();
    await provider.close();
  }
});

test('a plain request object mutated between calls never gets the token of what it held before', async () => {
  const provider = await tokenServer();
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  try {
    // One object reused for two tenants, changed in place between calls (a member changed, added,
    // removed, made a getter, a nested object changed inside, a toJSON given): each change is a
    // credential set of its own, as its JSON says, and the first tenant's token is served only to
    // the object while it reads as the first tenant again.
    const req = { provider: 'candid', client_id: 'tenant-a', client_secret: 's', token_url: provider.url };
    const a = (await host.token(req)).token.access_token;
    assert.equal((await host.token(req)).token.access_token, a, 'unchanged: from memory');
    const seen = new Set([a]);
    // Each change is a credential set never seen before: a new token, the one a fresh copy of the
    // object gets.
    const fresh = async (what) => {
      const t = (await host.token(req)).token?.access_token;
      assert.ok(t && !seen.has(t), `${what}: served a token of another credential set`);
      assert.equal((await host.token(JSON.parse(JSON.stringify(req)))).token?.access_token, t, `${what}: not the token of its JSON`);
      seen.add(t);
    };
    req.client_id = 'tenant-b';
    await fresh('a member changed');
    req.params = { audience: 'one' };
    await fresh('a member added (an object)');
    req.params.audience = 'two';
    await fresh('the nested object changed inside');
    delete req.params;
    req.client_id = 'tenant-a';
    assert.equal((await host.token(req)).token.access_token, a, 'back to tenant a: its own token');
    let tenant = 'tenant-c';
    Object.defineProperty(req, 'client_id', { get: () => tenant, enumerable: true, configurable: true });
    await fresh('a getter');
    tenant = 'tenant-d';
    await fresh('the getter reading another tenant');
    Object.defineProperty(req, 'client_id', { value: 'tenant-e', enumerable: true, configurable: true, writable: true });
    await fresh('a data member again');
    req.client_secret = 's2';
    const viaToJSON = (await host.token(req)).token.access_token;
    Object.defineProperty(req, 'toJSON', { value: () => ({ provider: 'candid', client_id: 'tenant-f', client_secret: 's', token_url: provider.url }) });
    const t = (await host.token(req)).token.access_token;
    assert.ok(t !== viaToJSON && !seen.has(t), 'a toJSON: served a token of another credential set');
    seen.add(viaToJSON).add(t);
    assert.equal(provider.count(), seen.size);
  } finally {
    await host.close();
    await provider.close();
  }
});

test('a frozen member whose JSON can change (a function or bigint with a toJSON, an inherited toJSON, a Proxy) is never taken by its identity', async () => {
  const provider = await tokenServer();
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  const base = { provider: 'candid', client_secret: 's', token_url: provider.url };
  let tenant;
  // Each request reads the current tenant only through something inside a frozen member (or a
  // primitive) that the cache keeps by identity or value: JSON.stringify calls a function's or a
  // bigint's toJSON, and an inherited one, as it does an own one.
  const cases = [
    ['a function with a toJSON', () => ({ ...base, client_id: 'fn', params: Object.freeze({ audience: Object.assign(() => {}, { toJSON: () => tenant }) }) })],
    ['a bigint (BigInt.prototype.toJSON)', () => ({ ...base, client_id: 1n })],
    ['an array (Array.prototype.toJSON)', () => ({ ...base, client_id: 'arr', params: Object.freeze({ audience: Object.freeze(['read']) }) })],
    // A Proxy of a frozen object is frozen too (its invariants hold every own member), but its get
    // trap may answer a toJSON, here from the second tenant on.
    [
      'a Proxy of a frozen object answering a toJSON',
      () => {
        const toJSON = () => (tenant.endsWith('-b') ? () => ({ audience: tenant }) : undefined);
        return { ...base, client_id: 'proxy', params: new Proxy(Object.freeze({ audience: 'x' }), { get: (t, k) => (k === 'toJSON' ? toJSON() : Reflect.get(t, k)) }) };
      },
    ],
    ['an object (Object.prototype.toJSON), under a request without a prototype', () => Object.assign(Object.create(null), { ...base, client_id: 'obj', params: Object.freeze({ audience: 'x' }) })],
  ];
  const protos = [
    [BigInt.prototype, function () { return tenant; }],
    // Every other array and object (the client's own JSON) serializes as it would without one.
    [Array.prototype, function () { return this[0] === 'read' ? tenant : Array.from(this); }],
    [Object.prototype, function () { return this.audience === 'x' ? { audience: tenant } : { ...this }; }],
  ];
  try {
    for (const [what, make] of cases) {
      const req = make();
      const given = protos.find(([proto]) => what.includes(proto === Object.prototype ? 'Object.prototype' : proto === Array.prototype ? 'Array.prototype' : 'BigInt.prototype')) ?? null;
      // Given before the first call (a library that defines it) and, separately, after it (a bigint
      // without a toJSON cannot be serialized at all).
      for (const after of given && given[0] !== BigInt.prototype ? [false, true] : [false]) {
        tenant = `${what}-${after}-a`;
        if (given && !after) Object.defineProperty(given[0], 'toJSON', { value: given[1], configurable: true, writable: true });
        try {
          const a = (await host.token(req)).token?.access_token;
          if (given && after) Object.defineProperty(given[0], 'toJSON', { value: given[1], configurable: true, writable: true });
          tenant = `${what}-${after}-b`;
          const json = JSON.stringify(req);
          const b = (await host.token(req)).token?.access_token;
          assert.ok(b, `${what}: no token`);
          assert.notEqual(b, a, `${what}${after ? ' (given after the first call)' : ''}: the request now reads ${json}, and was served the token of what it read before`);
          assert.equal((await host.token(JSON.parse(json))).token?.access_token, b, `${what}: not the token of its JSON`);
        } finally {
          if (given) delete given[0].toJSON;
        }
      }
    }
  } finally {
    await host.close();
    await provider.close();
  }
});

test('a forced request whose getters answer differently on each read holds only the token of the JSON it was looked up by', async () => {
  // The provider names the client it issued each token to (candid: client_id in a JSON body).
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const client = JSON.parse(body).client_id;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ access_token: `tok-${client}`, token_type: 'Bearer', expires_in: 3600 }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}/token`;
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  try {
    const base = { provider: 'candid', client_secret: 's', token_url: url };
    let reads = 0;
    const flip = { ...base, force: true };
    Object.defineProperty(flip, 'client_id', { get: () => (reads++ % 2 === 0 ? 'tenant-a' : 'tenant-b'), enumerable: true });
    await host.token(flip);
    // Whatever the forced call sent, tenant a is served only a token issued to tenant a.
    const a = await host.token({ ...base, client_id: 'tenant-a' });
    assert.equal(a.token?.access_token, 'tok-tenant-a', "tenant a was served another tenant's token");
    await host.invalidate(flip);
    const b = await host.token({ ...base, client_id: 'tenant-b' });
    assert.equal(b.token?.access_token, 'tok-tenant-b');
  } finally {
    await host.close();
    await new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections();
    });
  }
});

test('a request object whose Source left the memory (the oldest of 10,000) shares the token of its JSON with every other object', async () => {
  const provider = await tokenServer();
  const host = await createClient({ wasm: WASM, allowLoopback: true });
  try {
    const req = { provider: 'candid', client_id: 'evicted', client_secret: 's', token_url: provider.url };
    const first = (await host.token(req)).token.access_token;
    // 10,000 other credential sets (refused by the plugin, sending nothing) push req's out.
    for (let i = 0; i < 10_000; i++) await host.token({ provider: 'candid', client_id: `other-${i}` });
    assert.equal(provider.count(), 1);
    // The API refused the token: invalidating it through a copy of req (as client.fetch does with
    // the request less force) must reach the object seen before too. Two Sources of one credential
    // set would hold two tokens (one refused, which invalidate cannot reach) and run two flights at
    // once (a one-time grant's refresh token sent twice).
    const { retry } = await host.invalidate({ ...req, access_token: first });
    assert.equal(retry, true);
    const next = (await host.token(req)).token.access_token;
    assert.notEqual(next, first, 'after its token was invalidated, the object seen before was served it again');
    assert.equal((await host.token({ ...req })).token.access_token, next, 'the object and a copy got different tokens');
    assert.equal(provider.count(), 2);
  } finally {
    await host.close();
    await provider.close();
  }
});

test("a fetch error that quotes the URL (Deno's do) reaches neither the answer nor the logs with its path or query", async () => {
  const url = 'https://127.0.0.1:39999/t/(CANARYPATH)?key=CANARYQUERY';
  // Deno 2.9.6's fetch, on a refused connection: the whole URL in the cause's message.
  const denoLike = async (input) => {
    throw new TypeError('fetch failed', {
      cause: new Error(`error sending request for url (${input}): client error (Connect): tcp connect error: Connection refused (os error 111)`),
    });
  };
  const logs = [];
  const logger = { debug: (m, a) => logs.push(JSON.stringify([m, a])), warn: (m, a) => logs.push(JSON.stringify([m, a])) };
  const got = await httpSender({ allowLoopback: true, fetch: denoLike, logger })({ method: 'POST', url, headers: {}, body: 'x', timeout_ms: 1000 });
  assert.ok(got.error, JSON.stringify(got));
  assert.doesNotMatch(JSON.stringify(got), /CANARY/);
  assert.match(got.error, /127\.0\.0\.1:39999/, 'the host and port stay: they tell what failed');
  assert.match(got.error, /Connection refused/);
  assert.ok(logs.length > 0);
  assert.doesNotMatch(logs.join('\n'), /CANARY/);
});
