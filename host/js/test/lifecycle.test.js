// testdata/lifecycle/token_life.json through this package: the client's clock (the test-only `now`
// option, given to the plugin as now_ms) and its cache's are moved to each event's time, never
// slept; the provider is a loopback server whose answers the events script; an API's 401 is a stub
// behind the `fetch` option, which client.fetch sends through. The Go host (host/lifecycle_test.go)
// and the Envoy filter (plugin/envoy/lifecycle_test.go) run the same file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from '../src/index.js';
import { WASM, TESTDATA, serve } from './support.js';

const scenario = JSON.parse(readFileSync(join(TESTDATA, 'lifecycle', 'token_life.json'), 'utf8'));
const API = 'http://api.example/x';

/**
 * ClockCache is a cache whose entries expire by the test's clock. It counts its operations, and the
 * stores that are not store-if-absent: each token request's flow ends with one (the token, or the
 * gate that remembers the failure).
 */
class ClockCache {
  #entries = new Map();
  ops = 0;
  stores = 0;
  constructor(now) {
    this.now = now;
  }
  #live(key) {
    const e = this.#entries.get(key);
    if (e && this.now() >= e.expiresAt) this.#entries.delete(key);
    return this.#entries.get(key);
  }
  get(key) {
    this.ops++;
    return this.#live(key)?.value;
  }
  set(key, value, ttlMs, nx) {
    this.ops++;
    if (nx && this.#live(key)) return false;
    if (!nx) this.stores++;
    this.#entries.set(key, { value, expiresAt: this.now() + ttlMs });
    return true;
  }
  delete(key, ifValue) {
    this.ops++;
    if (ifValue === undefined || this.#live(key)?.value === ifValue) this.#entries.delete(key);
  }
}

/** labels binds the scenario's token labels (A, B, ...) to the access tokens the client gets. */
function labels() {
  const bound = new Map();
  return (label, tok, what) => {
    if (bound.has(label)) return assert.equal(tok, bound.get(label), `${what}: want token ${label}`);
    for (const [other, t] of bound) assert.notEqual(tok, t, `${what}: token ${other} again, want a new token ${label}`);
    bound.set(label, tok);
  };
}

test('a token life, the clock moved (testdata/lifecycle/token_life.json)', async () => {
  const t0 = Date.now();
  let now = t0;
  let script = { status: 200 };
  const provider = await serve((req, res, n) => {
    if (script.status !== 200) {
      res.writeHead(script.status, script.retry_after ? { 'Retry-After': script.retry_after } : {});
      return res.end();
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ access_token: `life-token-${n}`, expires_in: scenario.life_ms / 1000, token_type: 'Bearer', scope: 'external' }));
  });
  const cache = new ClockCache(() => now);
  let inflight = 0;
  let answered = 0; // token responses the client received
  let refused = null; // the API refuses the first token it is sent in an api_401 event
  let apiSent = [];
  const client = await createClient({
    wasm: WASM,
    allowLoopback: true,
    cache,
    now: () => now,
    async fetch(url, init) {
      if (String(url) === API) {
        const tok = new Headers(init?.headers).get('Authorization')?.replace(/^Bearer /, '');
        apiSent.push(tok);
        refused ??= tok;
        return new Response(null, { status: tok === refused ? 401 : 200 });
      }
      inflight++;
      try {
        const res = await fetch(url, init);
        answered++;
        return res;
      } finally {
        inflight--;
      }
    },
  });
  /** settle waits until no flow of the client runs: no token request in flight, every one's end stored. */
  const settle = async () => {
    await new Promise(setImmediate); // a flow started by the call reaches its token request
    while (inflight > 0 || cache.stores < answered) await new Promise((r) => setTimeout(r, 1));
    await new Promise(setImmediate); // and its answer is held
  };
  const req = Object.freeze({ ...scenario.request, token_url: provider.url });
  const check = labels();
  /** schedule checks a token answer's schedule, from the time its token was fetched. */
  const schedule = (res, what) => {
    const fetched = res.token.expires_at_ms - scenario.life_ms;
    assert.ok(fetched >= t0 && fetched <= now, `${what}: a token fetched at ${fetched - t0} ms`);
    assert.equal(res.refresh_at_ms - fetched, scenario.schedule.refresh_at_ms, `${what}: refresh_at_ms`);
    assert.equal(res.stale_at_ms - fetched, scenario.schedule.stale_at_ms, `${what}: stale_at_ms`);
  };
  let last; // the token the last call got
  try {
    for (const [i, ev] of scenario.events.entries()) {
      const what = `event ${i + 1} (${ev.at_ms / 1000} s, ${ev.call}): ${ev.note}`;
      now = t0 + ev.at_ms;
      if (ev.provider) script = ev.provider;
      if (ev.call === 'token') {
        const [ops, sent] = [cache.ops, answered];
        const res = await client.token(req);
        const tok = res.token?.access_token;
        let decision;
        if (res.error) decision = 'error';
        else if (cache.ops === ops) decision = 'memory'; // no flow
        else if (tok !== last) decision = 'fetch';
        else if (answered > sent) decision = 'fetch_failed_held'; // the caller waited for the failure
        // The held token and a flow that did not reach the provider before the call returned: a
        // refresh in the background, or (a closed gate) a fetch that failed without sending. Only
        // the schedule tells them apart here (both resolve within microtasks).
        else decision = now < res.stale_at_ms ? 'background' : 'fetch_failed_held';
        await settle();
        assert.equal(decision, ev.want.decision, `${what}: ${JSON.stringify(res)}`);
        if (res.error) {
          const { kind, retryable, retry_after_ms } = res.error;
          assert.deepEqual({ kind, retryable, retry_after_ms }, ev.want.error, what);
        } else {
          check(ev.want.token, tok, what);
          schedule(res, what);
          if (decision === 'fetch') assert.equal(res.token.expires_at_ms, now + scenario.life_ms, `${what}: fetched now`);
          last = tok;
        }
      } else if (ev.call === 'api_401') {
        refused = null;
        apiSent = [];
        const resp = await client.fetch(req, API);
        const retried = apiSent.length === 2 && apiSent[1] !== apiSent[0] && resp.status === 200;
        assert.ok(retried || (apiSent.length === 1 && resp.status === 401), `${what}: ${apiSent.length} API requests, status ${resp.status}`);
        assert.equal(retried, ev.want.retry, `${what}: retried`);
        const next = await client.token(req);
        assert.equal(next.token?.access_token, apiSent.at(-1), `${what}: the next call gets the token the API was last sent`);
        check(ev.want.token, next.token.access_token, what);
        schedule(next, what);
        last = next.token.access_token;
        await settle();
      } else {
        assert.fail(`${what}: unknown call`);
      }
      assert.equal(provider.count(), ev.want.requests, `${what}: token requests so far`);
    }
  } finally {
    await client.close();
    await provider.close();
  }
});
