// A tokenwasm host for Node.js on the official Extism JavaScript SDK (@extism/extism): it loads the
// plugin, supplies the four imports of abi/ABI.md (http_send with fetch, the cache in a Map with TTLs)
// and exposes the exports. It is the worked example of "hosting it elsewhere" in abi/ABI.md.
import createPlugin from '@extism/extism';
import { readFile } from 'node:fs/promises';

const MAX_RESPONSE_BYTES = (1 << 20) + 1; // one byte more than the plugin parses

/** isLoopback reports whether a URL's host is a loopback address. */
function isLoopback(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\./.test(hostname);
}

/** MapCache is the in-memory cache: values with TTLs, store-if-absent and compare-and-delete. */
export class MapCache {
  #entries = new Map();
  get(key) {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (Date.now() >= e.expires) { this.#entries.delete(key); return undefined; }
    return e.value;
  }
  set(key, value, ttlMs, nx = false) {
    if (nx && this.get(key) !== undefined) return false;
    this.#entries.set(key, { value, expires: Date.now() + ttlMs });
    return true;
  }
  delete(key, ifValue) {
    if (ifValue !== undefined && this.get(key) !== ifValue) return;
    this.#entries.delete(key);
  }
}

/**
 * createHost loads the plugin.
 * @param {{wasm?: string|Uint8Array, allowLoopback?: boolean, allowedHosts?: string[], cache?: MapCache}} opts
 */
export async function createHost({ wasm, allowLoopback = false, allowedHosts = [], cache = new MapCache() } = {}) {
  const bytes = typeof wasm === 'string' ? await readFile(wasm) : wasm;
  const reply = (ctx, value) => ctx.store(JSON.stringify(value));
  const input = (ctx, offset) => JSON.parse(ctx.read(offset).text());

  // http_send: https to allowed hosts only, plain http only to loopback when allowed, no redirects
  // followed, a timeout, and a capped body. Failures are {"error"} answers, never exceptions.
  async function httpSend(req) {
    let url;
    try { url = new URL(req.url); } catch { return { error: 'invalid token URL' }; }
    const loopback = isLoopback(url.hostname);
    const allowed = (url.protocol === 'https:' && (allowedHosts.includes(url.hostname) || (loopback && allowLoopback))) ||
      (url.protocol === 'http:' && loopback && allowLoopback);
    if (!allowed) return { error: `refused by host policy: ${url.hostname} is not an allowed token host` };
    try {
      const resp = await fetch(url, {
        method: req.method, headers: req.headers, body: req.body, redirect: 'manual',
        signal: AbortSignal.timeout(req.timeout_ms || 10000),
      });
      const reader = resp.body?.getReader();
      const chunks = [];
      let size = 0;
      while (reader && size < MAX_RESPONSE_BYTES) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        size += value.length;
      }
      await reader?.cancel();
      const body = Buffer.concat(chunks).subarray(0, MAX_RESPONSE_BYTES).toString('utf8');
      return { status: resp.status, headers: Object.fromEntries(resp.headers), body };
    } catch (err) {
      return { error: err.name === 'TimeoutError' ? 'timeout waiting for the token endpoint' : String(err.cause?.code || err.message) };
    }
  }

  const plugin = await createPlugin({ wasm: [{ data: bytes }] }, {
    useWasi: true,
    runInWorker: true, // http_send is async (fetch); the SDK runs async host functions this way only
    functions: {
      'extism:host/user': {
        http_send: async (ctx, offset) => reply(ctx, await httpSend(input(ctx, offset))),
        cache_get: (ctx, offset) => {
          const value = cache.get(input(ctx, offset).key);
          return reply(ctx, value === undefined ? { hit: false } : { hit: true, value });
        },
        cache_set: (ctx, offset) => {
          const { key, value, ttl_ms: ttl, nx } = input(ctx, offset);
          return reply(ctx, { stored: cache.set(key, value, ttl, nx === true) });
        },
        cache_delete: (ctx, offset) => {
          const { key, if_value: ifValue } = input(ctx, offset);
          cache.delete(key, ifValue);
          return reply(ctx, {});
        },
      },
    },
  });

  let calls = Promise.resolve();
  /** call runs one export with a JSON input; calls are serialized (an instance is single-threaded). */
  async function call(name, value) {
    const run = async () => {
      const out = await plugin.call(name, value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value));
      // @extism/extism 1.0.3 never frees memory blocks between calls; without a reset every call
      // fails after some thousands (TOOLCHAIN.md). Reset after each call.
      await plugin.reset();
      return out === null ? null : JSON.parse(out.text());
    };
    const result = calls.then(run, run);
    calls = result.catch(() => {});
    return result;
  }

  /** token runs the token export, waiting while another host fetches (the "pending" answer). */
  async function token(req) {
    for (;;) {
      const res = await call('token', req);
      if (!res.pending) return res;
      await new Promise((r) => setTimeout(r, res.pending.retry_after_ms));
    }
  }

  return {
    call,
    token,
    invalidate: (req) => call('invalidate', req),
    describe: () => call('describe'),
    close: () => plugin.close(),
  };
}
