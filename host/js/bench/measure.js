// Measurements (a script, not a test), in Node or Deno:
//   node bench/measure.js            (Node 20: Debian's)
//   node_modules/.bin/deno run -A bench/measure.js
// Prints one line per figure:
//   - a cached token() per call, beside a plain Map lookup and an async function doing one;
//   - a fetched token (force: true) against a loopback provider, beside openid-client's
//     client-credentials grant against the same server;
//   - createClient (compile and instantiate), and one more instance.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import process from 'node:process';
import * as oidc from 'openid-client';
import { createClient, loadModule, Instance } from '../src/index.js';

const WASM = new URL('../tokenwasm.wasm', import.meta.url);
const runtime = globalThis.Deno ? `Deno ${Deno.version.deno}` : globalThis.Bun ? `Bun ${Bun.version}` : `Node ${process.versions.node}`;

/** perCall runs fn n times (after a warm-up) and returns nanoseconds per call, the best of 5 runs. */
async function perCall(n, fn) {
  for (let i = 0; i < n / 10; i++) await fn();
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await fn();
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
  }
  return best;
}
function perCallSync(n, fn) {
  for (let i = 0; i < n / 10; i++) fn();
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
  }
  return best;
}

// A loopback provider: a token for every request, as fast as it can.
let issued = 0;
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(JSON.stringify({ access_token: `bench-${++issued}`, token_type: 'Bearer', expires_in: 3600 }));
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const tokenURL = `http://127.0.0.1:${server.address().port}/token`;

const line = (what, v, unit = 'ns/op') => console.log(`${runtime}\t${what}\t${v.toFixed(v < 10 ? 2 : 0)} ${unit}`);

// Instantiation.
const bytes = readFileSync(WASM);
let t0 = performance.now();
const client = await createClient({ wasm: bytes, allowLoopback: true });
line('createClient (compile + 1 instance)', (performance.now() - t0) * 1000, 'us');
const module = await loadModule(bytes);
line('one more instance of a compiled module', (await perCall(50, () => new Instance(module))) / 1000, 'us');

// Cached token() beside Map lookups.
const req = Object.freeze({ provider: 'nikohealth', client_id: 'bench-client', client_secret: 'bench-secret-1', token_url: tokenURL });
const first = await client.token(req);
if (!first.token) throw new Error(JSON.stringify(first));
const N = 1_000_000;
const map = new Map([[JSON.stringify(req), first]]);
const key = JSON.stringify(req);
line('Map.get (sync)', perCallSync(N, () => map.get(key)));
const asyncGet = async (k) => map.get(k);
line('await of an async Map.get', await perCall(N, () => asyncGet(key)));
line('await client.token(frozen request), cached', await perCall(N, () => client.token(req)));
const plain = { ...req };
line('await client.token(plain object), cached', await perCall(N / 4, () => client.token(plain)));

// A fetched token beside openid-client's client-credentials grant, same server.
const forced = { ...req, force: true };
const fetchNs = await perCall(2000, () => client.token(forced));
line('client.token({force: true}): a fetch through the plugin', fetchNs / 1000, 'us');
const config = new oidc.Configuration({ issuer: `http://127.0.0.1:${server.address().port}`, token_endpoint: tokenURL }, 'bench-client', 'bench-secret-1');
oidc.allowInsecureRequests(config);
const oidcNs = await perCall(2000, () => oidc.clientCredentialsGrant(config));
line('openid-client clientCredentialsGrant', oidcNs / 1000, 'us');
console.log(`${runtime}\tratio fetch/openid-client\t${(fetchNs / oidcNs).toFixed(2)}`);

await client.close();
server.close();
