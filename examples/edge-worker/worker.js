// An egress gateway at the edge: a Cloudflare Worker that forwards each request to one upstream API
// with a provider token in its Authorization header. Callers inside never see a client secret; the
// token is fetched once per credential set for the whole fleet of Workers (a Durable Object holds
// it, sealed), served from each isolate's memory until it is due for refresh, and a 401 from the
// upstream drops it and retries once with a fresh one.
//
// Bindings (config.capnp, or wrangler.toml's vars, secrets and Durable Object binding):
//   UPSTREAM       the API's base URL; a request for /path?query goes to UPSTREAM/path?query, and
//                  to nowhere else: the upstream comes from this binding only (see upstreamURL)
//   TOKEN_REQUEST  the TokenRequest (JSON) whose token the upstream wants: a secret
//   TOKENS         optional: the TokenCoordinator namespace, so every isolate and Worker bound to it
//                  shares tokens, 429 gates, the fetch lock and a grant's lineage (else: per isolate)
//   TOKENWASM_CACHE_KEY  with TOKENS: 32 random bytes in base64, a secret (`openssl rand -base64 32`)
//   TOKEN_HOSTS    optional: extra allowed token hosts, comma-separated (Pattern's per-customer host)
//   ALLOW_LOOPBACK optional: "true" lets token requests reach loopback (tests against local fakes)
import { createClient, DurableObjectCache, TokenError } from 'tokenwasm';
import wasm from 'tokenwasm/tokenwasm.wasm'; // workerd compiles no wasm at run time: the plugin is a module
import { upstreamURL } from './upstream.js';

export { TokenCoordinator } from 'tokenwasm'; // the Durable Object class behind TOKENS

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
// Headers some servers (IIS, Symfony, proxies) read as the request's path or host.
const ROUTING_HEADERS = ['X-Original-URL', 'X-Rewrite-URL', 'X-Forwarded-Host', 'X-Forwarded-Prefix', 'X-HTTP-Method-Override'];

let client; // one per isolate: its tokens outlive requests

export default {
  async fetch(request, env) {
    client ??= createClient({
      wasm,
      allowedHosts: env.TOKEN_HOSTS ? env.TOKEN_HOSTS.split(',') : [],
      allowLoopback: env.ALLOW_LOOPBACK === 'true',
      cache: env.TOKENS ? new DurableObjectCache(env.TOKENS, { keys: [env.TOKENWASM_CACHE_KEY] }) : undefined,
    });
    const tokens = await client;
    const tokenRequest = typeof env.TOKEN_REQUEST === 'string' ? JSON.parse(env.TOKEN_REQUEST) : env.TOKEN_REQUEST;
    // Methods an API takes: TRACE (which echoes the request, the provider token with it) and CONNECT
    // never go upstream.
    if (!METHODS.has(request.method)) return Response.json({ error: 'invalid_request', message: 'method not allowed' }, { status: 405 });
    const target = upstreamURL(request.url, env.UPSTREAM);
    if (!target) return Response.json({ error: 'invalid_request', message: 'path not allowed' }, { status: 400 });
    const headers = new Headers(request.headers);
    headers.delete('Authorization'); // the caller's own credentials never go upstream
    headers.delete('Host');
    for (const h of ROUTING_HEADERS) headers.delete(h); // an upstream that honours them would route elsewhere
    try {
      const body = request.method === 'GET' || request.method === 'HEAD' ? undefined : await request.arrayBuffer();
      return await tokens.fetch(tokenRequest, target, { method: request.method, headers, body });
    } catch (err) {
      if (err instanceof TokenError) {
        // The typed error, never a secret; 502 or 503 for the caller, a policy error is a config bug.
        const status = err.error.kind === 'rate_limited' || err.error.retryable ? 503 : 502;
        return Response.json({ error: err.error.kind, message: err.error.message }, { status });
      }
      throw err;
    }
  },
};
