// A Go process (the Go host on host/rediscache: its internal/gofleet) and this package (RedisCache)
// sharing one real Redis, as a mixed fleet would: one token, one 429 gate and one fetch lock between them,
// in both directions, and one rotating grant alternated between a long-lived Go process and this
// one for 30 s. Skipped without REDIS_URL (make test starts a redis-server).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { hkdfSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient as createRedis } from 'redis';
import { createClient } from '../src/index.js';
import { RedisCache } from '../src/redis.js';
import { WASM, ROOT, serve, startFakes } from './support.js';
import { candescent, codeRequest, replaysSince } from './rotation.js';

const REDIS_URL = process.env.REDIS_URL;
const skip = REDIS_URL ? false : 'REDIS_URL is not set (make test starts a redis-server)';
const key = new Uint8Array(32).fill(9);
const hexKey = Buffer.from(key).toString('hex');
let dir, bin, redis, js;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'tokenwasm-gofleet-'));
  bin = join(dir, 'gofleet');
  execFileSync('go', ['build', '-o', bin, './internal/gofleet'], { cwd: join(ROOT, 'host/rediscache'), stdio: 'inherit' });
  redis = createRedis({ url: REDIS_URL });
  redis.on('error', () => {});
  await redis.connect();
  js = await createClient({ wasm: WASM, allowLoopback: true, cache: new RedisCache(redis, { keys: [key] }) });
});
after(async () => {
  await js?.close();
  await redis?.quit();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** goToken runs the Go process for req and resolves to its answer ({token} or {error}). */
const goToken = (req) =>
  new Promise((resolve, reject) =>
    execFile(bin, [REDIS_URL, hexKey, JSON.stringify(req)], (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(JSON.parse(stdout)))),
  );

/** provider answers tok-<n>; the first request waits firstDelay ms; onRequest(n) is told of each. */
async function provider({ status = 200, firstDelay = 0, onRequest = () => {} } = {}) {
  return serve((req, res, n) => {
    onRequest(n);
    const answer = () => {
      if (status === 429) {
        res.writeHead(429, { 'Retry-After': '30', 'Content-Type': 'application/json' });
        return res.end('{"message":"slow down"}');
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ access_token: `tok-${n}`, token_type: 'Bearer', expires_in: 3600 }));
    };
    setTimeout(answer, n === 1 ? firstDelay : 0);
  });
}

const request = (p, id) => ({ provider: 'candid', client_id: id, client_secret: `secret-${id}`, token_url: p.url });

test('a token fetched by JS is served to Go from Redis, and one fetched by Go to JS', { skip }, async () => {
  const p = await provider();
  try {
    const a = await js.token(request(p, 'js-first'));
    assert.equal(a.token?.access_token, 'tok-1', JSON.stringify(a));
    const goA = await goToken(request(p, 'js-first'));
    assert.equal(goA.token?.access_token, 'tok-1', `Go: ${JSON.stringify(goA)}`);
    const goB = await goToken(request(p, 'go-first'));
    assert.equal(goB.token?.access_token, 'tok-2');
    const b = await js.token(request(p, 'go-first'));
    assert.equal(b.token?.access_token, 'tok-2', JSON.stringify(b));
    assert.equal(b.cached, true);
    assert.equal(p.count(), 2, 'one token request per credential set for the whole fleet');
  } finally {
    await p.close();
  }
});

test('a 429 seen by JS closes the gate for Go, and one seen by Go for JS', { skip }, async () => {
  const p = await provider({ status: 429 });
  try {
    assert.equal((await js.token(request(p, 'gate-js'))).error?.kind, 'rate_limited');
    assert.equal((await goToken(request(p, 'gate-js'))).error?.kind, 'rate_limited');
    assert.equal((await goToken(request(p, 'gate-go'))).error?.kind, 'rate_limited');
    assert.equal((await js.token(request(p, 'gate-go'))).error?.kind, 'rate_limited');
    assert.equal(p.count(), 2, 'the gate held in both directions: nothing sent');
  } finally {
    await p.close();
  }
});

