// http_send: the host's policy (which token hosts credentials may go to) and one HTTP exchange with
// fetch, answered as an HttpResponse or an {"error"} (abi/ABI.md, http_send). Runs in any runtime
// with fetch; nothing here is Node-only.
import { redact, requestSecrets } from './redact.js';

/** The response body cap: the plugin parses at most 1 MiB, so one byte more is enough to tell. */
export const MAX_RESPONSE_BYTES = (1 << 20) + 1;
/** The response header cap, as the Go host's: names and values together, more is a transport error. */
export const MAX_RESPONSE_HEADER_BYTES = 64 << 10;
export const DEFAULT_TIMEOUT_MS = 10000; // the ABI's default and cap for TokenRequest.timeout_ms
const MAX_TIMEOUT_MS = 120000;

/**
 * The token hosts of the built-in providers, the same list as the Go host's DefaultAllowedHosts().
 * createClient's allowedHosts are added to it (Pattern's per-customer host goes there).
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
    if (!allowLoopback) return `${REFUSED}: loopback host ${host} is not allowed; allowLoopback: true allows it (tests only)`;
    if (url.protocol === 'http:' || url.protocol === 'https:') return null;
  }
  if (url.protocol !== 'https:') return `${REFUSED}: ${url.protocol} to ${host} (https only)`;
  const port = url.port ? Number(url.port) : 443;
  if (!allowed.some((a) => a.port === port && (a.wildcard ? host.endsWith(`.${a.host}`) : host === a.host))) {
    return `${REFUSED}: ${port === 443 ? host : `${host}:${port}`} is not an allowed token host`;
  }
  return null;
}

const utf8 = new TextDecoder();

/** readCapped reads at most `limit` bytes of a fetch Response body as text and drops the rest. */
async function readCapped(resp, limit) {
  if (!resp.body) return '';
  // Always chunk by chunk: a Content-Length bounds nothing (Deno, Bun and workerd show it beside
  // Transfer-Encoding: chunked and frame the body by the chunks; a caller's fetch may build any
  // Response; fetch inflates a compressed body past it).
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
  const all = new Uint8Array(Math.min(size, limit));
  let at = 0;
  for (const c of chunks) {
    if (at >= all.length) break;
    const part = c.subarray(0, all.length - at);
    all.set(part, at);
    at += part.length;
  }
  return utf8.decode(all);
}

/**
 * @typedef {{debug?: (msg: string, attrs: object) => void, warn?: (msg: string, attrs: object) => void}} Logger
 *   what the host logs through: a policy refusal at warn (its reason), every other http_send at
 *   debug (host and port, status or transport error, milliseconds). Never a path, query, header or
 *   body: those may carry secrets. Every record, and every {"error"} answered, goes through one
 *   redaction with the request's secrets (redact.js): a fetch whose error quotes the request (a
 *   wrapper, a proxy agent) gives away nothing in any encoding.
 */

/**
 * httpSend performs one HttpRequest and answers an HttpResponse, or {"error"} when no response was
 * had. A request the policy refuses (a bad URL, credentials in it, a host or scheme not allowed) is
 * answered {"error", "policy": true} and nothing is sent: the plugin makes it a `policy` error, not
 * retryable, since the same request would be refused again. A connection refused or reset, or a
 * timeout, is a plain {"error"}: a transient transport failure. It never throws.
 */
async function httpSend(req, policy, fetchImpl, logger) {
  let secrets; // the request's, computed when first needed: most exchanges say nothing but a status
  const clean = (text) => (typeof text === 'string' ? redact(text, (secrets ??= requestSecrets(req))) : text);
  const log = recorder(logger, clean);
  const refused = checkURL(req.url, policy);
  if (refused) {
    log('warn', 'tokenwasm: http_send refused', { reason: refused });
    return { error: clean(refused), policy: true };
  }
  const host = new URL(req.url).host; // what a log may name: never the path or query
  const timeout = Number.isInteger(req.timeout_ms) && req.timeout_ms > 0 ? Math.min(req.timeout_ms, MAX_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS;
  const started = performance.now();
  const answer = await exchange(req, timeout, fetchImpl);
  const ms = Math.round(performance.now() - started);
  if (answer.error) {
    answer.error = clean(answer.error); // the plugin redacts it again before it reaches an Error
    log('debug', 'tokenwasm: http_send failed', { host, error: answer.error, ms });
  } else log('debug', 'tokenwasm: http_send', { host, status: answer.status, ms });
  return answer;
}

/**
 * recorder returns log(level, msg, attrs): the record, its message and every string in its
 * attributes passed through clean (the request's redaction), to the logger's method of that level.
 * A logger that throws changes nothing.
 */
function recorder(logger, clean) {
  return (level, msg, attrs) => {
    const fn = logger?.[level];
    if (typeof fn !== 'function') return;
    try {
      const out = {};
      for (const [k, v] of Object.entries(attrs)) out[k] = clean(v);
      fn.call(logger, clean(msg), out);
    } catch {}
  };
}

/**
 * exchange sends req with fetch and answers an HttpResponse (its body at most `limit` bytes), or
 * {"error"} when none was had.
 */
async function exchange(req, timeout, fetchImpl, limit = MAX_RESPONSE_BYTES) {
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
    const body = await readCapped(resp, limit);
    return { status: resp.status, headers, body };
  } catch (err) {
    if (err?.name === 'TimeoutError') return { error: `timeout after ${timeout} ms waiting for the token endpoint` };
    // fetch says "fetch failed" and puts the network reason (ECONNREFUSED, ECONNRESET, ENOTFOUND,
    // with an address) in err.cause. Other errors come from building the request, and their messages
    // may quote a header value, so only their name is passed on. (The plugin prefixes the message
    // with "token request failed: " and redacts the request's secrets anyway.)
    // Deno's cause quotes the whole URL, path and query included: only its host and port are kept.
    const cause = err?.cause;
    if (cause) return { error: withoutURLs(`${cause.code ?? cause.name ?? 'Error'}: ${cause.message ?? ''}`.trim(), req.url) };
    return { error: `${err?.name ?? 'Error'}: the request could not be sent` };
  }
}

