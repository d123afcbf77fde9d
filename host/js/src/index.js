// tokenwasm: OAuth 2.0 tokens for healthcare and banking providers from one WebAssembly plugin, in
// any runtime with WebAssembly and fetch (Node, Deno, Bun, Cloudflare Workers). Types: index.d.ts.
// This is the Node, Deno and Bun entry (package.json's "node" condition): edge.js's API, whose
// createClient and loadModule also read the plugin from a path or file URL, by default the
// package's own tokenwasm.wasm. Workers and bundlers get edge.js, which names no `node:` module.
import { readFile } from 'node:fs/promises';
import { createClient as createWith, loadModule as compile } from './client.js';

export { TokenError, MemoryCache, DurableObjectCache, TokenCoordinator, httpSender, parseAllowedHosts, DEFAULT_ALLOWED_HOSTS, MAX_RESPONSE_BYTES, MAX_RESPONSE_HEADER_BYTES, Instance, PluginTrap, DEFAULT_MEMORY_LIMIT_BYTES } from './edge.js';

/** read returns the plugin as bytes or a Module: a path or file URL is read (default: the package's). */
async function read(wasm = new URL('../tokenwasm.wasm', import.meta.url)) {
  return typeof wasm === 'string' || wasm instanceof URL ? readFile(wasm) : wasm;
}

/** loadModule compiles the plugin once: bytes, a path or file URL, or a WebAssembly.Module. */
export async function loadModule(wasm) {
  return compile(await read(wasm));
}

/** createClient: client.js's, with `wasm` also a path or file URL (default: the package's plugin). */
export async function createClient(options = {}) {
  return createWith({ ...options, wasm: await read(options.wasm) });
}
