// Compiled by test/types.test.js (tsc --noEmit -p test/types): what a TypeScript user of the package
// sees. Each @ts-expect-error must be an error, or tsc fails ("unused directive").
import { createClient, TokenError, type TokenRequest, type TokenAnswer, type Client, type Signer, type ErrorKind } from '../../src/index.js';
import { RedisCache } from '../../src/redis.js';

const ok: TokenRequest = { provider: 'nikohealth', domain: 'acme', client_id: 'id', client_secret: 'secret', scope: 'read', timeout_ms: 5000 };
const custom: TokenRequest = {
  provider: 'custom',
  client_id: 'id',
  client_secret: 'secret',
  token_url: 'https://idp.example.com/token',
  profile: { name: 'acme', client_auth: 'basic_rfc6749', body: 'form', grants: ['client_credentials'] },
};
const smart: TokenRequest = { provider: 'smart', client_id: 'app', key_id: 'key-1', assertion_alg: 'RS384', fhir_base: 'https://ehr.example.org/fhir' };

// @ts-expect-error a misspelt field (the plugin would refuse it: unknown field "scopes")
const misspelt: TokenRequest = { provider: 'nikohealth', client_id: 'id', client_secret: 'secret', scopes: 'read' };
// @ts-expect-error a misspelt profile field
const badProfile: TokenRequest = { provider: 'custom', client_id: 'id', client_secret: 's', profile: { client_auht: 'basic' } };
// @ts-expect-error a provider that does not exist
const badProvider: TokenRequest = { provider: 'okta', client_id: 'id', client_secret: 'secret' };
// @ts-expect-error a field of the wrong type
const badType: TokenRequest = { provider: 'candid', client_id: 'id', client_secret: 'secret', timeout_ms: '5000' };

async function use(client: Client, signal: AbortSignal): Promise<string> {
  const res: TokenAnswer = await client.token(ok, { signal });
  if (res.error) {
    // One style: every failure, an abort too, is an {error} answer.
    const aborted: true | undefined = res.error.aborted;
    return `${res.error.kind}${aborted ? ' (aborted)' : ''}: ${res.error.message}`;
  }
  const expires: number = res.token.expires_at_ms;
  try {
    await client.fetch(custom, 'https://api.example.com/v1');
  } catch (err) {
    if (err instanceof TokenError) return err.error.kind;
    throw err;
  }
  return `${res.token.access_token} until ${expires}`;
}

// Signers: a CryptoKey, a CryptoKeyPair, a JWK or a PEM, each bound to its clients; jwks() is a Response.
declare const pair: CryptoKeyPair;
const signers: Signer[] = [
  { kid: 'ec-1', key: pair, clients: ['app'] },
  { kid: 'locked', key: pair.privateKey, publicKey: pair.publicKey, alg: 'ES384' },
  { kid: 'pem', key: '-----BEGIN PRIVATE KEY-----...', alg: 'RS384', clients: [] },
  { kid: 'jwk', key: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd' } },
];
// @ts-expect-error an algorithm the sign action does not take
const hs256: Signer = { kid: 'k', key: pair, alg: 'HS256' };
async function publish(client: Client): Promise<Response> {
  const res = await client.token(smart);
  const kind: ErrorKind | undefined = res.error?.kind;
  if (kind === 'signing' || kind === 'signing_required') throw new TokenError(res.error!);
  return client.jwks();
}
const signing = createClient({ signers });

declare const redis: { withTypeMapping(m: object): any };
const cache = new RedisCache(redis, { keys: [new Uint8Array(32)], logger: console });
const counts: number = cache.decryptFailures + cache.keyErrors;

export { use, smart, misspelt, badProfile, badProvider, badType, counts, createClient, hs256, publish, signing };