test('the fetch lock: while one side fetches, the other waits for its token (fleet_lock not named)', { skip }, async () => {
  for (const first of ['js', 'go']) {
    let seen;
    const started = new Promise((resolve) => (seen = resolve));
    const p = await provider({ firstDelay: 2000, onRequest: seen });
    try {
      const req = request(p, `lock-${first}-first`); // no fleet_lock: a shared cache implies it, as in Go
      const one = first === 'js' ? js.token(req) : goToken(req);
      await started; // the first side holds the lock and waits for the provider
      const two = first === 'js' ? goToken(req) : js.token(req);
      const [a, b] = await Promise.all([one, two]);
      assert.equal(a.token?.access_token, 'tok-1', `${first} first: ${JSON.stringify(a)}`);
      assert.equal(b.token?.access_token, 'tok-1', `${first} first, the other: ${JSON.stringify(b)}`);
      assert.equal(p.count(), 1, `${first} first: one token request for the fleet`);
    } finally {
      await p.close();
    }
  }
});

/**
 * goServe starts a long-lived Go process of the fleet for req (gofleet serve): token() sends it one
 * call and resolves to its answer ({token} or {error}); stop() ends it.
 */
async function goServe(req) {
  const child = spawn(bin, ['serve', REDIS_URL, hexKey, JSON.stringify(req)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`gofleet serve ended (${child.exitCode ?? child.signalCode})`);
    return value;
  };
  assert.equal(await next(), 'ready');
  return {
    async token() {
      child.stdin.write('token\n');
      return JSON.parse(await next());
    },
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', resolve);
        child.stdin.end(); // serve returns when its input ends
      }),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

// The fleet test: one authorization code (Candescent, 3-second access tokens, refresh tokens
// that rotate at every use), shared by a long-lived Go process and this one on one Redis; calls
// alternate between them, one a second, for 30 s. Each process holds its token, refreshes it ahead
// in the background and follows the grant's lineage through Redis: every answer must be a token the
// fake's API accepts, no refresh token (nor the code) may be presented twice (the fake counts replays
// and would revoke the lineage), and every token request must succeed.
test('Go and JS alternate on one rotating grant for 30 s: every call a valid token, no replay', { skip }, async (t) => {
  const { fakes, stop } = await startFakes();
  let go;
  try {
    const f = candescent({ fakes });
    const replays = await replaysSince(f);
    const before = await f.stats();
    const req = codeRequest(f.c, await f.authorize(3000));
    go = await goServe(req);
    const start = Date.now();
    const seen = { js: new Set(), go: new Set() };
    let calls = 0;
    let jsFetched = 0;
    for (let i = 0; Date.now() - start < 30_000; i++) {
      const side = i % 2 ? 'go' : 'js';
      const res = side === 'js' ? await js.token(req) : await go.token();
      const what = `call ${i + 1} (${side}, at ${Date.now() - start} ms)`;
      assert.ok(res.token?.access_token, `${what}: ${JSON.stringify(res.error ?? res)}`);
      assert.ok(res.token.expires_at_ms > Date.now(), `${what}: a token that expired ${Date.now() - res.token.expires_at_ms} ms ago`);
      assert.equal(await f.api(res.token.access_token), 200, `${what}: the token at the fake's API`);
      seen[side].add(res.token.access_token);
      if (side === 'js' && res.cached === false) jsFetched++;
      calls++;
      await sleep(start + (i + 1) * 1000 - Date.now());
    }
    const after = await f.stats();
    const exchanges = after.requests - before.requests;
    assert.equal(await replays(), 0, 'replays at the fake (a used refresh token or the code presented again)');
    assert.equal(after.issued - before.issued, exchanges, 'token requests the fake refused');
    assert.ok(exchanges >= 6, `${exchanges} exchanges in 30 s of 3-second tokens`);
    const shared = [...seen.go].filter((t) => seen.js.has(t)).length;
    assert.ok(shared > 0, 'the two processes never served the same token: they did not share Redis');
    t.diagnostic(`${calls} calls, ${exchanges} exchanges (${jsFetched} by a JS call in its path), ${shared} tokens served by both`);
  } finally {
    await go?.stop();
    await stop();
  }
});

