// RedisCache against the real redis-server that `make test` starts (REDIS_URL; skipped without it):
// the cache's own contract (TTL, nx, if_value), then two clients, each with its own connection,
// sharing one Redis as two processes of a fleet would: one request for a cold token, the 429 gate
// shared, and nothing readable in Redis (keys are HMACs, values sealed); a one-time grant's lineage
// (its newest refresh token) stored sealed like any value and followed by the other process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient as createRedis } from 'redis';
import { createClient } from '../src/index.js';
import { RedisCache } from '../src/redis.js';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { WASM, serve, startFakes } from './support.js';
import { candescent, codeRequest, recorder, replaysSince } from './rotation.js';

const URL_ = process.env.REDIS_URL;
const skip = URL_ ? false : 'REDIS_URL is not set (make test starts a redis-server)';
const keys = [new Uint8Array(32).fill(7)];
let conns = [];
let fakes;
let stopFakes;

const connect = async () => {
  const c = createRedis({ url: URL_ });
  c.on('error', () => {}); // a dropped connection fails the operation, which the client treats as a miss
  await c.connect();
  conns.push(c);
  return c;
};
before(async () => {
  if (skip) return;
  await (await connect()).flushDb();
  ({ fakes, stop: stopFakes } = await startFakes());
});
after(async () => {
  await Promise.all(conns.map((c) => c.quit()));
  await stopFakes?.();
});

test('the cache contract: TTL, set nx, delete if_value', { skip }, async () => {
  const cache = new RedisCache(await connect(), { keys });
  const k = 'tokenwasm/1/nikohealth/abc';
  assert.equal(await cache.get(k), undefined);
  assert.equal(await cache.set(k, 'v1', 60000), true);
  assert.equal(await cache.get(k), 'v1');
  assert.equal(await cache.set(`${k}/lock`, 'id-1', 60000, true), true);
  assert.equal(await cache.set(`${k}/lock`, 'id-2', 60000, true), false, 'nx: held');
  await cache.delete(`${k}/lock`, 'id-2');
  assert.equal(await cache.get(`${k}/lock`), 'id-1', 'if_value: not the owner, kept');
  await cache.delete(`${k}/lock`, 'id-1');
  assert.equal(await cache.get(`${k}/lock`), undefined, 'if_value: the owner, deleted');
  await cache.set(`${k}/gate`, '{"until_ms":1}', 50);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(await cache.get(`${k}/gate`), undefined, 'past its TTL');
  const other = new RedisCache(conns[0], { keys: [new Uint8Array(32).fill(9)] });
  assert.equal(await other.get(k), undefined, 'another fleet key opens nothing');

  // A lineage value is a value like any other: sealed, under a key of its own.
  const lineage = '{"refresh_token":"rt-lineage-canary","id":"0123"}';
  assert.equal(await cache.set(`${k}/grant`, lineage, 60000), true);
  assert.equal(await cache.get(`${k}/grant`), lineage);
  const rk = cache.redisKey(`${k}/grant`);
  assert.match(rk, /^tokenwasm\/1\/nikohealth\/[0-9a-f]{64}$/, 'the lineage key is HMACed whole, as host/rediscache does');
  assert.notEqual(rk, cache.redisKey(k));
  const raw = await conns[0].get(rk);
  assert.ok(raw && !raw.includes('rt-lineage') && !raw.includes('refresh_token'), 'the lineage is sealed at rest');
  assert.equal(await cache.set(`${k}/grant`, '{"used":true}', 60000, true), false, 'nx on a lineage that exists');
});

