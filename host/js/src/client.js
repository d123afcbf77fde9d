// createClient: the plugin compiled once, the token flow driven one `token_step` at a time with fetch
// and the cache (no thread ever blocks on I/O), and a valid token served from memory without
// entering wasm, refreshed ahead of expiry in the background, one fetch per credential set at a time.
// The flow's rules live in the plugin (plugin/core); this file only performs what it asks for.
import { Instance } from './kernel.js';
import { httpSender, smartDiscovery, DEFAULT_TIMEOUT_MS } from './http.js';
import { MemoryCache } from './cache.js';

// Refresh timing is the plugin's: each token answer carries refresh_at_ms and stale_at_ms. A held
// token is served from memory until refresh_at_ms, refreshed in the background from then (callers
// keep getting it), and fetched in the caller's path from stale_at_ms; if that fetch fails, it is
// still served until it expires.
const MAX_STEPS = 16; // a flow is at most 6 steps (abi/ABI.md, token_step)
const MAX_SOURCES = 10_000; // credential sets held in memory; the oldest idle one goes first
const PENDING_GRACE_MS = 3_000; // waiting out another host's fetch: its timeout_ms plus this
// A cache slower than this is down (host/rediscache's default Timeout): the operation is a failure,
// and the cache is skipped for CACHE_RETRY_MS (rediscache's Retry), so a Redis that stalls (node-redis
// queues commands while disconnected) costs callers a miss, never a hang or an expired flow.
const CACHE_TIMEOUT_MS = 250;
const CACHE_RETRY_MS = 1_000;
// client.jwks()'s headers: servers may keep the document this long (see README.md, "Key rotation").
const JWKS_HEADERS = Object.freeze({ 'Content-Type': 'application/jwk-set+json', 'Cache-Control': 'public, max-age=300', 'X-Content-Type-Options': 'nosniff' });

/** TokenError is what client.fetch throws when no token could be had: `error` is the ABI's Error. */
export class TokenError extends Error {
  name = 'TokenError';
  constructor(error) {
    // The plugin's messages and the provider's description (redacted by the plugin) hold no secret;
    // like Go's Error(), the message says the status and what the provider said.
    let msg = `tokenwasm: ${error.kind}${error.status ? ` (HTTP ${error.status})` : ''}: ${error.message}`;
    if (error.oauth_error && error.oauth_error !== error.kind) msg += `; provider error ${JSON.stringify(error.oauth_error)}`;
    if (error.description) msg += `; provider says ${JSON.stringify(error.description)}`;
    super(msg);
    this.error = error;
  }
}

/**
 * loadModule compiles the plugin once: its bytes or a WebAssembly.Module. No runtime API beyond
 * WebAssembly, so nothing on a Worker's import graph names a `node:` module: the Node, Deno and Bun
 * entry (index.js) also reads a path or file URL, and the package's own plugin by default.
 */
export async function loadModule(wasm) {
  if (wasm instanceof WebAssembly.Module) return wasm;
  if (wasm === undefined) {
    throw new TypeError("tokenwasm: pass the plugin as wasm, a WebAssembly.Module (in a Worker: import wasm from 'tokenwasm/tokenwasm.wasm')");
  }
  if (!(wasm instanceof ArrayBuffer || ArrayBuffer.isView(wasm))) {
    if (typeof wasm === 'string' || wasm instanceof URL) {
      throw new TypeError('tokenwasm: a path or file URL is read in Node, Deno and Bun only; pass the plugin bytes or a WebAssembly.Module');
    }
    throw new TypeError('tokenwasm: wasm must be the plugin bytes or a WebAssembly.Module');
  }
  return WebAssembly.compile(wasm);
}

/**
 * deepFrozen reports whether v can never serialize differently but through a toJSON: v and every
 * object inside it frozen plain objects or arrays whose members are all data properties, each pushed
 * on objects. A getter or a class (whose prototype may have one) could answer differently from call
 * to call (one frozen object serving several tenants), and so could a function or a bigint
 * (JSON.stringify calls their toJSON too, and a bigint's is BigInt.prototype's), so such a value is
 * never taken by its identity alone. A toJSON can appear on any of the objects later (given to
 * Object.prototype or Array.prototype, or answered by a Proxy's get trap: a Proxy of a frozen object
 * is frozen too), so the caller reads each one's toJSON on every check (sameAsRead).
 */
