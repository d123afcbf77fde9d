// SMART on FHIR Backend Services against the SMART fake of `tokenwasm fakes` (host/providertest's,
// which verifies each private_key_jwt assertion's signature, iss, sub, aud, exp and jti), in every
// runtime (test/suite.js): the fake's own client key, a PKCS #8 PEM (env.fakes.smart.key_pem); then
// keys made with WebCrypto, not extractable, whose JWK Set (client.jwks()) is registered at the fake
// (POST /_jwks, as a developer portal takes it), so the fake verifies their assertions with that
// document alone. The token URL is discovered from fhir_base.
import { createClient } from '../src/edge.js'; // no node: module: this file runs in workerd too

function ok(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(got, want, msg) {
  if (got !== want) throw new Error(`${msg}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
const requests = async (smart) => (await (await fetch(smart.stats_url)).json()).requests;

/** backendServices gets tokens with each key: fetched, served from memory, forced. */
export async function backendServices(env) {
  const smart = env.fakes.smart;
  ok(smart?.fhir_base && smart.key_pem, 'no SMART fake with its key in env.fakes (tokenwasm fakes, test/runtimes.js)');
  const { client_id: id, key_id: pemKid, assertion_alg: pemAlg, scope } = smart.config;
  const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`; // kids of this runtime's run
  const rsa = await crypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-384' }, false, ['sign', 'verify']);
  const ec = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign', 'verify']);
  const made = [
    [`rsa-${run}`, 'RS384', rsa],
    [`ec-${run}`, 'ES384', ec],
  ];
  const client = await createClient({
    wasm: env.wasm,
    allowLoopback: true,
    signers: [{ kid: pemKid, key: smart.key_pem, clients: [id] }, ...made.map(([kid, , key]) => ({ kid, key, clients: [id] }))],
  });
  try {
    const req = (kid, alg, extra = {}) => ({ provider: 'smart', client_id: id, key_id: kid, assertion_alg: alg, fhir_base: smart.fhir_base, scope, ...extra });
    const before = await requests(smart);
    const unknown = await client.token(req(made[0][0], 'RS384'));
    eq(unknown.error?.kind, 'invalid_client', `before the JWK Set is registered: ${JSON.stringify(unknown)}`);

    const published = client.jwks();
    eq(published.headers.get('content-type'), 'application/jwk-set+json', 'JWKS media type');
    const doc = await published.text();
    ok(!/"(d|p|q|dp|dq|qi)":/.test(doc), `private members in ${doc}`);
    const reg = await fetch(new URL('/_jwks', smart.token_url), { method: 'POST', headers: { 'Content-Type': 'application/jwk-set+json' }, body: doc });
    eq(reg.status, 200, `registering ${doc}: ${await reg.text()}`);

    for (const [kid, alg] of [[pemKid, pemAlg], ...made]) {
      const start = await requests(smart);
      const first = await client.token(req(kid, alg, { force: true })); // force: past what an earlier run cached
      ok(first.token, `${kid} ${alg}: ${JSON.stringify(first)}`);
      eq(first.cached, false, `${alg}: first cached`);
      const api = await fetch(smart.api_url, { headers: { Authorization: `Bearer ${first.token.access_token}` } });
      eq(api.status, 200, `${alg}: the token works at the fake's API`);
      const again = await client.token(req(kid, alg));
      eq(again.token?.access_token, first.token.access_token, `${alg}: served from memory`);
      const forced = await client.token(req(kid, alg, { force: true }));
      ok(forced.token && forced.token.access_token !== first.token.access_token, `${alg}: a forced fetch signs a new assertion: ${JSON.stringify(forced)}`);
      eq((await requests(smart)) - start, 2, `${alg}: requests at the fake`);
    }

    // A bound key refuses to sign for another client: nothing is sent.
    const start = await requests(smart);
    const stranger = await client.token(req(made[1][0], 'ES384', { client_id: 'stranger-app' }));
    eq(stranger.error?.kind, 'signing', JSON.stringify(stranger));
    ok(/does not sign for this client/.test(stranger.error.message), stranger.error.message);
    eq(await requests(smart), start, 'nothing sent for the stranger');
    eq((await requests(smart)) - before, 7, 'one refused, six accepted requests');
  } finally {
    await client.close();
  }
}