/**
 * withoutURLs replaces the request's URL (as given and as parsed) and any other URL in msg with its
 * host (and port): a path or query may hold a secret.
 */
function withoutURLs(msg, url) {
  const host = new URL(url).host;
  for (const u of [url, new URL(url).href]) msg = msg.split(u).join(host);
  return msg.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s()<>"']+/gi, (u) => {
    try {
      return new URL(u).host || '<url>';
    } catch {
      return '<url>';
    }
  });
}

/**
 * httpSender returns the host's http_send: HttpRequest (an object) -> HttpResponse | {"error"} |
 * {"error", "policy": true}, with the policy of createClient's options of the same names. It never
 * throws. createClient uses it; it is exported so the policy can be checked without a plugin.
 *
 * @param {{allowLoopback?: boolean, allowedHosts?: string[], fetch?: typeof fetch, logger?: Logger}} [opts]
 * @returns {(req: object) => Promise<object>}
 */
export function httpSender({ allowLoopback = false, allowedHosts = [], fetch: fetchImpl = (input, init) => fetch(input, init), logger } = {}) {
  if (!Array.isArray(allowedHosts)) throw new TypeError('tokenwasm: allowedHosts must be an array of strings');
  const policy = { allowLoopback, allowed: parseAllowedHosts([...DEFAULT_ALLOWED_HOSTS, ...allowedHosts]) };
  return (req) => httpSend(req ?? {}, policy, fetchImpl, logger);
}


/**
 * topMembers lists the members of a JSON object's text, one JSON.parse has read, in order and
 * repeats included: [[key (unescaped), the value's JSON text], ...]. JSON.parse keeps the last of a
 * repeated member; the plugin and the Go host read the first (abi/ABI.md, "Shapes").
 */
export function topMembers(text) {
  const out = [];
  let i = text.indexOf('{') + 1;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const string = () => {
    const start = i;
    for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
    i++;
    return text.slice(start, i);
  };
  const value = () => {
    const start = i;
    if (text[i] === '"') return string();
    for (let depth = 0; i < text.length; i++) {
      const c = text[i];
      if (c === '"') {
        string();
        i--;
      } else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        if (depth === 0) break; // the object's own end, after a scalar
        if (--depth === 0) {
          i++;
          break;
        }
      } else if (depth === 0 && (c === ',' || ' \t\r\n'.includes(c))) break;
    }
    return text.slice(start, i);
  };
  for (;;) {
    ws();
    if (text[i] !== '"') return out;
    const key = JSON.parse(string());
    ws();
    i++; // ':'
    ws();
    out.push([key, value()]);
    ws();
    if (text[i] === ',') i++;
  }
}

// SMART discovery (the Go host's host/discovery.go): a `smart` request names its server by
// fhir_base; its token URL is the token_endpoint of {fhir_base}/.well-known/smart-configuration,
// fetched with the client's policy (allow-list, https but for the loopback opt-in, a redirect
// followed to the same host only, a size cap) and kept an hour per FHIR base. Failures are not kept.
const SMART_CONFIGURATION = '/.well-known/smart-configuration';
const DISCOVERY_TTL_MS = 3_600_000;
const DISCOVERY_TIMEOUT_MS = 10_000;
const DISCOVERY_MAX_BYTES = 64 << 10;
const DISCOVERY_ENTRIES = 1024; // a map over this many FHIR bases starts over
const MAX_REDIRECTS = 2; // as Go's http.Client with the Go host's CheckRedirect