function deepFrozen(v, objects) {
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return typeof v !== 'bigint';
  if (typeof v === 'function') return false;
  const proto = Object.getPrototypeOf(v);
  if (!Object.isFrozen(v) || (proto !== Object.prototype && proto !== Array.prototype && proto !== null)) return false;
  const members = Object.getOwnPropertyDescriptors(v);
  if ('toJSON' in members || v.toJSON !== undefined) return false;
  objects.push(v);
  for (const k in members) if (!('value' in members[k]) || !deepFrozen(members[k].value, objects)) return false;
  return true;
}

/**
 * fingerprint reads a request object once: its own enumerable keys, in order, and their values, and
 * the objects inside deep-frozen members, or null when the object is not one a fingerprint can stand
 * for (not a plain object, a toJSON, or a member that is not deep-frozen: an object that could change
 * inside without the fingerprint seeing it, a function or a bigint). Primitives are compared by
 * value, deep-frozen members by identity.
 */
function fingerprint(req) {
  if (req === null || typeof req !== 'object' || Array.isArray(req) || req.toJSON !== undefined) return null;
  const proto = Object.getPrototypeOf(req);
  if (proto !== Object.prototype && proto !== null) return null;
  const keys = Object.keys(req);
  const values = new Array(keys.length);
  const objects = [];
  for (let i = 0; i < keys.length; i++) {
    const v = req[keys[i]];
    if (!deepFrozen(v, objects)) return null;
    values[i] = v;
  }
  return { keys, values, objects };
}

/**
 * sameAsRead reports whether req reads now as it did when fingerprinted (fp): the same keys in the
 * same order, each value the same (===), and no toJSON on it or on any object inside a member. A
 * request mutated in any member, added or removed, or given a toJSON anywhere, is not.
 */
function sameAsRead(req, fp) {
  if (req.toJSON !== undefined) return false;
  const keys = Object.keys(req);
  const k = fp.keys;
  if (keys.length !== k.length) return false;
  const values = fp.values;
  for (let i = 0; i < k.length; i++) if (keys[i] !== k[i] || req[k[i]] !== values[i]) return false;
  const objects = fp.objects;
  for (let i = 0; i < objects.length; i++) if (objects[i].toJSON !== undefined) return false;
  return true;
}

/** withMember returns the JSON object text `json` with one more member (name: a JSON value). */
const withMember = (json, name, value) => (json === '{}' ? `{"${name}":${value}}` : `${json.slice(0, -1)},"${name}":${value}}`);

/** withJSON is withMember with a value as JSON.stringify writes it; one it omits (undefined) is left out. */
const withJSON = (json, name, value) => {
  const v = JSON.stringify(value);
  return v === undefined ? json : withMember(json, name, v);
};

/**
 * hold makes a held token of a token answer: the answer served from memory and the plugin's schedule
 * for it. An answer without the schedule (a plugin older than it) is never served from memory
 * without a flow, only when a fetch fails before it expires.
 */
function hold({ token, refresh_at_ms: refreshAt, stale_at_ms: staleAt }) {
  const { refresh_token: _never, ...t } = token; // a token served again never carries refresh_token
  const when = (ms) => (Number.isFinite(ms) ? Math.min(ms, t.expires_at_ms) : -Infinity);
  const schedule = Number.isFinite(refreshAt) && Number.isFinite(staleAt) ? { refresh_at_ms: refreshAt, stale_at_ms: staleAt } : {};
  return {
    answer: Object.freeze({ token: Object.freeze(t), cached: true, ...schedule }),
    refreshAt: when(refreshAt), // before this, serve without refreshing
    staleAt: when(staleAt), // before this, serve (and refresh in the background)
  };
}

/** oneTime reports whether a request's grant uses up its credential when sent (the flow's lineage). */
const oneTime = (req) => req?.grant_type === 'refresh_token' || req?.grant_type === 'authorization_code';

/**
 * A Source serves the tokens of one credential set (one request's JSON): hits from memory, one
 * flight at a time, refresh ahead with backoff. Its slot picks the instance its steps run on, so an
 * instance's memory of the last request it prepared stays useful while flows interleave.
 */
class Source {
  held = null;
  flight = null;
  refreshing = false;
  retryAt = 0; // no background refresh before this: the plugin's retry_after_ms after a failure
  gone = false; // left the map: an object that found it by identity looks its JSON up again
  constructor(json, slot) {
    this.json = json;
    this.slot = slot;
  }
}