test('two processes sharing Redis: one request for a cold token, the 429 gate shared, nothing readable', { skip }, async () => {
  let issued = 0;
  const srv = await serve((req, res) => {
    if (req.headers['x-case'] === '429') {
      res.writeHead(429, { 'Retry-After': '30' });
      return res.end();
    }
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ access_token: `redis-token-${++issued}`, expires_in: 3600 }));
    }, 200);
  });
  const [a, b] = await Promise.all([0, 1].map(async () => createClient({ wasm: WASM, allowLoopback: true, cache: new RedisCache(await connect(), { keys }) })));
  try {
    const req = { provider: 'nikohealth', client_id: 'niko-client', client_secret: 'redis-secret-1', token_url: srv.url, fleet_lock: true };
    const [ra, rb] = await Promise.all([a.token(req), b.token(req)]);
    assert.equal(ra.token?.access_token, 'redis-token-1', JSON.stringify(ra));
    assert.equal(rb.token?.access_token, 'redis-token-1', JSON.stringify(rb));
    assert.equal(srv.count(), 1, 'one request for the fleet');

    const gated = { ...req, headers: { 'X-Case': '429' } };
    assert.equal((await a.token(gated)).error?.kind, 'rate_limited');
    const seen = await b.token(gated);
    assert.equal(seen.error?.kind, 'rate_limited', JSON.stringify(seen));
    assert.equal(seen.error.status, undefined, 'the other process was answered by the shared gate');
    assert.equal(srv.count(), 2);

    const names = await conns[0].keys('*');
    assert.ok(names.length >= 2, names.join(' '));
    for (const n of names) assert.match(n, /^tokenwasm\/1\/(nikohealth|_)\/[0-9a-f]{64}(\/gate|\/lock)?$/);
    for (const n of names) {
      const raw = await conns[0].get(n);
      assert.ok(!raw.includes('redis-token') && !raw.includes('until_ms'), `${n} holds plain text`);
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
    await srv.close();
  }
});

test("a one-time grant's lineage in Redis: sealed, and the other process sends its newest refresh token", { skip }, async () => {
  const env = { wasm: readFileSync(WASM), fakes };
  const f = candescent(env);
  const replays = await replaysSince(f);
  const [ra, rb] = [recorder(), recorder()];
  const [a, b] = await Promise.all(
    [ra, rb].map(async (rec) => createClient({ wasm: WASM, allowLoopback: true, fetch: rec.fetch, cache: new RedisCache(await connect(), { keys }) })),
  );
  try {
    const code = await f.authorize(0);
    const req = codeRequest(f.c, code);
    const first = await a.token(req);
    assert.equal(first.cached, false, JSON.stringify(first));
    const shared = await b.token(req);
    assert.equal(shared.cached, true, 'the other process has the token from Redis');
    assert.equal(shared.token.access_token, first.token.access_token);

    const second = await b.token({ ...req, force: true });
    assert.ok(second.token && second.token.access_token !== first.token.access_token, JSON.stringify(second));
    assert.equal(rb.sent.length, 1);
    assert.equal(rb.sent[0].get('grant_type'), 'refresh_token', 'the other process follows the lineage, not the code');
    assert.equal(rb.sent[0].get('refresh_token'), ra.received[0], 'with the refresh token the first process got');
    const third = await a.token({ ...req, force: true });
    assert.ok(third.token, JSON.stringify(third));
    assert.equal(ra.sent[1].get('refresh_token'), rb.received[0], 'and back');
    assert.equal([...ra.sent, ...rb.sent].filter((s) => s.get('code') === code).length, 1, 'requests carrying the code');
    assert.equal(await replays(), 0, 'replays at the fake');

    const plain = [code, ...ra.received, ...rb.received, first.token.access_token, second.token.access_token, third.token.access_token];
    const names = await conns[0].keys('tokenwasm/1/candescent/*');
    assert.ok(names.length >= 2, `the token and its lineage: ${names.join(' ')}`);
    for (const n of names) {
      assert.match(n, /^tokenwasm\/1\/candescent\/[0-9a-f]{64}(\/gate|\/lock)?$/);
      const raw = await conns[0].get(n);
      for (const p of plain) assert.ok(!raw.includes(p), `${n} holds a credential in plain text`);
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

// Parity with host/rediscache: stale and stray locks taken over, a wrong-typed key a miss for that
// key only, values that do not decrypt counted and logged at most once a minute.

/** rawConn is a connection that reads values as Buffers (sealed values are binary). */
const rawConn = () => conns[0].withTypeMapping({ 36: Buffer });
const uniqueKey = () => `tokenwasm/1/nikohealth/${randomBytes(8).toString('hex')}`;
/** logs is a logger that keeps what it is given, as text. */
function logs() {
  const lines = [];
  return { lines, logger: { warn: (msg, attrs) => lines.push(`${msg} ${JSON.stringify(attrs)}`) } };
}

test('set nx takes over a lock without a TTL or with a longer TTL than any lock has, never a live one', { skip }, async () => {
  const cache = new RedisCache(await connect(), { keys });
  const ttl = 5000;
  for (const [name, plantedTTL, stored] of [
    ['no TTL', 0, true],
    ['1 day TTL', 86_400_000, true],
    ['live lock', 2000, false],
    ['live lock of a longer timeout_ms', 100_000, false],
  ]) {
    const k = `${uniqueKey()}/lock`;
    const rk = cache.redisKey(k);
    await new RedisCache(conns[0], { keys }).set(k, 'owner-0', 60_000); // a lock another process of the fleet sealed
    const planted = await rawConn().get(rk);
    await rawConn().set(rk, planted, plantedTTL ? { expiration: { type: 'PX', value: plantedTTL } } : {});
    assert.equal(await cache.set(k, 'owner-1', ttl, true), stored, name);
    const pttl = await conns[0].pTTL(rk);
    if (!stored) {
      assert.ok((await rawConn().get(rk)).equals(planted) && pttl > 0 && pttl <= plantedTTL, `${name}: a live lock was changed (TTL ${pttl})`);
      continue;
    }
    assert.ok(pttl > 0 && pttl <= ttl, `${name}: taken-over lock TTL ${pttl}`);
    assert.equal(await cache.set(k, 'owner-2', ttl, true), false, `${name}: the taken-over lock was taken again while live`);
    await cache.delete(k, 'owner-1');
    assert.equal(await conns[0].exists(rk), 0, `${name}: the new owner could not release its lock`);
  }
  assert.equal(cache.decryptFailures, 0);
});

test('set nx takes over a live lock that no key opens (planted, or sealed under other keys), counting it', { skip }, async () => {
  const { lines, logger } = logs();
  const hashKey = randomBytes(32);
  const cache = new RedisCache(await connect(), { keys, hashKey, logger });
  for (const [name, plant] of [
    ['garbage', (rk) => conns[0].set(rk, 'planted by hand', { expiration: { type: 'PX', value: 60_000 } })],
    ['sealed under another key', (rk, k) => new RedisCache(conns[0], { keys: [randomBytes(32)], hashKey }).set(k, 'owner-0', 60_000)],
  ]) {
    const k = `${uniqueKey()}/lock`;
    const rk = cache.redisKey(k);
    await plant(rk, k);
    assert.equal(await cache.set(k, 'owner-1', 5000, true), true, name);
    assert.equal(await cache.get(k), 'owner-1', name);
    const pttl = await conns[0].pTTL(rk);
    assert.ok(pttl > 0 && pttl <= 5000, `${name}: TTL ${pttl}`);
  }
  assert.equal(cache.decryptFailures, 2);
  assert.equal(lines.filter((l) => l.includes('took over a lock')).length, 1, lines.join('\n'));
});

/**
 * coldKnownKey fetches one token through a new provider so its credential set's cache key is known,
 * then deletes that token from Redis: the set is cold again, with its key in hand for planting.
 */
async function coldKnownKey() {
  const srv = await serve((req, res, n) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ access_token: `planted-${n}`, expires_in: 3600 }));
  });
  const req = { provider: 'nikohealth', client_id: `c-${randomBytes(4).toString('hex')}`, client_secret: 's3cret', token_url: srv.url, timeout_ms: 1000 };
  const cache = new RedisCache(await connect(), { keys });
  const seen = new Set();
  const recording = {
    shared: true,
    get: (k) => (seen.add(k), cache.get(k)),
    set: (k, ...a) => (seen.add(k), cache.set(k, ...a)),
    delete: (k, v) => cache.delete(k, v),
  };
  const c = await createClient({ wasm: WASM, allowLoopback: true, cache: recording });
  assert.ok((await c.token(req)).token);
  await c.close();
  const k = [...seen].find((x) => !/\/(gate|lock|grant)$/.test(x));
  await conns[0].del(cache.redisKey(k));
  return { srv, req, cache, k };
}

