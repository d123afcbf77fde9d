// tokenwasm for Cloudflare Workers, workerd and browsers (package.json's "workerd", "worker",
// "browser" and "default" conditions): the same API as index.js, and no `node:` module anywhere on
// its import graph, so esbuild (--platform=neutral or browser) and wrangler bundle it as it is. The
// plugin is passed to createClient as a WebAssembly.Module (a module of the worker) or its bytes.
export { createClient, loadModule, TokenError } from './client.js';
export { MemoryCache } from './cache.js';
export { DurableObjectCache, TokenCoordinator } from './durable.js';
export { httpSender, parseAllowedHosts, DEFAULT_ALLOWED_HOSTS, MAX_RESPONSE_BYTES, MAX_RESPONSE_HEADER_BYTES } from './http.js';
export { Instance, PluginTrap, DEFAULT_MEMORY_LIMIT_BYTES } from './kernel.js';