/**
 * createClient compiles the plugin and returns a client. See index.d.ts for the options and the
 * answers; README.md for each runtime.
 */
export async function createClient({ wasm, allowedHosts = [], allowLoopback = false, cache = new MemoryCache(), logger, fetch: fetchImpl, instances = 4, onRefreshToken, now, signers, memoryLimitBytes } = {}) {
  if (onRefreshToken !== undefined && typeof onRefreshToken !== 'function') throw new TypeError('tokenwasm: onRefreshToken must be a function');
  if (now !== undefined && typeof now !== 'function') throw new TypeError('tokenwasm: now must be a function');
  // For tests: `now` is the clock the held tokens' schedule is judged by, and the plugin's (now_ms),
  // so a test moves time instead of sleeping. Waits and timeouts stay on the wall clock.
  const clock = now ?? Date.now;
  const send = httpSender({ allowLoopback, allowedHosts, fetch: fetchImpl, logger }); // throws on a bad allow-list
  const discover = smartDiscovery({ allowLoopback, allowedHosts, fetch: fetchImpl, logger });
  // The keys that answer the sign action (src/sign.js, loaded only by a client that signs: a worker
  // that does not sign needs no module beyond the ones it had). Without signers, sign is answered
  // with nothing and a private_key_jwt request ends with signing_required.
  const signer = signers === undefined ? null : await (await import('./sign.js')).createSigners(signers);
  const module = await loadModule(wasm);
  const doFetch = fetchImpl ?? ((input, init) => fetch(input, init));
  const warn = (msg, attrs) => {
    try {
      logger?.warn?.(msg, attrs);
    } catch {}
  };
  const pool = new Array(Math.max(1, instances | 0)).fill(null);
  pool[0] = new Instance(module, {}, { memoryLimitBytes }); // the first one now, so a broken plugin (or cap) fails here
  const sources = new Map(); // request JSON -> Source
  const known = new WeakMap(); // a request object -> {s: its Source, fp: its fingerprint}, without JSON.stringify
  const flights = new Set(); // every flow in progress: close() waits for them
  let nextSlot = 0;
  let closed = false;
  let cacheDownUntil = 0;
  // A cache shared across processes (cache.shared, as RedisCache) takes the fleet lock on every fetch,
  // as the Go host does for its SharedCache: a mixed Go and JS fleet then makes one fetch per token.
  const fleetJSON = cache.shared === true ? (json) => withMember(json, 'fleet_lock', 'true') : (json) => json;

  /**
   * cacheOp runs one cache operation, bounded by CACHE_TIMEOUT_MS; a sync answer is returned as is.
   * While the cache is skipped (one timed out recently) it fails at once, unless `always`: the then
   * actions of a flow (the new token, a grant's newest refresh token, the lock's release) are tried
   * whatever happened to other operations.
   */
  function cacheOp(always, name, ...args) {
    if (!always && Date.now() < cacheDownUntil) throw new Error('the cache timed out recently');
    const p = cache[name](...args);
    if (typeof p?.then !== 'function') return p;
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => {
        cacheDownUntil = Date.now() + CACHE_RETRY_MS;
        warn(`tokenwasm: cache ${name} timed out after ${CACHE_TIMEOUT_MS} ms; skipping the cache for ${CACHE_RETRY_MS} ms`, {});
        reject(new Error('cache timeout'));
      }, CACHE_TIMEOUT_MS);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  /** call runs one export on instance `slot` and returns its parsed answer; a trap replaces it. */
  function call(name, input, slot = 0) {
    let inst = pool[slot];
    if (!inst || inst.broken) inst = pool[slot] = new Instance(module, {}, { memoryLimitBytes }); // broken: trapped, or over its memory cap
    const raw = input === undefined ? '' : typeof input === 'string' ? input : JSON.stringify(input);
    return JSON.parse(inst.call(name, raw));
  }

  /** open throws once the client is closed. */
  function open() {
    if (closed) throw new Error('tokenwasm: client is closed');
    return true;
  }

  /**
   * perform does one import a step asked for and returns its answer (undefined: none). Never throws.
   * `then`: the action is one of a final answer's then actions (see cacheOp).
   */
  async function perform({ import: name, input }, then = false) {
    switch (name) {
      case 'http_send':
        return send(input);
      case 'cache_get':
        try {
          const value = await cacheOp(then, 'get', String(input.key));
          return typeof value === 'string' ? { hit: true, value } : { hit: false };
        } catch (err) {
          // Said, not hidden as a bare miss (abi/ABI.md, cache_get): the flow reads a failure as a
          // miss, except for a one-time grant's lineage, where it sends nothing rather than a
          // refresh token that may be a used one.
          const error = err?.name ?? 'Error';
          warn('tokenwasm: cache get failed', { error });
          return { hit: false, error };
        }
      case 'cache_set':
        try {
          return { stored: Boolean(await cacheOp(then, 'set', String(input.key), String(input.value), input.ttl_ms, input.nx === true)) };
        } catch (err) {
          warn('tokenwasm: cache set failed', { error: err?.name ?? 'Error' });
          return { error: `cache_set: ${err?.name ?? 'Error'}` };
        }
      case 'cache_delete':
        try {
          await cacheOp(then, 'delete', String(input.key), typeof input.if_value === 'string' ? input.if_value : undefined);
        } catch (err) {
          warn('tokenwasm: cache delete failed', { error: err?.name ?? 'Error' });
          return { error: `cache_delete: ${err?.name ?? 'Error'}` };
        }
        return {};
      case 'sign': {
        if (!signer) return undefined;
        const answer = await signer.sign(input);
        if (answer.error) warn('tokenwasm: signing a client assertion failed', { kid: input?.kid, alg: input?.alg, error: answer.error });
        return answer;
      }
      default:
        return undefined;
    }
  }

  /**
   * drive runs one token_step flow for the request JSON (op '' or 'invalidate') and returns its final
   * answer, after the "then" actions: a one-time grant's newest refresh token is stored before anyone
   * is answered, so the next flow sends it. Nothing a caller does stops a flow: an aborted caller is
   * only detached from it (abortable). If the plugin fails mid-flow, a fleet lock it took is
   * released, so other hosts do not wait out its TTL.
   */
  async function drive(json, op, slot) {
    const resolved = await discovered(json);
    if (typeof resolved !== 'string') return resolved; // discovery failed: nothing was sent
    json = resolved;
    if (now) json = withMember(json, 'now_ms', Math.floor(now()));
    let input = op ? `{"request":${json},"op":"${op}"}` : `{"request":${json}}`;
    let lock = null;
    try {
      for (let i = 0; i < MAX_STEPS; i++) {
        const out = call('token_step', input, slot);
        if (!out.next) {
          const { then, ...final } = out;
          let notDropped = false;
          let ok = true; // an action marked after_ok only if every one before it succeeded
          for (const a of then ?? []) {
            if (a.after_ok && !ok) continue;
            const answer = await perform(a, true); // in order: the lock release follows the stores
            if (answer?.error !== undefined) ok = false;
            notDropped ||= a.import === 'cache_delete' && a.input?.if_value === undefined && answer?.error !== undefined;
          }
          if (notDropped && op === 'invalidate' && !final.error) {
            // The token is still in the cache (a shared one may serve it again once it is back):
            // the caller must know, as Go's Invalidate returns a NotDroppedError.
            return { error: { kind: 'transport', retryable: true, not_dropped: true, message: 'the cache could not drop the token; it may be served again until it expires' } };
          }
          return final;
        }
        const answer = await perform(out.next);
        if (out.next.input?.nx && answer?.stored) lock = out.next.input;
        input = `{"request":${json},"state":${JSON.stringify(out.state)}${answer === undefined ? '' : `,"answer":${JSON.stringify(answer)}`}}`;
      }
      throw new Error(`tokenwasm: token_step did not end within ${MAX_STEPS} steps`);
    } catch (err) {
      if (lock) await perform({ import: 'cache_delete', input: { key: lock.key, if_value: lock.value } }, true);
      throw err;
    }
  }

  /**
   * discovered is the request JSON with the token URL (and revocation URL) that a smart request's
   * fhir_base leads to, as the Go host fills them before a flow; any other request as it is. Or the
   * discovery's {error}.
   */
  async function discovered(json) {
    if (!json.includes('"fhir_base"')) return json;
    const req = JSON.parse(json);
    if (req.provider !== 'smart' || (req.token_url ?? '') !== '' || typeof req.fhir_base !== 'string' || req.fhir_base === '') return json;
    const found = await discover(req.fhir_base);
    if (found.error) return found;
    const revocation = !req.revocation_url && found.revocation_url ? { revocation_url: found.revocation_url } : {};
    return JSON.stringify({ ...req, token_url: found.token_url, ...revocation });
  }

  /** flow drives the token flow, waiting out `pending` (another host's fetch) until its deadline. */
  async function flow(json, slot, timeoutMs) {
    const deadline = Date.now() + timeoutMs + PENDING_GRACE_MS;
    for (;;) {
      const res = await drive(json, '', slot);
      if (!res.pending) return res;
      const wait = res.pending.retry_after_ms ?? 50;
      if (Date.now() + wait > deadline) {
        return { error: { kind: 'transport', message: "timed out waiting for another process's fetch of this token", retryable: true } };
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /** track keeps a flight in `flights` until it settles. */
  function track(p) {
    flights.add(p);
    p.finally(() => flights.delete(p)).catch(() => {});
    return p;
  }

  /**
   * tell hands onRefreshToken a refresh token a fetched answer carried, for the application to keep
   * beyond the cache's life. It is not awaited, and its errors (thrown or rejected) are swallowed
   * unlogged: they may quote the token.
   */
  function tell(req, token) {
    if (!onRefreshToken || typeof token?.refresh_token !== 'string' || token.refresh_token === req?.refresh_token) return;
    try {
      const r = onRefreshToken(req, token.refresh_token);
      if (typeof r?.then === 'function') r.then(undefined, () => {});
    } catch {}
  }

  /** timeoutOf is the request's timeout_ms, or the default. */
  const timeoutOf = (req) => (Number.isInteger(req?.timeout_ms) && req.timeout_ms > 0 ? req.timeout_ms : DEFAULT_TIMEOUT_MS);

  /**
   * settle takes a flow's answer for s: a token is held (and its refresh token told), and its answer
   * frozen, as callers share it.
   */
  function settle(s, req, res) {
    if (!res.token) return res;
    s.held = hold(res);
    if (res.cached === false) tell(req, res.token);
    return Object.freeze(res);
  }

  /**
   * startFlight starts the flight of s: one flow for the request JSON, which callers join. req is the
   * request of the caller who started it, without force (onRefreshToken is given it).
   */
  function startFlight(s, req, json) {
    s.flight = track(
      flow(json, s.slot, timeoutOf(req)).then((res) => {
        const h = s.held;
        if (res.error && h && clock() < h.answer.token.expires_at_ms) {
          warn('tokenwasm: fetch failed before the held token expired; serving it', { kind: res.error.kind });
        }
        return settle(s, req, res);
      }),
    ).finally(() => {
      s.flight = null;
    });
    return s.flight;
  }

  /**
   * orHeld is the answer for a caller who did not force a fetch: the flight's, or, when the flight
   * failed (an error answer, or a throw), the held token while it has not expired.
   */
  function orHeld(s, p) {
    const held = () => {
      const h = s.held;
      return h && clock() < h.answer.token.expires_at_ms ? h.answer : null;
    };
    return p.then(
      (res) => (res.error && held()) || res,
      (err) => {
        const h = held();
        if (h) return h;
        throw err;
      },
    );
  }

  /** fetchShared joins the source's flight, or starts one (minTtl: a refresh ahead's margin). */
  function fetchShared(s, req, minTtl = 0) {
    if (s.flight) return orHeld(s, s.flight);
    const json = minTtl > 0 ? withMember(fleetJSON(s.json), 'min_ttl_ms', Math.ceil(minTtl)) : fleetJSON(s.json);
    return orHeld(s, startFlight(s, req, json));
  }

  /**
   * forceShared is a forced fetch of a one-time grant: two exchanges of one refresh token at once are
   * a replay, so it joins the flight in progress (which callers of the source then join too). When
   * that flight did not fetch a token (a cache hit, an error), the forced flight follows it (unless
   * the client closed meanwhile).
   */
  function forceShared(s, json, base) {
    const start = () => s.flight ?? startFlight(s, base, fleetJSON(json));
    if (!s.flight) return start();
    return s.flight.then(
      (res) => ((res.token && res.cached === false) || closed ? res : start()),
      (err) => {
        if (closed) throw err;
        return start();
      },
    );
  }

  /**
   * refreshAhead starts one background refresh of s unless one runs or a failed one waits. The
   * plugin says when to try again after a failure (retry_after_ms, its fleet-wide backoff); a failure
   * it does not call retryable ends refreshing this token: callers fetch once it is stale.
   */
  function refreshAhead(s, h, req) {
    if (s.refreshing || clock() < s.retryAt || closed) return;
    s.refreshing = true;
    const window = h.answer.token.expires_at_ms - h.refreshAt + 1; // a token not itself due for refresh
    const p = s.flight ?? startFlight(s, req, withMember(fleetJSON(s.json), 'min_ttl_ms', Math.ceil(window)));
    p.then(
      (res) => {
        if (res.error) s.retryAt = res.error.retryable && res.error.retry_after_ms > 0 ? clock() + res.error.retry_after_ms : h.staleAt;
      },
      (err) => {
        s.retryAt = h.staleAt;
        warn('tokenwasm: background refresh failed', { error: err?.name ?? 'Error' });
      },
    ).finally(() => {
      s.refreshing = false;
    });
  }

  /**
   * sourceOf finds or makes the Source of a request. A request object seen before is found by its
   * identity (a WeakMap) and checked against what was read from it then (its fingerprint: every key
   * and value), so it skips JSON.stringify yet a mutated object never gets the Source of what it
   * held before. The JSON is made from the values the fingerprint read, so the two agree even for
   * an object whose getters answer differently from read to read. A Source that left the map is not
   * found by identity either: a credential set has one Source, one held token and one flight.
   */
  function sourceOf(req) {
    const seen = known.get(req);
    if (seen !== undefined && !seen.s.gone && sameAsRead(req, seen.fp)) return seen.s;
    const fp = fingerprint(req);
    const json = JSON.stringify(fp === null ? req : Object.fromEntries(fp.keys.map((k, i) => [k, fp.values[i]])));
    if (typeof json !== 'string' || json[0] !== '{') throw new TypeError('tokenwasm: a request must be a JSON object');
    let s = sources.get(json);
    if (!s) {
      if (sources.size >= MAX_SOURCES) {
        for (const [k, old] of sources) {
          if (!old.flight) {
            old.gone = true; // one Source per credential set: never found again, by JSON or identity
            sources.delete(k);
            break;
          }
        }
      }
      s = new Source(json, nextSlot++ % pool.length);
      sources.set(json, s);
    }
    if (fp !== null) known.set(req, { s, fp });
    else known.delete(req);
    return s;
  }

  /**
   * answered is the answer of p, which never rejects: a flow that threw (a plugin trap, the step
   * limit) answers a retryable `transport` error naming the failure, never quoting it; a signal that
   * aborts first answers the `aborted` one at once (p runs on for its other waiters).
   */
  function answered(p, signal) {
    const settled = p.then(undefined, (err) => {
      const name = err?.name ?? 'Error';
      warn('tokenwasm: token flow failed', { error: name });
      return { error: { kind: 'transport', message: `the token flow failed (${name})`, retryable: true } };
    });
    if (!signal) return settled;
    const aborted = () => ({ error: { kind: 'transport', message: `aborted by the caller's signal (${signal.reason?.name ?? 'Error'})`, retryable: true, aborted: true } });
    if (signal.aborted) return Promise.resolve(aborted());
    return new Promise((resolve) => {
      const onAbort = () => resolve(aborted());
      signal.addEventListener('abort', onAbort, { once: true });
      settled.then(resolve).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /**
   * token answers {token, cached, refresh_at_ms, stale_at_ms} or {error}: from memory when a valid
   * token is held, else through the plugin (the cache, then the provider). Concurrent callers of one
   * credential set share one flow. `force` skips every cache (not a closed 429 gate); for a one-time
   * grant (refresh_token, authorization_code) it joins the flow in progress. Every failure, an abort
   * included (error.aborted), is an {error} answer; it rejects only when called wrongly (a request
   * that is not a JSON object, a closed client).
   */
  async function token(req, { signal } = {}) {
    open();
    if (req?.force) {
      const { force, ...rest } = req;
      const s = sourceOf(rest);
      // The flow's JSON is the Source's with force: the object is read once, so a getter that
      // answers differently on each read cannot send one request and hold its token in another's.
      const json = withJSON(s.json, 'force', force);
      if (oneTime(rest)) return answered(forceShared(s, json, rest), signal);
      const p = track(flow(fleetJSON(json), s.slot, timeoutOf(rest))).then((res) => settle(s, rest, res));
      return answered(p, signal);
    }
    const s = sourceOf(req);
    const h = s.held;
    if (h !== null) {
      const t = clock();
      if (t < h.refreshAt) return h.answer;
      if (t < h.staleAt) {
        refreshAhead(s, h, req);
        return h.answer;
      }
    }
    return answered(fetchShared(s, req), signal);
  }

  /**
   * invalidate drops the cached token of req (in memory and in the cache) after an API answered 401;
   * with req.access_token only if that is the token held, at most once per 30 s per credential set
   * across the fleet. Answers {}, {retry} (with access_token: whether a new token is worth trying) or
   * {error} (error.not_dropped: the cache could not drop the token).
   */
  async function invalidate(req) {
    open();
    const { access_token: bad, ...base } = req ?? {};
    const s = sourceOf(base);
    const res = await answered(track(drive(withJSON(s.json, 'access_token', bad), 'invalidate', s.slot)));
    // For a 401 (access_token), dropped from memory only when the flow says a new token is worth
    // trying: with the cache down (an error) the 401 window cannot be kept, and dropping would cost a
    // token request per API call.
    if (s.held && (bad === undefined || (s.held.answer.token.access_token === bad && res.retry === true))) s.held = null;
    return res;
  }

  /**
   * fetch is a fetch that sends the request's token as its Authorization header and, on a 401,
   * invalidates that token once and retries once with a fresh one. It rejects with a TokenError when
   * no token can be had, and otherwise as fetch does: an abort (while the token is fetched too)
   * with the signal's reason, a failure of the API request with fetch's own error. A body that can
   * be read only once (a stream) is not retried.
   */
  async function authFetch(req, input, init = {}) {
    const spare = typeof Request !== 'undefined' && input instanceof Request ? input.clone() : input;
    const attempt = async (target) => {
      const res = await token(req, { signal: init.signal ?? undefined });
      if (res.error?.aborted) throw init.signal.reason;
      if (res.error) throw new TokenError(res.error);
      const headers = new Headers(init.headers ?? (target instanceof Request ? target.headers : undefined));
      headers.set('Authorization', `${res.token.token_type} ${res.token.access_token}`);
      return [res.token.access_token, await doFetch(target, { ...init, headers })];
    };
    const [used, first] = await attempt(input);
    const once = typeof ReadableStream !== 'undefined' && init.body instanceof ReadableStream;
    if (first.status !== 401 || once) return first;
    // The plugin decides whether a new token is worth trying: a token is dropped for a 401 at most
    // once per 30 s per credential set, across every host sharing the cache (abi/ABI.md, the 401
    // window); within it the API's 401 goes back to the caller, or an API that refuses every token
    // would cost a token request per call. A token already replaced is retried with the new one.
    const { force: _f, ...base } = req ?? {};
    const s = sourceOf(base);
    const replaced = s.held === null || s.held.answer.token.access_token !== used;
    if (!replaced) {
      const res = await invalidate({ ...base, access_token: used });
      if (res.error || res.retry === false) return first;
    }
    await first.body?.cancel().catch(() => {});
    return (await attempt(spare))[1];
  }

  return {
    token,
    invalidate,
    fetch: authFetch,
    /** call runs one export (describe, encode, decode, token_step) synchronously: its parsed answer. */
    call: (name, input) => open() && call(name, input),
    describe: () => open() && call('describe'),
    encode: (req) => open() && call('encode', req),
    decode: (request, response, nowMs) => open() && call('decode', { request, response, ...(nowMs ? { now_ms: nowMs } : {}) }),
    cache,
    /**
     * jwks is the signers' public keys as a JWK Set (kid, use "sig", alg when the key signs one
     * algorithm only; RSA n/e, EC crv/x/y), a Response to serve at the URL the servers were given
     * (a jwks_uri). Throws for a signer whose public key it does not have.
     */
    jwks: () => new Response(JSON.stringify(signer ? signer.jwkSet() : { keys: [] }), { headers: JWKS_HEADERS }),
    /** close refuses new calls and waits for the flows in progress. */
    async close() {
      closed = true;
      await Promise.allSettled([...flights]);
      pool.fill(null);
      sources.clear();
    },
  };
}
