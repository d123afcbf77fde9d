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