/**
 * smartDiscovery returns discover(fhirBase) -> Promise<{token_url, revocation_url?} | {error}>, with
 * the policy of createClient's options of the same names. The error is the ABI's Error (kind
 * invalid_request, policy, transport, server_error or malformed_response; "SMART discovery: ..."). A
 * server must list private_key_jwt in token_endpoint_auth_methods_supported, and its token and
 * revocation endpoints must pass the policy. It never throws.
 *
 * @param {{allowLoopback?: boolean, allowedHosts?: string[], fetch?: typeof fetch, logger?: Logger}} [opts]
 */
export function smartDiscovery({ allowLoopback = false, allowedHosts = [], fetch: fetchImpl = (input, init) => fetch(input, init), logger } = {}) {
  const policy = { allowLoopback, allowed: parseAllowedHosts([...DEFAULT_ALLOWED_HOSTS, ...allowedHosts]) };
  const found = new Map(); // FHIR base -> {value, until}
  const inflight = new Map(); // FHIR base -> its discovery in progress, which callers join
  const warn = (msg, attrs) => {
    try {
      logger?.warn?.(msg, attrs);
    } catch {}
  };
  const fail = (kind, msg) => ({ error: { kind, retryable: kind === 'transport' || kind === 'server_error', message: `SMART discovery: ${msg}` } });

  async function discover(base) {
    let url;
    try {
      url = new URL(base + SMART_CONFIGURATION);
    } catch {}
    if (!url || url.host === '' || url.search !== '' || url.hash !== '') return fail('invalid_request', 'fhir_base is not an absolute URL without query');
    const origin = url.host;
    let resp;
    for (let hop = 0; ; hop++) {
      const refused = checkURL(url.href, policy);
      if (refused) {
        warn('tokenwasm: SMART discovery refused', { reason: refused });
        return fail('policy', refused);
      }
      resp = await exchange({ url: url.href, method: 'GET', headers: { Accept: 'application/json' } }, DISCOVERY_TIMEOUT_MS, fetchImpl, DISCOVERY_MAX_BYTES + 1);
      if (resp.error) return fail('transport', resp.error);
      const location = resp.headers.location;
      if (resp.status < 300 || resp.status > 399 || resp.status === 304 || location === undefined) break;
      if (hop === MAX_REDIRECTS) return fail('policy', `${REFUSED}: too many redirects`);
      try {
        url = new URL(location, url);
      } catch {
        return fail('malformed_response', 'unreadable redirect');
      }
      if (url.host !== origin) return fail('policy', `${REFUSED}: redirect to another host`);
    }
    const { status, body } = resp;
    if (status >= 500 || status === 429) return fail('server_error', `HTTP ${status}`);
    if (status !== 200) return fail('malformed_response', `HTTP ${status}`);
    if (new TextEncoder().encode(body).length > DISCOVERY_MAX_BYTES) return fail('malformed_response', 'configuration exceeds 64 KiB');
    // The first of a repeated member, its type checked, as every reader here reads.
    const conf = Object.create(null);
    try {
      const doc = JSON.parse(body);
      if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) {
        for (const [k, raw] of topMembers(body)) if (!(k in conf)) conf[k] = JSON.parse(raw);
      }
    } catch {}
    const { token_endpoint: token, revocation_endpoint: revocation, token_endpoint_auth_methods_supported: methods } = conf;
    if (typeof token !== 'string' || token === '' || (revocation !== undefined && typeof revocation !== 'string')) {
      return fail('malformed_response', 'no token_endpoint in the configuration');
    }
    if (!canParse(token)) return fail('malformed_response', 'token_endpoint is not an absolute URL');
    const refused = checkURL(token, policy);
    if (refused) return fail('policy', `token_endpoint ${refused}`);
    if (revocation && (!canParse(revocation) || checkURL(revocation, policy))) return fail('policy', 'revocation_endpoint is not an allowed absolute URL');
    if (![methods].flat().includes('private_key_jwt')) {
      return fail('policy', 'the server does not list private_key_jwt in token_endpoint_auth_methods_supported');
    }
    return revocation ? { token_url: token, revocation_url: revocation } : { token_url: token };
  }

  return (fhirBase) => {
    const base = String(fhirBase).replace(/\/+$/, '');
    const hit = found.get(base);
    if (hit && Date.now() < hit.until) return Promise.resolve(hit.value);
    let p = inflight.get(base);
    if (!p) {
      p = discover(base)
        .catch(() => fail('transport', 'the configuration could not be fetched'))
        .then((value) => {
          if (!value.error) {
            if (found.size >= DISCOVERY_ENTRIES) found.clear();
            found.set(base, { value, until: Date.now() + DISCOVERY_TTL_MS });
          }
          return value;
        })
        .finally(() => inflight.delete(base));
      inflight.set(base, p);
    }
    return p;
  };
}

/** canParse reports whether s is an absolute URL. */
function canParse(s) {
  try {
    new URL(s);
    return true;
  } catch {
    return false;
  }
}
