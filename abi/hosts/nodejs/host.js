// A tokenwasm host for Node.js on the official Extism JavaScript SDK (@extism/extism 1.0.3), written
// from abi/ABI.md: it loads the plugin with WASI, implements the four imports of `extism:host/user`
// (http_send with fetch, a cache in a Map with TTLs) and exposes the exports.
//
//   const host = await createHost({ wasm: 'host/tokenwasm.wasm' });
//   const res = await host.token({ provider: 'nikohealth', domain: 'acme', client_id, client_secret });
//   // res is {token, cached} or {error}; host.close() when done.
import createPlugin from '@extism/extism';
import { readFile } from 'node:fs/promises';

/** The response body cap: the plugin parses at most 1 MiB, so one byte more is enough to tell. */
export const MAX_RESPONSE_BYTES = (1 << 20) + 1;
/** The response header cap, as the Go host's: names and values together, more is a transport error. */
export const MAX_RESPONSE_HEADER_BYTES = 64 << 10;
const DEFAULT_TIMEOUT_MS = 10000; // the ABI's default and cap for TokenRequest.timeout_ms
const MAX_TIMEOUT_MS = 120000;

/**
 * MemoryCache is the default cache: string values with TTLs in a Map, with the two atomic operations
 * the ABI asks for (store-if-absent for the fleet lock, compare-and-delete for its release). A
 * replacement (Redis, ...) implements the same three methods; they may return promises.
 */
export class MemoryCache {
  #entries = new Map(); // key -> {value, expiresAt}
  #writes = 0;

