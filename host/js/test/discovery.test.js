// SMART discovery in JavaScript, the Go host's rules (host/discovery.go): a smart request's fhir_base
// leads to {fhir_base}/.well-known/smart-configuration, fetched through the client's policy (the
// document, then its token and revocation endpoints, each held to it; a redirect followed to the same
// host only), kept an hour per FHIR base and fetched once for concurrent callers; failures are typed
// and not kept. The network is a stand-in fetch (createClient's `fetch`), so real host names are
// judged by the policy; nothing leaves the machine.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../src/index.js';
import { WASM } from './support.js';

const CONF = '/.well-known/smart-configuration';
const conf = (over = {}) => ({
  token_endpoint: 'https://ehr.example/oauth2/token',
  revocation_endpoint: 'https://ehr.example/oauth2/revoke',
  token_endpoint_auth_methods_supported: ['private_key_jwt'],
  ...over,
});
let signer;
before(async () => {
  signer = { kid: 'ec-1', key: await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign', 'verify']), clients: ['backend-app'] };
});

/**
 * net is a stand-in network: routes maps a URL to a Response maker (or the configuration JSON);
 * every request is logged as "METHOD url". A token endpoint answers a token.
 */
function net(routes) {
  const log = [];
  const fetch = async (url, init = {}) => {
    const u = String(url);
    log.push(`${init.method ?? 'GET'} ${u}`);
    if (u.endsWith('/oauth2/token')) return Response.json({ access_token: `tok-${log.length}`, token_type: 'Bearer', expires_in: 300 });
    const r = routes[u];
    if (r === undefined) return new Response('not found', { status: 404 });
    if (typeof r === 'function') return r(init);
    return new Response(typeof r === 'string' ? r : JSON.stringify(r), { headers: { 'Content-Type': 'application/json' } });
  };
  return { fetch, log, discoveries: () => log.filter((l) => l.endsWith(CONF)).length, tokens: () => log.filter((l) => l.endsWith('/oauth2/token')).length };
}

const smart = (fhirBase, extra = {}) => ({ provider: 'smart', client_id: 'backend-app', key_id: 'ec-1', assertion_alg: 'ES384', fhir_base: fhirBase, scope: 'system/Patient.rs', ...extra });

test('the token URL is discovered through the policy, once per FHIR base, for concurrent callers too', async () => {
  const n = net({ [`https://ehr.example/fhir${CONF}`]: conf(), [`https://fhir.hospital.example/r4${CONF}`]: conf({ token_endpoint: 'https://auth.hospital.example/tenants/t1/oauth2/token', revocation_endpoint: undefined }) });
  const client = await createClient({ wasm: WASM, fetch: n.fetch, allowedHosts: ['ehr.example', 'fhir.hospital.example', 'auth.hospital.example'], signers: [signer] });
  try {
    const first = await client.token(smart('https://ehr.example/fhir/')); // a trailing slash is the same base
    assert.ok(first.token, JSON.stringify(first));
    assert.deepEqual(n.log, [`GET https://ehr.example/fhir${CONF}`, 'POST https://ehr.example/oauth2/token']);
    // Other credential sets on the same base, at once: no second discovery.
    const many = await Promise.all(['system/Observation.rs', 'system/Encounter.rs', 'system/Condition.rs'].map((scope) => client.token(smart('https://ehr.example/fhir', { scope }))));
    for (const r of many) assert.ok(r.token, JSON.stringify(r));
    assert.equal(n.discoveries(), 1);
    assert.ok((await client.token(smart('https://ehr.example/fhir', { force: true }))).token);
    assert.equal(n.discoveries(), 1, 'a forced fetch does not discover again');
    // Oracle Health's shape: the token endpoint on another (allowed) host than the FHIR server.
    const other = await Promise.all([0, 1, 2].map(() => client.token(smart('https://fhir.hospital.example/r4'))));
    for (const r of other) assert.ok(r.token, JSON.stringify(r));
    assert.equal(n.discoveries(), 2, 'one discovery for three concurrent callers of a new base');
    assert.ok(n.log.includes('POST https://auth.hospital.example/tenants/t1/oauth2/token'));
    // invalidate resolves the request as token does (the same credential set).
    assert.deepEqual(await client.invalidate(smart('https://ehr.example/fhir')), {});
    assert.equal(n.discoveries(), 2);
  } finally {
    await client.close();
  }
});

test('a request with its own token_url, or another provider, is not discovered', async () => {
  const n = net({});
  const client = await createClient({ wasm: WASM, fetch: n.fetch, allowedHosts: ['ehr.example'], signers: [signer] });
  try {
    assert.ok((await client.token(smart('https://ehr.example/fhir', { token_url: 'https://ehr.example/oauth2/token' }))).token);
    assert.equal(n.discoveries(), 0);
  } finally {
    await client.close();
  }
});

test('refusals: typed errors, nothing signed or sent to a token endpoint, failures not kept', async () => {
  const big = JSON.stringify(conf({ pad: 'x'.repeat(64 << 10) }));
  const redirect = (to) => () => new Response(null, { status: 302, headers: { Location: to } });
  const routes = {
    [`https://ehr.example/nomethod${CONF}`]: conf({ token_endpoint_auth_methods_supported: ['client_secret_basic'] }),
    [`https://ehr.example/offtoken${CONF}`]: conf({ token_endpoint: 'https://elsewhere.example/oauth2/token' }),
    [`https://ehr.example/httptoken${CONF}`]: conf({ token_endpoint: 'http://ehr.example/oauth2/token' }),
    [`https://ehr.example/offrevoke${CONF}`]: conf({ revocation_endpoint: 'https://elsewhere.example/revoke' }),
    [`https://ehr.example/relative${CONF}`]: conf({ token_endpoint: '/oauth2/token' }),
    [`https://ehr.example/notoken${CONF}`]: { issuer: 'x' },
    [`https://ehr.example/tokennum${CONF}`]: conf({ token_endpoint: 7 }),
    [`https://ehr.example/revnum${CONF}`]: conf({ revocation_endpoint: ['x'] }),
    [`https://ehr.example/notjson${CONF}`]: '<html>',
    [`https://ehr.example/array${CONF}`]: '[{"token_endpoint":"https://ehr.example/oauth2/token"}]',
    [`https://ehr.example/big${CONF}`]: big,
    [`https://ehr.example/down${CONF}`]: () => new Response('', { status: 503 }),
    [`https://ehr.example/busy${CONF}`]: () => new Response('', { status: 429 }),
    [`https://ehr.example/gone${CONF}`]: () => new Response('', { status: 410 }),
    [`https://ehr.example/reset${CONF}`]: () => {
      throw new TypeError('fetch failed', { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) });
    },
    [`https://ehr.example/away${CONF}`]: redirect('https://evil.example/fhir/.well-known/smart-configuration'),
    [`https://ehr.example/loop${CONF}`]: redirect(`https://ehr.example/loop${CONF}`),
    // The first of a repeated member is read, as the plugin and the Go host read: the last is off-policy.
    [`https://ehr.example/firstbad${CONF}`]: `{"token_endpoint":"https://elsewhere.example/t","token_endpoint":"https://ehr.example/oauth2/token","token_endpoint_auth_methods_supported":["private_key_jwt"]}`,
  };
  const n = net(routes);
  const signed = [];
  const logger = { warn: (m, a) => signed.push(JSON.stringify([m, a])), debug: () => {} };
  const client = await createClient({ wasm: WASM, fetch: n.fetch, logger, allowedHosts: ['ehr.example'], signers: [signer] });
  const strict = await createClient({ wasm: WASM, fetch: n.fetch, signers: [signer] });
  try {
    for (const [c, base, kind, why] of [
      [client, 'http://127.0.0.1:9/fhir', 'policy', /loopback host 127\.0\.0\.1 is not allowed/],
      [client, 'http://ehr.example/fhir', 'policy', /https only/],
      [strict, 'https://ehr.example/fhir', 'policy', /ehr\.example is not an allowed token host/],
      [client, 'https://ehr.example:8443/fhir', 'policy', /ehr\.example:8443 is not an allowed token host/],
      [client, 'https://ehr.example/fhir?tenant=1', 'invalid_request', /fhir_base is not an absolute URL without query/],
      [client, 'ehr.example/fhir', 'invalid_request', /fhir_base is not an absolute URL/],
      [client, 'https://ehr.example/nomethod', 'policy', /does not list private_key_jwt/],
      [client, 'https://ehr.example/offtoken', 'policy', /token_endpoint refused by host policy: elsewhere\.example is not an allowed token host/],
      [client, 'https://ehr.example/httptoken', 'policy', /token_endpoint refused by host policy: http: to ehr\.example \(https only\)/],
      [client, 'https://ehr.example/offrevoke', 'policy', /revocation_endpoint is not an allowed absolute URL/],
      [client, 'https://ehr.example/relative', 'malformed_response', /token_endpoint is not an absolute URL/],
      [client, 'https://ehr.example/notoken', 'malformed_response', /no token_endpoint/],
      [client, 'https://ehr.example/tokennum', 'malformed_response', /no token_endpoint/],
      [client, 'https://ehr.example/revnum', 'malformed_response', /no token_endpoint/],
      [client, 'https://ehr.example/notjson', 'malformed_response', /no token_endpoint/],
      [client, 'https://ehr.example/array', 'malformed_response', /no token_endpoint/],
      [client, 'https://ehr.example/big', 'malformed_response', /exceeds 64 KiB/],
      [client, 'https://ehr.example/down', 'server_error', /HTTP 503/],
      [client, 'https://ehr.example/busy', 'server_error', /HTTP 429/],
      [client, 'https://ehr.example/gone', 'malformed_response', /HTTP 410/],
      [client, 'https://ehr.example/none', 'malformed_response', /HTTP 404/],
      [client, 'https://ehr.example/reset', 'transport', /ECONNRESET/],
      [client, 'https://ehr.example/away', 'policy', /redirect to another host/],
      [client, 'https://ehr.example/loop', 'policy', /too many redirects/],
      [client, 'https://ehr.example/firstbad', 'policy', /token_endpoint refused by host policy: elsewhere\.example/],
    ]) {
      const res = await c.token(smart(base));
      assert.equal(res.error?.kind, kind, `${base}: ${JSON.stringify(res)}`);
      assert.match(res.error.message, /^SMART discovery: /, base);
      assert.match(res.error.message, why, base);
      assert.equal(res.error.retryable, kind === 'transport' || kind === 'server_error', `${base}: retryable`);
    }
    assert.equal(n.tokens(), 0, 'no token endpoint was called');
    assert.ok(!signed.some((l) => l.includes('signing')), 'no key was asked to sign');
    assert.ok(!n.log.some((l) => l.includes('evil.example') || l.includes('127.0.0.1')), 'no off-policy URL fetched');
    // Failures are not kept: the next call asks again, and succeeds once the server is back.
    const before = n.discoveries();
    routes[`https://ehr.example/down${CONF}`] = conf();
    assert.ok((await client.token(smart('https://ehr.example/down'))).token);
    assert.equal(n.discoveries(), before + 1);
  } finally {
    await Promise.all([client.close(), strict.close()]);
  }
});

test('a redirect to the same host is followed, each hop held to the policy', async () => {
  const n = net({
    [`https://ehr.example/old${CONF}`]: () => new Response(null, { status: 301, headers: { Location: `/new${CONF}` } }),
    [`https://ehr.example/new${CONF}`]: conf(),
  });
  const client = await createClient({ wasm: WASM, fetch: n.fetch, allowedHosts: ['ehr.example'], signers: [signer] });
  try {
    const res = await client.token(smart('https://ehr.example/old'));
    assert.ok(res.token, JSON.stringify(res));
    assert.deepEqual(n.log, [`GET https://ehr.example/old${CONF}`, `GET https://ehr.example/new${CONF}`, 'POST https://ehr.example/oauth2/token']);
  } finally {
    await client.close();
  }
});
