// What signing a client assertion costs per fetch (a script, not a test), in Node, Deno or Bun:
//   node bench/sign.js
//   node_modules/.bin/deno run -A bench/sign.js
//   node_modules/.bin/bun bench/sign.js
// Prints one line per figure, for RS384 (RSA 2048) and ES384 (P-384) keys made with WebCrypto, in
// wall-clock and CPU microseconds (the process's, every thread: WebCrypto may sign off the main
// thread; the loopback provider runs in this process too). The best of several runs each; on a
// machine shared with other work, the CPU figure is the steadier one.
//   - crypto.subtle.sign of an assertion's signing input, alone;
//   - the sign action as the client answers it (src/sign.js: the key's binding read, base64url);
//   - a fetched token (force: true) with private_key_jwt, beside the same fetch with client_secret
//     Basic against the same loopback provider: the difference is what signing adds to a fetch.
import { createServer } from 'node:http';
import process from 'node:process';
import { createClient } from '../src/index.js';
import { createSigners } from '../src/sign.js';

const runtime = globalThis.Deno ? `Deno ${Deno.version.deno}` : globalThis.Bun ? `Bun ${Bun.version}` : `Node ${process.versions.node}`;
const fmt = (us) => us.toFixed(Math.abs(us) < 10 ? 2 : 0);
const line = (what, { wall, cpu }) => console.log(`${runtime}\t${what}\t${fmt(wall)} us wall\t${fmt(cpu)} us cpu`);
const cpuNow = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

/** timed runs fn n times and returns {wall, cpu}: microseconds per call. */
async function timed(n, fn) {
  const c0 = cpuNow();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return { wall: ((performance.now() - t0) * 1000) / n, cpu: (cpuNow() - c0) / n };
}
const better = (a, b) => ({ wall: Math.min(a.wall, b.wall), cpu: Math.min(a.cpu, b.cpu) });
const NONE = { wall: Infinity, cpu: Infinity };

/** perCall runs fn n times (after a warm-up), the best of 5 runs. */
async function perCall(n, fn) {
  for (let i = 0; i < Math.max(5, n / 10); i++) await fn();
  let best = NONE;
  for (let r = 0; r < 5; r++) best = better(best, await timed(n, fn));
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

const { subtle } = globalThis.crypto;
const rsa = await subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-384' }, false, ['sign', 'verify']);
const ec = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign', 'verify']);
const signers = [
  { kid: 'rsa', key: rsa, clients: ['bench-client'] },
  { kid: 'ec', key: ec, clients: ['bench-client'] },
];
const b64 = (o) => btoa(JSON.stringify(o)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const input = (alg, kid) =>
  `${b64({ alg, typ: 'JWT', kid })}.${b64({ iss: 'bench-client', sub: 'bench-client', aud: tokenURL, jti: crypto.randomUUID(), iat: 1767225600, exp: 1767225840 })}`;

const action = await createSigners(signers);
const client = await createClient({ allowLoopback: true, signers });
const secret = { provider: 'custom', client_id: 'bench-client', client_secret: 'bench-secret-1', force: true, profile: { token_url: tokenURL, client_auth: 'basic', body: 'form' } };
const signed = (kid, alg) => ({ provider: 'custom', client_id: 'bench-client', key_id: kid, assertion_alg: alg, force: true, profile: { token_url: tokenURL, client_auth: 'private_key_jwt', body: 'form' } });
for (const r of [secret, signed('rsa', 'RS384'), signed('ec', 'ES384')]) {
  const res = await client.token(r);
  if (!res.token) throw new Error(JSON.stringify(res));
}

// The fetches are measured in turns (a round of each, 7 rounds, the best kept), so a machine whose
// load changes meanwhile (a shared CI machine) weighs on each alike.
const N = { sign: 300, fetch: 200, rounds: 7 };
const fetches = { secret: secret, RS384: signed('rsa', 'RS384'), ES384: signed('ec', 'ES384') };
const best = { secret: NONE, RS384: NONE, ES384: NONE };
for (let r = 0; r < N.rounds; r++) {
  for (const [name, req] of Object.entries(fetches)) {
    for (let i = 0; i < 20; i++) await client.token(req);
    best[name] = better(best[name], await timed(N.fetch, () => client.token(req)));
  }
}
line('client.token({force: true}), client_secret Basic (no signature)', best.secret);
for (const [kid, alg, key] of [
  ['rsa', 'RS384', rsa.privateKey],
  ['ec', 'ES384', ec.privateKey],
]) {
  const si = new TextEncoder().encode(input(alg, kid));
  const params = alg === 'RS384' ? { name: 'RSASSA-PKCS1-v1_5' } : { name: 'ECDSA', hash: 'SHA-384' };
  line(`${alg}: crypto.subtle.sign alone`, await perCall(N.sign, () => subtle.sign(params, key, si)));
  const text = input(alg, kid);
  line(`${alg}: the sign action (binding read, sign, base64url)`, await perCall(N.sign, () => action.sign({ alg, kid, signing_input: text })));
  line(`${alg}: client.token({force: true}), private_key_jwt`, best[alg]);
  line(`${alg}: what signing adds to a fetch`, { wall: best[alg].wall - best.secret.wall, cpu: best[alg].cpu - best.secret.cpu });
}
await client.close();
server.close();
server.closeAllConnections?.();
process.exit(0);
