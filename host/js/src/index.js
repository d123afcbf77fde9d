// tokenwasm: OAuth 2.0 tokens for healthcare and banking providers from one WebAssembly plugin, in
// any runtime with WebAssembly and fetch (Node, Deno, Bun, Cloudflare Workers). Types: index.d.ts.
export { createClient, loadModule, TokenError } from './client.js';
export { MemoryCache } from './cache.js';
export { httpSender, parseAllowedHosts, DEFAULT_ALLOWED_HOSTS, MAX_RESPONSE_BYTES, MAX_RESPONSE_HEADER_BYTES } from './http.js';
export { Instance, PluginTrap } from './kernel.js';