/** fetchWith asks a new client (nothing held in memory) on a new RedisCache for req's token. */
async function fetchWith(req, opts = {}) {
  const cache = new RedisCache(await connect(), { keys, ...opts });
  const c = await createClient({ wasm: WASM, allowLoopback: true, cache });
  const started = performance.now();
  try {
    return { res: await c.token(req), ms: performance.now() - started, cache };
  } finally {
    await c.close();
  }
}

test('a planted fetch lock stalls nothing: taken over at once', { skip }, async () => {
  for (const [name, plant] of [
    ['a string without TTL', (rk) => conns[0].set(rk, 'planted by hand')],
    ['a hash without TTL', (rk) => conns[0].hSet(rk, 'a', 'b')],
    ['a list with a 60 s TTL', async (rk) => (await conns[0].rPush(rk, 'x'), conns[0].pExpire(rk, 60_000))],
    ['garbage with a 60 s TTL', (rk) => conns[0].set(rk, 'garbage', { expiration: { type: 'PX', value: 60_000 } })],
    ['a gate of the wrong type', (rk) => conns[0].rPush(rk.slice(0, -'/lock'.length) + '/gate', 'x')],
  ]) {
    const { srv, req, cache, k } = await coldKnownKey();
    try {
      await plant(cache.redisKey(`${k}/lock`));
      const { res, ms } = await fetchWith(req);
      assert.ok(res.token, `${name}: ${JSON.stringify(res)} after ${Math.round(ms)} ms`);
      assert.ok(ms < 1000, `${name}: the token took ${Math.round(ms)} ms`);
      assert.equal(srv.count(), 2, name);
    } finally {
      await srv.close();
    }
  }
});

