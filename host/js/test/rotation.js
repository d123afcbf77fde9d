// One-time grants (refresh_token, authorization_code) through the client, against the Candescent
// fake of `tokenwasm fakes`: it mints a one-time authorization code per case (POST /_authorize, with
// short access tokens when asked), rotates refresh tokens (a used one is invalid_grant) and counts
// replays (a used refresh token or code presented again; it then revokes the code's whole lineage).
// Plain JavaScript (fetch and timers): test/suite.js runs these in every runtime with short runs,
// test/rotation.test.js in Node with the longer ones. Each case throws on failure.
import { createClient, MemoryCache } from '../src/edge.js'; // no node: module: this file runs in workerd too

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
function ok(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(got, want, msg) {
  if (got !== want) throw new Error(`${msg}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
const form = (body) => new URLSearchParams(body);

/** candescent: the fake's config, its counters, a fresh one-time code, its API's verdict on a token. */
export function candescent(env) {
  const c = env.fakes.candescent;
  const origin = new URL(c.stats_url).origin;
  return {
    c,
    stats: async () => (await fetch(c.stats_url)).json(),
    async authorize(lifetimeMs) {
      const res = await fetch(`${origin}/_authorize`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: lifetimeMs ? `lifetime_ms=${lifetimeMs}` : '',
      });
      eq(res.status, 200, 'POST /_authorize (a fakes binary built from this tree mints codes)');
      return (await res.json()).code;
    },
    api: async (token) => (await fetch(c.api_url, { headers: { Authorization: `Bearer ${token}` } })).status,
  };
}

/** replaysSince returns a function answering how many replays the fake counted since now. */
export async function replaysSince(f) {
  const start = (await f.stats()).replays;
  ok(typeof start === 'number', 'the fake counts replays (a fakes binary built from this tree)');
  return async () => (await f.stats()).replays - start;
}

export const codeRequest = ({ config: k, token_url: url }, code) => ({
  provider: 'candescent',
  grant_type: 'authorization_code',
  client_id: k.client_id,
  client_secret: k.client_secret,
  token_url: url,
  institution_id: k.institution_id,
  code,
  redirect_uri: k.redirect_uri,
  code_verifier: k.code_verifier,
  scope: 'openid offline_access',
});
const refreshRequest = ({ config: k, token_url: url }, refreshToken) => ({
  provider: 'candescent',
  grant_type: 'refresh_token',
  client_id: k.client_id,
  client_secret: k.client_secret,
  token_url: url,
  refresh_token: refreshToken,
});

/**
 * recorder is a fetch for createClient that records each token request it sends (its form body,
 * parsed) and the refresh token each answer carried, optionally after a delay (a slow provider).
 * onSend is called as each request leaves.
 */
export function recorder({ delayMs = 0 } = {}) {
  const rec = {
    sent: [],
    received: [],
    onSend: () => {},
    async fetch(url, init) {
      rec.sent.push(form(String(init?.body ?? '')));
      rec.onSend();
      if (delayMs) await sleep(delayMs);
      const res = await fetch(url, init);
      const body = await res.clone().json();
      rec.received.push(body.refresh_token);
      return res;
    },
  };
  return rec;
}

/**
 * firstRefreshToken exchanges a fresh code out of band (the application's own authorization, not
 * the client under test) and returns the refresh token it gave: the start of a refresh_token client.
 */
async function firstRefreshToken(env, f, lifetimeMs) {
  const scratch = await createClient({ wasm: env.wasm });
  try {
    const { request } = scratch.encode(codeRequest(f.c, await f.authorize(lifetimeMs)));
    const res = await fetch(request.url, { method: request.method, headers: request.headers, body: request.body });
    const body = await res.json();
    ok(res.status === 200 && body.refresh_token, `the out-of-band exchange: ${res.status}`);
    return body.refresh_token;
  } finally {
    await scratch.close();
  }
}

/** checkAnswer fails unless res is a token valid now, at the fake's API too, with its schedule. */
async function checkAnswer(f, res, what) {
  ok(res.token, `${what}: ${JSON.stringify(res.error ?? res)}`);
  const now = Date.now();
  ok(res.token.expires_at_ms > now, `${what}: a token that expired ${now - res.token.expires_at_ms} ms ago`);
  ok(res.refresh_at_ms <= res.stale_at_ms && res.stale_at_ms <= res.token.expires_at_ms, `${what}: the plugin's schedule: ${JSON.stringify(res)}`);
  eq(await f.api(res.token.access_token), 200, `${what}: the token at the fake's API`);
}

/**
 * manyCalls: a refresh_token client called `calls` times, `everyMs` apart, with access tokens of
 * `lifetimeMs`: every answer a valid token, several exchanges, each with the refresh token the one
 * before it returned (the flow's lineage), none sent twice; onRefreshToken called once with each new
 * one (and its throws and rejections swallowed).
 */
export async function manyCalls(env, { lifetimeMs, calls, everyMs }) {
  const f = candescent(env);
  const replays = await replaysSince(f);
  const rec = recorder();
  const told = [];
  const client = await createClient({
    wasm: env.wasm,
    allowLoopback: true,
    fetch: rec.fetch,
    onRefreshToken(request, refreshToken) {
      told.push([request, refreshToken]);
      if (told.length % 2) throw new Error(`a throwing callback ${refreshToken}`);
      return Promise.reject(new Error(`a rejecting callback ${refreshToken}`));
    },
  });
  try {
    const rt0 = await firstRefreshToken(env, f, lifetimeMs);
    const req = Object.freeze(refreshRequest(f.c, rt0));
    const tokens = new Set();
    for (let i = 1; i <= calls; i++) {
      if (i > 1) await sleep(everyMs);
      const res = await client.token(req);
      await checkAnswer(f, res, `call ${i}`);
      tokens.add(res.token.access_token);
    }
    eq(await replays(), 0, 'replays at the fake (a used refresh token sent again)');
    const sent = rec.sent.map((b) => b.get('refresh_token'));
    ok(sent.length >= 2, `${sent.length} exchanges in ${calls} calls: the access tokens were to expire`);
    eq(tokens.size, sent.length, 'one access token per exchange');
    eq(new Set(sent).size, sent.length, 'refresh tokens sent more than once');
    eq(sent[0], rt0, "the first exchange sends the request's refresh token");
    for (let i = 1; i < sent.length; i++) eq(sent[i], rec.received[i - 1], `exchange ${i + 1} sends what exchange ${i} returned`);
    eq(told.length, sent.length, 'onRefreshToken calls (one per exchange, each a new value)');
    for (const [i, [request, rt]] of told.entries()) {
      ok(request === req, `onRefreshToken ${i + 1}: the request as given`);
      eq(rt, rec.received[i], `onRefreshToken ${i + 1}: the new refresh token`);
    }
  } finally {
    await client.close();
  }
}

/**
 * codeOnce: an authorization_code client called over more than one access token's life sends its
 * code exactly once, then the refresh tokens of its lineage (refresh_token grant), none twice.
 */
export async function codeOnce(env, { lifetimeMs, calls, everyMs }) {
  const f = candescent(env);
  const replays = await replaysSince(f);
  const rec = recorder();
  const told = [];
  const client = await createClient({ wasm: env.wasm, allowLoopback: true, fetch: rec.fetch, onRefreshToken: (_, rt) => told.push(rt) });
  try {
    const code = await f.authorize(lifetimeMs);
    const req = codeRequest(f.c, code); // not frozen: looked up by its JSON
    for (let i = 1; i <= calls; i++) {
      if (i > 1) await sleep(everyMs);
      await checkAnswer(f, await client.token(req), `call ${i}`);
    }
    eq(await replays(), 0, 'replays at the fake');
    eq(rec.sent.filter((b) => b.get('code') === code).length, 1, 'requests carrying the code');
    eq(rec.sent[0].get('grant_type'), 'authorization_code', 'the first exchange');
    ok(rec.sent.length >= 2, `${rec.sent.length} exchanges: the access tokens were to expire`);
    for (const [i, b] of rec.sent.slice(1).entries()) {
      eq(b.get('grant_type'), 'refresh_token', `exchange ${i + 2}`);
      eq(b.get('refresh_token'), rec.received[i], `exchange ${i + 2} sends what exchange ${i + 1} returned`);
    }
    eq(told.join(), rec.received.join(), 'onRefreshToken: each new refresh token once');
  } finally {
    await client.close();
  }
}

/**
 * forcedJoins: a forced fetch of a one-time grant joins the flight in progress (two exchanges of one
 * refresh token would be a replay); two forced fetches at once make one exchange; a forced fetch
 * after it makes a new one, with the newest refresh token. The same for an authorization code.
 */
export async function forcedJoins(env) {
  const f = candescent(env);
  const replays = await replaysSince(f);
  const rec = recorder({ delayMs: 300 });
  const told = [];
  const client = await createClient({ wasm: env.wasm, allowLoopback: true, fetch: rec.fetch, onRefreshToken: (request, rt) => told.push([request, rt]) });
  try {
    const req = refreshRequest(f.c, await firstRefreshToken(env, f, 0));
    const [a, b] = await Promise.all([client.token(req), client.token({ ...req, force: true })]);
    eq(await replays(), 0, 'replays after a forced fetch during a flight');
    eq(rec.sent.length, 1, 'exchanges: the forced fetch joined the flight');
    await checkAnswer(f, b, 'the forced fetch');
    eq(b.token.access_token, a.token.access_token, 'the forced fetch has the flight’s token');

    const [c, d] = await Promise.all([client.token({ ...req, force: true }), client.token({ ...req, force: true })]);
    eq(rec.sent.length, 2, 'exchanges after two forced fetches at once');
    eq(c.cached, false, 'a forced fetch fetched');
    ok(c.token.access_token !== a.token.access_token && d.token.access_token === c.token.access_token, 'the two forced fetches share one new token');
    const e = await client.token({ ...req, force: true });
    await checkAnswer(f, e, 'a forced fetch after');
    eq(rec.sent.length, 3, 'exchanges after a forced fetch alone');
    eq(rec.sent[2].get('refresh_token'), rec.received[1], 'it sends the newest refresh token');
    eq((await client.token(req)).token.access_token, e.token.access_token, 'the forced token is the one held');
    eq(told.map(([, rt]) => rt).join(), rec.received.join(), 'onRefreshToken: each new refresh token once');
    ok(told.every(([r]) => r.force === undefined && r.refresh_token === req.refresh_token), 'onRefreshToken: the credential set as given, without force');

    const code = await f.authorize(0);
    const creq = codeRequest(f.c, code);
    const [g, h] = await Promise.all([client.token({ ...creq, force: true }), client.token(creq), client.token({ ...creq, force: true })]);
    await checkAnswer(f, h, 'an authorization code, forced during its flight');
    eq(g.token.access_token, h.token.access_token, 'one token for the code');
    eq(rec.sent.filter((s) => s.get('code') === code).length, 1, 'requests carrying the code');
    eq(await replays(), 0, 'replays at the end');
  } finally {
    await client.close();
  }
}

/** A MemoryCache whose get can fail on chosen keys, or stall once (async, as a remote cache). */
class FaultyCache extends MemoryCache {
  failGet = null; // (key) => boolean: that get throws
  stallNext = 0; // the next get answers after this many ms
  async get(key) {
    if (this.failGet?.(key)) throw new Error('cache down');
    if (this.stallNext) {
      const ms = this.stallNext;
      this.stallNext = 0;
      await sleep(ms);
    }
    return super.get(key);
  }
}

/**
 * lineageUnreadable: a cache that cannot read the grant's lineage makes the flow send nothing (a
 * transport error, retryable): the request's refresh token may be a used one. The held token is
 * served meanwhile, past its stale point, until it expires. Any other failed read is a miss.
 */
export async function lineageUnreadable(env, { lifetimeMs = 2000 } = {}) {
  const f = candescent(env);
  const replays = await replaysSince(f);
  const rec = recorder();
  const cache = new FaultyCache();
  const client = await createClient({ wasm: env.wasm, allowLoopback: true, fetch: rec.fetch, cache });
  try {
    const req = Object.freeze(refreshRequest(f.c, await firstRefreshToken(env, f, lifetimeMs)));
    const first = await client.token(req);
    await checkAnswer(f, first, 'the first exchange');
    cache.failGet = (key) => key.endsWith('/grant');
    const forced = await client.token({ ...req, force: true });
    eq(await replays(), 0, 'replays after an exchange with the lineage unreadable');
    eq(forced.error?.kind, 'transport', `the forced fetch: ${JSON.stringify(forced)}`);
    eq(forced.error.retryable, true, 'retryable');
    eq(rec.sent.length, 1, 'exchanges: nothing sent without the lineage');
    await sleep(Math.max(0, first.stale_at_ms - Date.now() + 20));
    ok(Date.now() < first.token.expires_at_ms - 100, 'still before expiry (a slow machine?)');
    const held = await client.token(req);
    await checkAnswer(f, held, 'past stale_at_ms, the refresh failing');
    eq(held.token.access_token, first.token.access_token, 'the held token is served while its refresh fails');
    eq(rec.sent.length, 1, 'still nothing sent');

    cache.failGet = () => true; // every read fails: a miss for everything but the lineage
    const other = await client.token({ provider: 'candescent', client_id: f.c.config.client_id, client_secret: f.c.config.client_secret, token_url: f.c.token_url, institution_id: f.c.config.institution_id });
    ok(other.token, `client_credentials with the cache failing: ${JSON.stringify(other)}`);

    cache.failGet = null;
    const after = await client.token({ ...req, force: true });
    await checkAnswer(f, after, 'the cache back');
    eq(rec.sent.filter((b) => b.get('grant_type') === 'refresh_token').length, 2, 'refresh exchanges');
    eq(rec.sent.at(-1).get('refresh_token'), rec.received[0], "the lineage's newest refresh token");
    eq(await replays(), 0, 'replays at the end');
  } finally {
    await client.close();
  }
}

/**
 * thenNotCutShort: the "then" actions of a flow (the new token, the lineage's newest refresh token)
 * are done even when the caller gave up (abort) and while the cache is being skipped after another
 * operation timed out: otherwise the next exchange sends a used refresh token.
 */
export async function thenNotCutShort(env) {
  const f = candescent(env);
  const replays = await replaysSince(f);
  const rec = recorder({ delayMs: 600 });
  const cache = new FaultyCache();
  const client = await createClient({ wasm: env.wasm, allowLoopback: true, fetch: rec.fetch, cache });
  const refreshes = () => rec.sent.filter((b) => b.get('grant_type') === 'refresh_token');
  try {
    // The caller aborts during the exchange: it is answered at once ({error} with aborted), the flow
    // runs on.
    const req = refreshRequest(f.c, await firstRefreshToken(env, f, 0));
    const abort = new AbortController();
    const p = client.token(req, { signal: abort.signal });
    setTimeout(() => abort.abort(new Error('the caller gave up')), 100);
    const gaveUp = await p.then(
      (res) => (res.error?.aborted ? `${res.error.kind}: ${res.error.message}` : `answered ${JSON.stringify(res)}`),
      (err) => `rejected: ${err.message}`,
    );
    eq(gaveUp, "transport: aborted by the caller's signal (Error)", 'the aborted caller');
    await sleep(800); // the exchange ends
    const next = await client.token({ ...req, force: true });
    await checkAnswer(f, next, 'after an aborted caller');
    eq(refreshes().length, 2, 'refresh exchanges');
    eq(refreshes()[1].get('refresh_token'), rec.received[0], 'the aborted flow stored its new refresh token');

    // Another operation of the cache times out (250 ms) during an exchange: the cache is skipped for
    // a second, but not for the exchange's then actions.
    const req2 = refreshRequest(f.c, await firstRefreshToken(env, f, 0));
    rec.onSend = () => {
      rec.onSend = () => {};
      cache.stallNext = 400;
      client.token({ provider: 'candescent', client_id: 'other', client_secret: 's', token_url: 'http://127.0.0.1:9/none', institution_id: '1' }).catch(() => {});
    };
    const first = await client.token(req2);
    await checkAnswer(f, first, 'the exchange during a cache timeout');
    await sleep(1100); // the cache is read again
    const again = await client.token({ ...req2, force: true });
    eq(await replays(), 0, 'replays after an exchange during a cache timeout');
    await checkAnswer(f, again, 'the next exchange');
    eq(refreshes().at(-1).get('refresh_token'), rec.received.at(-2), 'it sends the refresh token the one before returned');
  } finally {
    await client.close();
  }
}