test('a wrong-typed token key: JS fetches and replaces it, and Go is served that token (and round the other way)', { skip }, async () => {
  for (const first of ['js', 'go']) {
    const p = await provider();
    try {
      const req = request(p, `wrongtype-${first}-first`);
      // The token key's name, as both sides compute it: learned from a first fetch, then made a list.
      const seen = new Set();
      const cache = new RedisCache(redis, { keys: [key] });
      const learn = await createClient({ wasm: WASM, allowLoopback: true, cache: { shared: true, get: (k) => (seen.add(k), cache.get(k)), set: (...a) => cache.set(...a), delete: (...a) => cache.delete(...a) } });
      assert.ok((await learn.token(req)).token);
      await learn.close();
      const rk = cache.redisKey([...seen].find((k) => !/\/(gate|lock|grant)$/.test(k)));
      await redis.del(rk);
      await redis.rPush(rk, ['wrong', 'type']);
      const a = first === 'js' ? await freshJS(req) : await goToken(req);
      assert.equal(a.token?.access_token, 'tok-2', `${first} first: ${JSON.stringify(a)}`);
      assert.equal(await redis.type(rk), 'string', `${first} replaced the wrong-typed key`);
      const b = first === 'js' ? await goToken(req) : await freshJS(req);
      assert.equal(b.token?.access_token, 'tok-2', `${first} first, the other: ${JSON.stringify(b)}`);
      assert.equal(p.count(), 2, `${first} first: one request besides the first fetch`);
    } finally {
      await p.close();
    }
  }
});

test("Go and JS on different encryption keys (one hash key): JS counts Go's values as decrypt failures, fetches its own, and takes over Go's lock at once", { skip }, async () => {
  // The hash key Go derives from its key, as RedisCache does: both name keys alike, seal unlike.
  const hashKey = new Uint8Array(hkdfSync('sha256', key, Buffer.alloc(0), 'tokenwasm rediscache v1: HMAC key for Redis key names', 32));
  const warnings = [];
  const cache = new RedisCache(redis, { keys: [new Uint8Array(32).fill(3)], hashKey, logger: { warn: (msg) => warnings.push(msg) } });
  let seen;
  const started = new Promise((resolve) => (seen = resolve));
  const p = await provider({ firstDelay: 2000, onRequest: seen });
  const other = await createClient({ wasm: WASM, allowLoopback: true, cache });
  try {
    const req = request(p, 'other-keys');
    const goSide = goToken(req);
    await started; // Go holds the lock (sealed under its key) and waits for the provider
    const t0 = performance.now();
    const mine = await other.token(req);
    const ms = performance.now() - t0;
    assert.equal(mine.token?.access_token, 'tok-2', JSON.stringify(mine));
    assert.ok(ms < 1500, `JS waited ${Math.round(ms)} ms on a lock it cannot open`);
    assert.equal((await goSide).token?.access_token, 'tok-1');
    assert.ok(cache.decryptFailures >= 1, `decrypt failures ${cache.decryptFailures}: Go's lock`);
    // Go's token, now in Redis (over JS's), does not open for JS either: a miss, counted, and fetched.
    const before = cache.decryptFailures;
    const again = await createClient({ wasm: WASM, allowLoopback: true, cache });
    try {
      assert.equal((await again.token(req)).token?.access_token, 'tok-3');
    } finally {
      await again.close();
    }
    assert.ok(cache.decryptFailures > before, `decrypt failures ${cache.decryptFailures}: Go's token`);
    assert.equal(p.count(), 3);
    assert.equal(warnings.filter((w) => w.includes('does not decrypt')).length, 1, warnings.join('\n'));
    assert.equal(warnings.filter((w) => w.includes('took over a lock')).length, 1, warnings.join('\n'));
  } finally {
    await other.close();
    await p.close();
  }
});

/** freshJS asks a new client (nothing held in memory) on the shared Redis for req's token. */
async function freshJS(req) {
  const c = await createClient({ wasm: WASM, allowLoopback: true, cache: new RedisCache(redis, { keys: [key] }) });
  try {
    return await c.token(req);
  } finally {
    await c.close();
  }
}