test('a wrong-typed key is a miss for that key only, replaced by the next set; counted and logged once', { skip }, async () => {
  const { lines, logger } = logs();
  const cache = new RedisCache(await connect(), { keys, logger });
  const [a, b] = [uniqueKey(), uniqueKey()];
  await conns[0].rPush(cache.redisKey(a), ['not', 'a', 'token']);
  for (let i = 0; i < 10; i++) assert.equal(await cache.get(a), undefined);
  await cache.delete(a, 'owner');
  assert.equal(await conns[0].type(cache.redisKey(a)), 'list', 'delete with ifValue leaves a wrong-typed key alone');
  assert.equal(await cache.set(b, 'token-b', 60_000), true);
  assert.equal(await cache.get(b), 'token-b', 'another key is served from Redis');
  assert.equal(await cache.set(a, 'token-a', 60_000), true);
  assert.equal(await conns[0].type(cache.redisKey(a)), 'string', 'set replaced the wrong-typed key');
  assert.equal(await cache.get(a), 'token-a');
  assert.equal(cache.keyErrors, 11);
  assert.equal(lines.filter((l) => l.includes('refused an operation on one key')).length, 1, lines.join('\n'));
});

test('a wrong-typed token key through the client: fetched, replaced, then served from Redis', { skip }, async () => {
  const { srv, req, cache, k } = await coldKnownKey();
  try {
    const rk = cache.redisKey(k);
    await conns[0].rPush(rk, ['wrong', 'type']);
    const first = await fetchWith(req);
    assert.equal(first.res.token?.access_token, 'planted-2', JSON.stringify(first.res));
    assert.ok(first.cache.keyErrors >= 1, 'the token key is read (before and after the lock): a key error each time');
    assert.equal(await conns[0].type(rk), 'string');
    const second = await fetchWith(req);
    assert.equal(second.res.token?.access_token, 'planted-2', 'the replaced key is served from Redis');
    assert.equal(second.res.cached, true);
    assert.equal(srv.count(), 2);
  } finally {
    await srv.close();
  }
});

test('values that do not decrypt: a miss, counted, logged at most once a minute naming neither key nor value', { skip }, async () => {
  const hashKey = randomBytes(32);
  const writer = new RedisCache(await connect(), { keys: [randomBytes(32)], hashKey });
  const { lines, logger } = logs();
  const reader = new RedisCache(await connect(), { keys: [randomBytes(32)], hashKey, logger });
  const k = uniqueKey();
  const value = '{"access_token":"AT-decrypt-canary"}';
  await writer.set(k, value, 60_000);
  await writer.set(`${k}/gate`, '{"until_ms":1}', 60_000);
  const raw = await rawConn().get(writer.redisKey(k));
  const warnings = () => lines.filter((l) => l.includes('does not decrypt')).length;
  const realNow = Date.now;
  let now = 1_800_000_000_000;
  Date.now = () => now;
  try {
    for (let i = 0; i < 50; i++) {
      now += 500; // 25 s in all
      assert.equal(await reader.get(k), undefined, 'a value under another key opened');
      assert.equal(await reader.get(`${k}/gate`), undefined, 'a gate under another key opened');
      assert.equal(warnings(), 1, `after ${2 * (i + 1)} reads`);
    }
    assert.equal(reader.decryptFailures, 100);
    now += 60_000;
    await reader.get(k);
    assert.equal(warnings(), 2, 'a minute later');
  } finally {
    Date.now = realNow;
  }
  const out = lines.join('\n');
  assert.match(out, /different encryption keys/);
  for (const secret of ['AT-decrypt-canary', raw.toString('latin1'), raw.toString('hex'), raw.toString('base64'), k, writer.redisKey(k)]) {
    assert.ok(!out.includes(secret), `the warning names ${secret}`);
  }
  assert.equal(await writer.get(k), value);
  assert.equal(writer.decryptFailures, 0);
});