  /** get returns the live value of key, or undefined. An entry past its TTL is never returned. */
  get(key) {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (Date.now() >= e.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** set stores value for ttlMs; with nx only if key is absent (or expired). Returns whether it stored. */
  set(key, value, ttlMs, nx = false) {
    if (nx && this.get(key) !== undefined) return false;
    this.#entries.set(key, { value, expiresAt: Date.now() + ttlMs });
    if (++this.#writes % 1024 === 0) this.#sweep(); // keys nobody reads again must not pile up
    return true;
  }

  /** delete drops key; with ifValue only while key holds exactly that value. */
  delete(key, ifValue) {
    if (ifValue !== undefined && this.get(key) !== ifValue) return;
    this.#entries.delete(key);
  }

  get size() {
    return this.#entries.size;
  }

  #sweep() {
    const now = Date.now();
    for (const [k, e] of this.#entries) if (now >= e.expiresAt) this.#entries.delete(k);
  }
}

/**
 * The token hosts of the built-in providers, the same list as the Go host's DefaultAllowedHosts.
 * createHost's allowedHosts are added to it (Pattern's per-customer host goes there).
 */
export const DEFAULT_ALLOWED_HOSTS = Object.freeze(['api.joincandidhealth.com', 'api.candescent.com', '*.nikohealth.com']);

/** The prefix of every policy refusal's message. */
const REFUSED = 'refused by host policy';

/** isLoopback reports whether a URL hostname (as URL.hostname spells it) is a loopback address. */
function isLoopback(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/**
 * @typedef {{host: string, port: number, wildcard: boolean}} AllowedHost
 *   host as URL.hostname spells it (lower case, punycode); port 443 unless the entry names one;
 *   wildcard: "*.domain", which matches the subdomains of domain, not domain itself.
 */

/**
 * parseAllowedHosts reads allow-list entries: "host" (https on port 443 only), "host:port" (that port
 * only) or "*.domain" / "*.domain:port" (any subdomain of domain, not domain itself). An entry that is
 * none of these (a URL, a path, credentials, an empty string) throws a TypeError: a typo must not
 * silently allow nothing or everything.
 *
 * @param {readonly string[]} entries
 * @returns {AllowedHost[]}
 */
export function parseAllowedHosts(entries) {
  if (!Array.isArray(entries)) throw new TypeError('tokenwasm: allowedHosts must be an array of strings');
  return entries.map((entry) => {
    const bad = () => new TypeError(`tokenwasm: allowedHosts entry ${JSON.stringify(entry)} is not "host", "host:port" or "*.domain"`);
    if (typeof entry !== 'string') throw bad();
    const wildcard = entry.startsWith('*.');
    const rest = wildcard ? entry.slice(2) : entry;
    if (rest === '' || /[/?#@\\\s*]/.test(rest)) throw bad();
    let url;
    try {
      url = new URL(`https://${rest}/`);
    } catch {
      throw bad();
    }
    if (url.pathname !== '/' || url.hostname === '') throw bad();
    return { host: url.hostname, port: url.port ? Number(url.port) : 443, wildcard };
  });
}

/**
 * checkURL applies the host's policy to a token URL and returns null when it may be called, else the
 * reason (which names the host and port only: a URL's path or query may carry a secret). The policy,
 * the Go host's: https only, to an allowed host on an allowed port (see parseAllowedHosts); loopback
 * only with allowLoopback, and then on any port, over http or https; no credentials in the URL.
 *
 * @param {string} raw
 * @param {{allowLoopback: boolean, allowed: AllowedHost[]}} policy
 * @returns {string|null}
 */
function checkURL(raw, { allowLoopback, allowed }) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return `${REFUSED}: the token URL is not a valid URL`;
  }
  const host = url.hostname;
  if (url.username || url.password) return `${REFUSED}: credentials in the URL of ${host}`;
  if (isLoopback(host)) {
    if (!allowLoopback) return `${REFUSED}: loopback host ${host} is not allowed`;
    if (url.protocol === 'http:' || url.protocol === 'https:') return null;
  }
  if (url.protocol !== 'https:') return `${REFUSED}: ${url.protocol} to ${host} (https only)`;
  const port = url.port ? Number(url.port) : 443;
  if (!allowed.some((a) => a.port === port && (a.wildcard ? host.endsWith(`.${a.host}`) : host === a.host))) {
    return `${REFUSED}: ${port === 443 ? host : `${host}:${port}`} is not an allowed token host`;
  }
  return null;
}

/** readCapped reads at most `limit` bytes of a fetch Response body and drops the rest. */
async function readCapped(resp, limit) {
  if (!resp.body) return Buffer.alloc(0);
  const reader = resp.body.getReader();
  const chunks = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {}); // stop downloading past the cap
  }
  return Buffer.concat(chunks).subarray(0, limit);
}

/**
 * @typedef {{debug?: (msg: string, attrs: object) => void, warn?: (msg: string, attrs: object) => void}} Logger
 *   what the host logs through: a policy refusal at warn (its reason), every other http_send at
 *   debug (host and port, status or transport error, milliseconds). Never a path, query, header or
 *   body: those may carry secrets.
 */

/**
 * httpSend performs one HttpRequest and answers an HttpResponse, or {"error"} when no response was
 * had. A request the policy refuses (a bad URL, credentials in it, a host or scheme not allowed) is
 * answered {"error", "policy": true} and nothing is sent: the plugin makes it a `policy` error, not
 * retryable, since the same request would be refused again. A connection refused or reset, or a
 * timeout, is a plain {"error"}: a transient transport failure. It never throws.
 */
async function httpSend(req, policy, fetchImpl, log) {
  const refused = checkURL(req.url, policy);
  if (refused) {
    log.warn('tokenwasm: http_send refused', { reason: refused });
    return { error: refused, policy: true };
  }
  const host = new URL(req.url).host; // what a log may name: never the path or query
  const timeout = Number.isInteger(req.timeout_ms) && req.timeout_ms > 0 ? Math.min(req.timeout_ms, MAX_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS;
  const started = performance.now();
  const answer = await exchange(req, timeout, fetchImpl);
  const ms = Math.round(performance.now() - started);
  if (answer.error) log.debug('tokenwasm: http_send failed', { host, error: answer.error, ms });
  else log.debug('tokenwasm: http_send', { host, status: answer.status, ms });
  return answer;
}

/** exchange sends req with fetch and answers an HttpResponse, or {"error"} when none was had. */
async function exchange(req, timeout, fetchImpl) {
  try {
    const resp = await fetchImpl(req.url, {
      method: req.method || 'POST',
      headers: req.headers || {},
      body: req.body === undefined || req.body === '' ? undefined : req.body,
      redirect: 'manual', // a redirect is answered as it is (a 3xx the plugin types), never followed
      signal: AbortSignal.timeout(timeout), // covers the connection, the headers and the body
    });
    // Names come lower-cased; a repeated header is joined with ", " by fetch (set-cookie aside).
    const headers = Object.fromEntries(resp.headers);
    let headerBytes = 0;
    for (const [k, v] of Object.entries(headers)) headerBytes += k.length + v.length;
    if (headerBytes > MAX_RESPONSE_HEADER_BYTES) {
      await resp.body?.cancel();
      return { error: `token endpoint's response headers exceed ${MAX_RESPONSE_HEADER_BYTES} bytes` };
    }
    const body = await readCapped(resp, MAX_RESPONSE_BYTES);
    return { status: resp.status, headers, body: body.toString('utf8') };
  } catch (err) {
    if (err?.name === 'TimeoutError') return { error: `timeout after ${timeout} ms waiting for the token endpoint` };
    // fetch says "fetch failed" and puts the network reason (ECONNREFUSED, ECONNRESET, ENOTFOUND,
    // with an address) in err.cause. Other errors come from building the request, and their messages
    // may quote a header value, so only their name is passed on. (The plugin prefixes the message
    // with "token request failed: " and redacts the request's secrets anyway.)
    const cause = err?.cause;
    if (cause) return { error: `${cause.code ?? cause.name ?? 'Error'}: ${cause.message ?? ''}`.trim() };
    return { error: `${err?.name ?? 'Error'}: the request could not be sent` };
  }
}

/**
 * httpSender returns the host's http_send: HttpRequest (an object) -> HttpResponse | {"error"} |
 * {"error", "policy": true}, with the policy of createHost's options of the same names. It never
 * throws. createHost uses it; it is exported so the policy can be checked without a plugin.
 *
 * @param {{allowLoopback?: boolean, allowedHosts?: string[], fetch?: typeof fetch, logger?: Logger}} [opts]
 * @returns {(req: object) => Promise<object>}
 */
export function httpSender({ allowLoopback = false, allowedHosts = [], fetch: fetchImpl = fetch, logger } = {}) {
  if (!Array.isArray(allowedHosts)) throw new TypeError('tokenwasm: allowedHosts must be an array of strings');
  const policy = { allowLoopback, allowed: parseAllowedHosts([...DEFAULT_ALLOWED_HOSTS, ...allowedHosts]) };
  // A logger that throws must not change the answer.
  const level = (name) => (msg, attrs) => {
    try {
      logger?.[name]?.(msg, attrs);
    } catch {}
  };
  const log = { debug: level('debug'), warn: level('warn') };
  return (req) => httpSend(req ?? {}, policy, fetchImpl, log);
}

/**
 * createHost loads the plugin and returns a host around one plugin instance.
 *
 * @param {object} opts
 * @param {string|URL|Uint8Array} opts.wasm the plugin: a path or the bytes.
 * @param {boolean} [opts.allowLoopback] let http_send call loopback addresses, plain http included
 *   (tests against local fakes only).
 * @param {{get, set, delete}} [opts.cache] the token cache; a MemoryCache by default. Share one
 *   between hosts (or back it with Redis) to share tokens and 429 gates.
 * @param {string[]} [opts.allowedHosts] https hosts http_send may call besides DEFAULT_ALLOWED_HOSTS:
 *   "host" (port 443 only), "host:port" (that port only), "*.domain" (its subdomains only). A
 *   malformed entry throws a TypeError.
 * @param {typeof fetch} [opts.fetch] the fetch to use (tests).
 * @param {Logger} [opts.logger] where to log each http_send (`console` will do); nothing by default.
 */
export async function createHost({ wasm, allowLoopback = false, cache = new MemoryCache(), allowedHosts, fetch: fetchImpl = fetch, logger } = {}) {
  const send = httpSender({ allowLoopback, allowedHosts, fetch: fetchImpl, logger }); // throws on a malformed allowedHosts entry
  const bytes = typeof wasm === 'string' || wasm instanceof URL ? await readFile(wasm) : wasm;
  if (!bytes) throw new TypeError('createHost: wasm (a path or the plugin bytes) is required');
  const module = await WebAssembly.compile(bytes); // compiled once; a replacement instance reuses it

  // Each import takes the handle of a kernel memory block holding JSON and returns the handle of a
  // new block holding the JSON answer. With runInWorker, a host function that throws kills the
  // worker, so every failure becomes an answer: `fallback` says which one.
  const importFn = (handler, fallback) => async (ctx, handle) => {
    let answer;
    try {
      const text = ctx.read(handle)?.text();
      answer = await handler(JSON.parse(text ?? 'null') ?? {});
    } catch (err) {
      answer = fallback(err);
    }
    return ctx.store(JSON.stringify(answer));
  };

  const functions = {
    'extism:host/user': {
      // HttpRequest -> HttpResponse | {"error"}
      http_send: importFn(send, (err) => ({ error: `host http_send: ${err?.name ?? 'Error'}` })), // a JSON.parse message quotes its input
      // {"key"} -> {"hit":true,"value"} | {"hit":false}; a broken cache is a miss
      cache_get: importFn(async ({ key }) => {
        const value = await cache.get(String(key));
        return typeof value === 'string' ? { hit: true, value } : { hit: false };
      }, () => ({ hit: false })),
      // {"key","value","ttl_ms","nx"?} -> {"stored"} | {"error"}
      cache_set: importFn(async ({ key, value, ttl_ms: ttl, nx }) => {
        if (typeof key !== 'string' || typeof value !== 'string' || !(ttl > 0)) return { error: 'cache_set: key, value and a positive ttl_ms are required' };
        return { stored: Boolean(await cache.set(key, value, ttl, nx === true)) };
      }, (err) => ({ error: `cache_set: ${err.message}` })),
      // {"key","if_value"?} -> {}
      cache_delete: importFn(async ({ key, if_value: ifValue }) => {
        await cache.delete(String(key), typeof ifValue === 'string' ? ifValue : undefined);
        return {};
      }, () => ({})),
    },
  };

  // useWasi: the plugin is a WASI reactor that reads the wall clock (expiry) and random_get
  // (Candescent's transactionId); Node's WASI gives the real ones. runInWorker: http_send is async
  // (fetch), and @extism/extism runs async host functions only with the plugin in a worker thread,
  // which blocks on each host call while the main thread answers it (about 120 us per call).
  const newPlugin = () => createPlugin({ wasm: [{ module }] }, { useWasi: true, runInWorker: true, functions });

  let plugin = await newPlugin();
  let queue = Promise.resolve(); // an instance is single-threaded: one call at a time
  let closed = false;

  /** run executes one export on the instance; `input` is a JSON string (or '' for none). */
  async function run(name, input) {
    if (closed) throw new Error('tokenwasm host: closed');
    plugin ??= await newPlugin();
    let text;
    try {
      const out = await plugin.call(name, input);
      text = out === null ? '' : out.text(); // a copy: the block goes with the reset below
      // @extism/extism 1.0.3 never frees kernel memory blocks between calls: every call adds at
      // least two (input and output) and after 16,384 calls the block index overflows and every call
      // fails ("cannot assign to this block"). reset() drops them all. It answers false only while a
      // call is active, which the queue rules out.
      await plugin.reset();
    } catch (err) {
      // A trap, an error_set or a dead worker is a plugin bug (ABI.md): throw the instance away;
      // the next call gets a fresh one. An answer already read out is still good.
      const broken = plugin;
      plugin = null;
      await broken.close().catch(() => {});
      if (text === undefined) throw new Error(`tokenwasm plugin failed in ${name}: ${err?.message ?? err}`);
    }
    return text;
  }

  /**
   * call runs an export with an input object (or a JSON string, passed as is) and returns the parsed
   * JSON answer. Calls are queued: the instance runs one at a time.
   */
  function call(name, input) {
    const raw = input === undefined ? '' : typeof input === 'string' ? input : JSON.stringify(input);
    const result = queue.then(() => run(name, raw));
    queue = result.catch(() => {});
    return result.then((text) => {
      try {
        return JSON.parse(text);
      } catch {
        throw new Error(`tokenwasm plugin answered ${name} with no JSON: ${JSON.stringify(text.slice(0, 200))}`);
      }
    });
  }

  /**
   * token returns {token, cached} or {error}. A {"pending"} answer (another host sharing the cache is
   * fetching this token: only with fleet_lock and a shared cache) is waited out and asked again,
   * for at most the fetch lock's life plus a second.
   */
  async function token(req) {
    const deadline = Date.now() + (req?.timeout_ms ?? DEFAULT_TIMEOUT_MS) + 3000;
    for (;;) {
      const res = await call('token', req);
      if (!res.pending || Date.now() >= deadline) return res;
      await new Promise((resolve) => setTimeout(resolve, res.pending.retry_after_ms ?? 50));
    }
  }

  return {
    call,
    token,
    /** invalidate drops the cached token of req (the API answered 401 with it); answers {} or {error}. */
    invalidate: (req) => call('invalidate', req),
    describe: () => call('describe'),
    encode: (req) => call('encode', req),
    decode: (request, response, nowMs) => call('decode', { request, response, ...(nowMs ? { now_ms: nowMs } : {}) }),
    cache,
    /** close ends the worker thread; the host cannot be used afterwards. */
    async close() {
      closed = true;
      await queue;
      await plugin?.close();
      plugin = null;
    },
  };
}
