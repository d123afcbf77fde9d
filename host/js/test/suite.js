// The suite every runtime runs (Node 20, Node 26, Deno, Bun, workerd): plain JavaScript, no runtime
// API but WebAssembly, fetch and timers. `env` comes from the runner (test/runtimes.js):
//   wasm      the plugin (bytes or a WebAssembly.Module)
//   vectors   every vector of testdata/ ({name, doc, export, rawInput, input, want, steps})
//   fakes     `tokenwasm fakes`' line: {provider: {token_url, api_url, stats_url, config}}
//             (the Candescent fake mints one-time codes: test/rotation.js; smart's client key,
//             a PKCS #8 PEM, is given as smart.key_pem: test/smart.js)
//   aux       the runner's loopback server: /issue/<id>?delay=ms, /rl/<id> (429), /count/<id>
//   rss()     resident memory in bytes, as this runtime can tell it (async)
// Each case is [name, async (env) => void] and throws on failure.
import { createClient, MemoryCache, TokenError } from '../src/edge.js'; // no node: module: this file runs in workerd too
import { match } from './match.js';
import { manyCalls, codeOnce, forcedJoins, lineageUnreadable, thenNotCutShort } from './rotation.js';
import { backendServices } from './smart.js';

const MiB = 1 << 20;

function ok(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(got, want, msg) {
  if (got !== want) throw new Error(`${msg}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

/** checkVector runs one vector, a token_step flow included, as internal/conformance's Check does. */
export function checkVector(call, v) {
  let got = call(v.export, v.rawInput);
  for (const [i, s] of (v.steps ?? []).entries()) {
    const { state, ...rest } = got;
    ok(typeof state === 'string', `step ${i}: no state in ${JSON.stringify(got)}`);
    const err = match(s.want, rest);
    ok(err === null, `step ${i}: ${err}`);
    const next = { request: s.request ?? v.input.request, state: s.state ?? state };
    if (s.answer !== undefined) next.answer = s.answer;
    if (v.input.op) next.op = v.input.op;
    got = call(v.export, JSON.stringify(next));
  }
  const err = match(v.want, got);
  ok(err === null, `${v.name}: ${err}\ngot ${JSON.stringify(got)}`);
}

const stats = async (env, provider) => (await (await fetch(env.fakes[provider].stats_url)).json()).requests;
const count = async (env, id) => Number(await (await fetch(`${env.aux}/count/${id}`)).text());
const credentials = (env, provider, extra = {}) => {
  const { config, token_url: tokenURL } = env.fakes[provider];
  return { provider, client_id: config.client_id, client_secret: config.client_secret, token_url: tokenURL, ...extra };
};
let ids = 0;
const uid = (tag) => `${tag}-${Date.now()}-${++ids}`;
const niko = (url, extra = {}) => ({ provider: 'nikohealth', client_id: 'niko-client', client_secret: 'niko-secret-1', token_url: url, ...extra });

export const cases = [
  [
    'every vector',
    async (env) => {
      const client = await createClient({ wasm: env.wasm });
      try {
        ok(env.vectors.length >= 80, `${env.vectors.length} vectors`);
        ok(env.vectors.some((v) => v.export === 'token_step'), 'token_step vectors');
        for (const v of env.vectors) checkVector(client.call, v);
      } finally {
        await client.close();
      }
    },
  ],
  [
    'a token from each of the four fakes, then from the cache, counted at the fakes',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      try {
        const desc = env.fakes.candescent.config;
        for (const req of [
          credentials(env, 'candid'),
          credentials(env, 'pattern'),
          credentials(env, 'candescent', { institution_id: desc.institution_id }),
          credentials(env, 'candescent', { grant_type: 'password', institution_id: desc.institution_id, username: desc.username, password: desc.password }),
          credentials(env, 'nikohealth'),
        ]) {
          const name = `${req.provider} ${req.grant_type ?? 'client_credentials'}`;
          const start = await stats(env, req.provider);
          const first = await client.token(req);
          ok(first.token, `${name}: ${JSON.stringify(first)}`);
          eq(first.cached, false, `${name}: first cached`);
          eq(first.token.token_type, 'Bearer', `${name}: token_type`);
          ok(Math.abs(first.token.issued_at_ms - Date.now()) < 60000, `${name}: issued_at_ms is now (the real clock)`);
          if (req.grant_type === 'password') ok(first.token.refresh_token, `${name}: the password grant returns a refresh token`);
          const second = await client.token(req);
          eq(second.cached, true, `${name}: second cached`);
          eq(second.token.access_token, first.token.access_token, `${name}: the same token`);
          eq(second.token.refresh_token, undefined, `${name}: a cached token never carries refresh_token`);
          eq((await stats(env, req.provider)) - start, 1, `${name}: requests at the fake`);
          const api = await fetch(env.fakes[req.provider].api_url, { headers: { Authorization: `Bearer ${first.token.access_token}` } });
          eq(api.status, 200, `${name}: the token works at the fake's API`);
        }
      } finally {
        await client.close();
      }
    },
  ],
  [
    '200 concurrent callers on a cold cache make 1 request',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      try {
        const id = uid('herd');
        const req = niko(`${env.aux}/issue/${id}?delay=200`);
        const all = await Promise.all(Array.from({ length: 200 }, () => client.token(req)));
        eq(await count(env, id), 1, 'requests at the provider');
        for (const r of all) eq(r.token?.access_token, `tok-${id}-1`, 'every caller got the one token');
        eq((await client.token(req)).cached, true, 'then cached');
      } finally {
        await client.close();
      }
    },
  ],
  [
    'fleet lock over a shared cache: two clients make 1 request',
    async (env) => {
      const cache = new MemoryCache();
      const [a, b] = await Promise.all([0, 1].map(() => createClient({ wasm: env.wasm, allowLoopback: true, cache })));
      try {
        const id = uid('fleet');
        const req = niko(`${env.aux}/issue/${id}?delay=300`, { fleet_lock: true });
        const [ra, rb] = await Promise.all([a.token(req), b.token(req)]);
        eq(await count(env, id), 1, 'requests at the provider');
        eq(ra.token?.access_token, `tok-${id}-1`, JSON.stringify(ra));
        eq(rb.token?.access_token, `tok-${id}-1`, JSON.stringify(rb));
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    },
  ],
  [
    'the 429 gate: later calls, forced or not, send nothing until Retry-After',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      try {
        const id = uid('gate');
        const req = niko(`${env.aux}/rl/${id}`);
        const first = await client.token(req);
        eq(first.error?.kind, 'rate_limited', JSON.stringify(first));
        eq(first.error.retry_after_ms, 30000, 'Retry-After: 30');
        for (const extra of [{}, { force: true }]) {
          const gated = await client.token({ ...req, ...extra });
          eq(gated.error?.kind, 'rate_limited', JSON.stringify(gated));
          eq(gated.error.status, undefined, 'answered by the gate');
          ok(gated.error.retry_after_ms > 20000 && gated.error.retry_after_ms <= 30000, `retry_after_ms ${gated.error.retry_after_ms}`);
        }
        eq(await count(env, id), 1, 'requests at the provider');
      } finally {
        await client.close();
      }
    },
  ],
  [
    'policy refusals: loopback without the opt-in, plain http, a host outside the allow-list',
    async (env) => {
      const strict = await createClient({ wasm: env.wasm });
      const fetched = [];
      const listed = await createClient({ wasm: env.wasm, allowedHosts: ['idp.example.com'], fetch: async (u) => fetched.push(String(u)) });
      try {
        const start = await stats(env, 'nikohealth');
        for (const [client, req, why] of [
          [strict, credentials(env, 'nikohealth'), /loopback host 127\.0\.0\.1 is not allowed/],
          [strict, credentials(env, 'nikohealth', { token_url: 'http://acme.nikohealth.com/token' }), /https only/],
          [listed, { provider: 'pattern', client_id: 'c', client_secret: 'secret-1', token_url: 'https://idp.example.net/token' }, /idp\.example\.net is not an allowed token host/],
          [listed, { provider: 'pattern', client_id: 'c', client_secret: 'secret-1', token_url: 'https://idp.example.com:6379/token' }, /idp\.example\.com:6379 is not an allowed token host/],
        ]) {
          const res = await client.token(req);
          eq(res.error?.kind, 'policy', JSON.stringify(res));
          eq(res.error.retryable, false, 'policy is not retryable');
          ok(why.test(res.error.message), `${res.error.message} !~ ${why}`);
        }
        eq(await stats(env, 'nikohealth'), start, 'nothing reached the fake');
        eq(fetched.length, 0, 'nothing was fetched');
      } finally {
        await Promise.all([strict.close(), listed.close()]);
      }
    },
  ],
  [
    'fetch adds the token; a 401 invalidates it once and retries once',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      try {
        const id = uid('api');
        const req = niko(`${env.aux}/issue/${id}`);
        const res = await client.fetch(req, `${env.aux}/api/${id}?reject=tok-${id}-1`);
        eq(res.status, 200, 'the retry succeeded');
        eq(await res.text(), `hello tok-${id}-2`, 'with the fresh token');
        eq(await count(env, id), 2, 'two token requests: the first, and one after the 401');
        const again = await client.fetch(req, `${env.aux}/api/${id}?reject=all`);
        eq(again.status, 401, 'a second 401 is the answer');
      } finally {
        await client.close();
      }
    },
  ],
  [
    'one error style: token() answers every failure, an abort too, as {error}; fetch() rejects with a TokenError, or as fetch does',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      const outcome = (p) =>
        p.then(
          (v) => ({ value: v }),
          (err) => ({ err }),
        );
      try {
        // An abort during a fetch: answered at once, the flow runs on and its token is cached.
        const id = uid('abort');
        const slow = niko(`${env.aux}/issue/${id}?delay=400`);
        const ctl = new AbortController();
        setTimeout(() => ctl.abort(), 50);
        const t0 = performance.now();
        const { value: aborted, err } = await outcome(client.token(slow, { signal: ctl.signal }));
        ok(!err, `token() rejected: ${err}`);
        ok(performance.now() - t0 < 350, `the aborted caller waited ${Math.round(performance.now() - t0)} ms`);
        eq(JSON.stringify(aborted), JSON.stringify({ error: { kind: 'transport', message: "aborted by the caller's signal (AbortError)", retryable: true, aborted: true } }), 'the aborted answer');
        const after = await client.token(slow);
        eq(after.token?.access_token, `tok-${id}-1`, 'the flow ran on');
        eq(await count(env, id), 1, 'one token request');
        // Already aborted, and a timeout signal.
        eq((await client.token(niko(`${env.aux}/issue/${uid('pre')}`), { signal: AbortSignal.abort() })).error?.aborted, true, 'an aborted signal');
        const timedOut = await client.token(niko(`${env.aux}/issue/${uid('timeout')}?delay=400`), { signal: AbortSignal.timeout(50) });
        eq(timedOut.error?.message, "aborted by the caller's signal (TimeoutError)", JSON.stringify(timedOut));

        // fetch(): no token is a TokenError; an abort while the token is fetched rejects with the
        // signal's reason, as fetch does; a failure of the API request is fetch's own error.
        const rl = niko(`${env.aux}/rl/${uid('rl')}`);
        eq((await client.token(rl)).error?.kind, 'rate_limited', 'token() answers the 429');
        const refused = await outcome(client.fetch(rl, `${env.aux}/api/x`));
        ok(refused.err instanceof TokenError && refused.err.error.kind === 'rate_limited', `fetch() without a token: ${refused.err}`);
        const reason = new Error('the caller gave up');
        const ctl2 = new AbortController();
        setTimeout(() => ctl2.abort(reason), 50);
        const gaveUp = await outcome(client.fetch(niko(`${env.aux}/issue/${uid('fetch-abort')}?delay=400`), `${env.aux}/api/x`, { signal: ctl2.signal }));
        ok(gaveUp.err === reason, `fetch() aborted while fetching the token: ${gaveUp.err}`);
        const down = await outcome(client.fetch(niko(`${env.aux}/issue/${uid('api-down')}`), 'http://127.0.0.1:9/api'));
        ok(down.err && !(down.err instanceof TokenError), `fetch() with the API unreachable: ${down.err}`);

        // Called wrongly: a request that is not an object, a closed client.
        ok((await outcome(client.token('not a request'))).err instanceof TypeError, 'a string request');
      } finally {
        await client.close();
      }
      const closed = await outcome(client.token(niko(`${env.aux}/issue/${uid('closed')}`)));
      ok(/client is closed/.test(closed.err?.message), `a closed client: ${JSON.stringify(closed)}`);
    },
  ],
  // One-time grants (test/rotation.js; test/rotation.test.js runs the longer versions in Node).
  ['one-time grants: a refresh_token client, 8 calls over 3.5 s with 2 s access tokens, no refresh token sent twice', (env) => manyCalls(env, { lifetimeMs: 2000, calls: 8, everyMs: 500 })],
  ['one-time grants: an authorization_code client sends its code once', (env) => codeOnce(env, { lifetimeMs: 2000, calls: 6, everyMs: 500 })],
  ['one-time grants: a forced fetch joins the flight in progress', forcedJoins],
  ['one-time grants: a lineage the cache cannot read sends nothing; the held token is served', lineageUnreadable],
  ["one-time grants: a flow's then actions are not cut short", thenNotCutShort],
  ["SMART Backend Services: the fake's PKCS #8 key, and WebCrypto RS384 and ES384 keys whose JWK Set is registered; the token URL discovered", backendServices],
  [
    '50,000 cached calls with bounded memory, then 20,000 plugin calls on one instance',
    async (env) => {
      const client = await createClient({ wasm: env.wasm, allowLoopback: true });
      try {
        const id = uid('leak');
        const req = niko(`${env.aux}/issue/${id}`);
        const first = await client.token(req);
        ok(first.token, JSON.stringify(first));
        const marks = {};
        for (let i = 1; i <= 50000; i++) {
          const r = await client.token(req);
          if (r.token.access_token !== first.token.access_token) throw new Error(`call ${i}: ${JSON.stringify(r)}`);
          if (i === 10000 || i === 50000) marks[i] = await env.rss();
        }
        eq(await count(env, id), 1, 'one request for 50,001 calls');
        ok(marks[50000] - marks[10000] < 16 * MiB, `rss grew ${((marks[50000] - marks[10000]) / MiB).toFixed(1)} MiB from call 10,000 to 50,000`);
        const input = JSON.stringify({ request: { ...req, now_ms: 1767225600000 } });
        const want = JSON.stringify(client.call('token_step', input).next);
        for (let i = 1; i <= 20000; i++) {
          const got = client.call('token_step', input);
          if (JSON.stringify(got.next) !== want) throw new Error(`plugin call ${i}: ${JSON.stringify(got)}`);
        }
      } finally {
        await client.close();
      }
    },
  ],
];

/** run runs every case in order and returns [{name, ok, ms, error?}]. */
export async function run(env, log = () => {}) {
  const results = [];
  for (const [name, fn] of cases) {
    const t0 = performance.now();
    try {
      await fn(env);
      results.push({ name, ok: true, ms: Math.round(performance.now() - t0) });
    } catch (err) {
      results.push({ name, ok: false, ms: Math.round(performance.now() - t0), error: String(err?.stack ?? err) });
    }
    log(results.at(-1));
  }
  return results;
}
