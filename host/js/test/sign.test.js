// The sign action in JavaScript (src/sign.js): keys as CryptoKey, CryptoKeyPair, JWK and PKCS #8 PEM
// sign RS256, RS384, PS256, ES256 and ES384 through the real plugin; the assertions verify with the
// published JWK Set alone (importKey from its JWK, crypto.subtle.verify); a bound key reads the
// assertion as the Go host does (host/signer_binding_test.go); refusals are kind `signing`, name no
// key material, and send nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../src/index.js';
import { signsFor, createSigners } from '../src/sign.js';
import { WASM, serve } from './support.js';

const { subtle } = globalThis.crypto;
const enc = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
const GEN = {
  RS256: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
  RS384: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-384' },
  PS256: { name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  ES384: { name: 'ECDSA', namedCurve: 'P-384' },
};
const VERIFY = {
  RS256: { name: 'RSASSA-PKCS1-v1_5' },
  RS384: { name: 'RSASSA-PKCS1-v1_5' },
  PS256: { name: 'RSA-PSS', saltLength: 32 },
  ES256: { name: 'ECDSA', hash: 'SHA-256' },
  ES384: { name: 'ECDSA', hash: 'SHA-384' },
};
const SIG_BYTES = { RS256: 256, RS384: 256, PS256: 256, ES256: 64, ES384: 96 };
/** bare is a JWK without alg (WebCrypto exports RSA keys with one), key_ops and ext: a key that names no algorithm. */
const bare = ({ alg: _a, key_ops: _o, ext: _e, ...jwk }) => jwk;
const pem = (der) => `-----BEGIN PRIVATE KEY-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`;

/** keys has, per algorithm, an extractable pair and its forms: private JWK, PKCS #8 PEM, and a non-extractable CryptoKey. */
const keys = {};
before(async () => {
  for (const [alg, params] of Object.entries(GEN)) {
    const pair = await subtle.generateKey(params, true, ['sign', 'verify']);
    const jwk = await subtle.exportKey('jwk', pair.privateKey);
    const der = await subtle.exportKey('pkcs8', pair.privateKey);
    const locked = await subtle.importKey('pkcs8', der, params, false, ['sign']);
    keys[alg] = { pair, jwk, pem: pem(der), locked, publicJwk: await subtle.exportKey('jwk', pair.publicKey) };
  }
});

/** verifyWithJWKS checks a compact JWS with the JWK Set document alone, as a server does. */
async function verifyWithJWKS(doc, jws) {
  const [h, p, s] = jws.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const jwk = JSON.parse(doc).keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `kid ${header.kid} in ${doc}`);
  if (jwk.alg !== undefined) assert.equal(jwk.alg, header.alg, 'the JWK names the assertion alg');
  const { kid: _k, use, alg: _a, ...members } = jwk;
  assert.equal(use, 'sig');
  const params = { ...GEN[header.alg] };
  const key = await subtle.importKey('jwk', members, params, false, ['verify']);
  const sig = Buffer.from(s, 'base64url');
  assert.equal(sig.length, SIG_BYTES[header.alg], `${header.alg} signature bytes`);
  return subtle.verify(VERIFY[header.alg], key, sig, Buffer.from(`${h}.${p}`));
}

/** tokenEndpoint is a loopback token endpoint that keeps the client assertions it is sent. */
async function tokenEndpoint() {
  const seen = [];
  let n = 0;
  const srv = await serve((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ access_token: `tok-${++n}`, token_type: 'Bearer', expires_in: 3600 }));
  });
  // serve() drops bodies: wrap fetch to keep the assertion the client sends.
  const fetchAndKeep = async (url, init) => {
    if (typeof init?.body === 'string' && init.body.includes('client_assertion=')) seen.push(new URLSearchParams(init.body).get('client_assertion'));
    return fetch(url, init);
  };
  return { srv, seen, fetch: fetchAndKeep };
}

const customReq = (url, kid, alg, extra = {}) => ({
  provider: 'custom',
  client_id: 'backend-app',
  key_id: kid,
  assertion_alg: alg,
  profile: { token_url: url, client_auth: 'private_key_jwt', body: 'form' },
  ...extra,
});

test('every key form signs its algorithms through the plugin; each assertion verifies with client.jwks() alone', async () => {
  const t = await tokenEndpoint();
  const forms = [];
  for (const alg of Object.keys(GEN)) {
    const k = keys[alg];
    forms.push(
      [`${alg}-locked`, alg, { key: k.locked, publicKey: k.pair.publicKey }],
      [`${alg}-pair`, alg, { key: { privateKey: k.locked, publicKey: k.pair.publicKey } }],
      [`${alg}-jwk`, alg, { key: k.jwk, alg }],
      [`${alg}-json`, alg, { key: JSON.stringify(k.jwk), alg }],
      [`${alg}-pem`, alg, { key: k.pem, alg }],
    );
  }
  // Unpinned RSA keys (a JWK and a PEM without alg) sign each RSA algorithm, as Go's WithSigner does.
  for (const alg of ['RS256', 'RS384', 'PS256']) forms.push([`rsa-any-jwk-${alg}`, alg, { key: bare(keys.RS256.jwk) }], [`rsa-any-pem-${alg}`, alg, { key: keys.PS256.pem }]);
  const client = await createClient({ wasm: WASM, allowLoopback: true, fetch: t.fetch, signers: forms.map(([kid, , o]) => ({ kid, clients: ['backend-app'], ...o })) });
  try {
    const doc = await client.jwks().text();
    assert.ok(!/"(d|p|q|dp|dq|qi)":/.test(doc), 'public members only');
    for (const [kid, alg] of forms) {
      const res = await client.token(customReq(t.srv.url, kid, alg));
      assert.ok(res.token, `${kid}: ${JSON.stringify(res)}`);
      const jws = t.seen.at(-1);
      const header = JSON.parse(Buffer.from(jws.split('.')[0], 'base64url'));
      assert.deepEqual([header.alg, header.kid], [alg, kid]);
      assert.equal(await verifyWithJWKS(doc, jws), true, `${kid}: verifies with the JWKS`);
      const [h, p, s] = jws.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url'));
      const changed = `${h}.${enc({ ...claims, iss: 'other' })}.${s}`;
      assert.equal(await verifyWithJWKS(doc, changed), false, `${kid}: a changed payload does not verify`);
    }
    assert.equal(t.srv.count(), forms.length);
  } finally {
    await client.close();
    await t.srv.close();
  }
});

test('the JWK Set: sorted by kid, use sig, alg when the key signs one algorithm, the media type and cache headers', async () => {
  const client = await createClient({
    wasm: WASM,
    signers: [
      { kid: 'z-ec', key: keys.ES256.pair },
      { kid: 'a-rsa', key: bare(keys.RS384.jwk) },
      { kid: 'm-rsa', key: keys.PS256.locked, publicKey: keys.PS256.publicJwk },
    ],
  });
  try {
    const res = client.jwks();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/jwk-set+json');
    assert.equal(res.headers.get('cache-control'), 'public, max-age=300');
    const { keys: set } = await res.json();
    assert.deepEqual(
      set.map((k) => Object.keys(k).join(',')),
      ['kty,kid,use,n,e', 'kty,kid,use,alg,n,e', 'kty,kid,use,alg,crv,x,y'],
    );
    assert.deepEqual(
      set.map((k) => [k.kid, k.alg]),
      [
        ['a-rsa', undefined],
        ['m-rsa', 'PS256'],
        ['z-ec', 'ES256'],
      ],
    );
    assert.equal(set[0].n, keys.RS384.jwk.n);
    assert.equal(set[2].x, keys.ES256.jwk.x);
    assert.notEqual(client.jwks(), res, 'a new Response each call');
  } finally {
    await client.close();
  }
  const none = await createClient({ wasm: WASM });
  assert.equal(await none.jwks().text(), '{"keys":[]}');
  await none.close();
  const blind = await createClient({ wasm: WASM, signers: [{ kid: 'locked', key: keys.ES384.locked }] });
  assert.throws(() => blind.jwks(), /signer "locked" has no public key to publish/);
  await blind.close();
});

test('a bound key reads the assertion as the Go host does', () => {
  const header = enc({ alg: 'RS256', kid: 'k1', typ: 'JWT' });
  const input = (payload) => `${header}.${enc(payload)}`;
  const a = new Set(['a']);
  for (const [name, clients, signing, want] of [
    ['its client', a, input('{"iss":"a","sub":"a","aud":"u"}'), true],
    ['another client', a, input('{"iss":"b","sub":"b"}'), false],
    ['unbound key: any client', null, input('{"iss":"b","sub":"b"}'), true],
    ['bound to an empty list: no client', new Set(), input('{"iss":"a","sub":"a"}'), false],
    ['iss repeated, its client first', a, input('{"iss":"a","sub":"a","iss":"b"}'), false],
    ['iss repeated, its client last', a, input('{"iss":"b","sub":"a","iss":"a"}'), false],
    ['iss repeated with an escaped key', a, input('{"iss":"a","sub":"a","\\u0069ss":"b"}'), false],
    ['iss repeated in another case', a, input('{"iss":"a","sub":"a","ISS":"b"}'), false],
    ['sub repeated as \u017fub (folds to sub)', a, input('{"iss":"a","sub":"a","\u017fub":"b"}'), false],
    ['escaped key alone', a, input('{"\\u0069ss":"a","sub":"a"}'), true],
    ['sub names another client', a, input('{"iss":"a","sub":"b"}'), false],
    ['sub repeated', a, input('{"iss":"a","sub":"a","sub":"b"}'), false],
    ['iss in the header only', a, `${enc({ alg: 'RS256', iss: 'a' })}.${enc({ sub: 'a' })}`, false],
    ['iss not a string', a, input('{"iss":["a"],"sub":"a"}'), false],
    ['iss nested, not at the top', a, input('{"x":{"iss":"b","sub":"b"},"iss":"a","sub":"a"}'), true],
    ['payload padded base64', a, `${header}.${Buffer.from('{"iss":"a","sub":"a" }').toString('base64')}`, false],
    ['payload standard base64', a, `${header}.${Buffer.from('{"iss":"a","sub":">?>"}').toString('base64')}`, false],
    ['payload not UTF-8', a, `${header}.${Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString('base64url')}`, false],
    ['payload not JSON', a, input('{"iss":"a"'), false],
    ['payload an array', a, input('[{"iss":"a","sub":"a"}]'), false],
    ['no payload', a, header, false],
  ]) {
    assert.equal(signsFor(clients, signing), want, name);
  }
});

test('refusals are kind signing, name no key material, send nothing; without signers the flow ends signing_required', async () => {
  let sent = 0;
  const t = await serve((req, res) => {
    sent++;
    res.writeHead(500).end();
  });
  const logs = [];
  const logger = { warn: (msg, attrs) => logs.push(JSON.stringify([msg, attrs])), debug: () => {} };
  const client = await createClient({
    wasm: WASM,
    allowLoopback: true,
    logger,
    signers: [
      { kid: 'rsa', key: bare(keys.RS384.jwk), clients: ['backend-app'] },
      { kid: 'rs384-only', key: keys.RS384.pem, alg: 'RS384', clients: ['backend-app'] },
      { kid: 'p256', key: keys.ES256.jwk, clients: ['backend-app'] },
      { kid: 'nobody', key: keys.ES384.pair, clients: [] },
    ],
  });
  try {
    for (const [kid, alg, extra, why] of [
      ['unknown', 'RS256', {}, /no signing key for key id "unknown"/],
      ['rsa', 'ES384', {}, /an RSA key cannot sign ES384/],
      ['p256', 'ES384', {}, /an ECDSA P-256 key cannot sign ES384/],
      ['rs384-only', 'PS256', {}, /key id "rs384-only" signs RS384 only, not PS256/],
      ['rsa', 'RS256', { client_id: 'stranger-app' }, /key id "rsa" does not sign for this client/],
      ['nobody', 'ES384', {}, /key id "nobody" does not sign for this client/],
    ]) {
      const res = await client.token(customReq(t.url, kid, alg, extra));
      assert.equal(res.error?.kind, 'signing', `${kid} ${alg}: ${JSON.stringify(res)}`);
      assert.equal(res.error.retryable, false);
      assert.match(res.error.message, why);
    }
    assert.equal(sent, 0, 'nothing sent');
    const all = logs.join('\n');
    assert.match(all, /signing a client assertion failed/);
    for (const k of [keys.RS384.jwk, keys.ES256.jwk, keys.ES384.jwk]) assert.ok(!all.includes(k.d), 'no private key in the logs');
  } finally {
    await client.close();
  }
  const unsigned = await createClient({ wasm: WASM, allowLoopback: true });
  const res = await unsigned.token(customReq(t.url, 'rsa', 'RS256'));
  assert.equal(res.error?.kind, 'signing_required', JSON.stringify(res));
  await unsigned.close();
  await t.close();
  assert.equal(sent, 0);
});

test('the sign answer: r || s of the curve size, unpadded base64url; a signature of the wrong length or a failing signer is an error', async () => {
  const s = await createSigners([{ kid: 'ec', key: keys.ES384.jwk }, { kid: 'rsa', key: keys.RS256.pem }]);
  const si = `${enc({ alg: 'ES384', kid: 'ec' })}.${enc({ iss: 'a', sub: 'a' })}`;
  const ok = await s.sign({ alg: 'ES384', kid: 'ec', signing_input: si });
  assert.equal(Buffer.from(ok.signature, 'base64url').length, 96);
  assert.match(ok.signature, /^[A-Za-z0-9_-]+$/);
  for (const alg of ['HS256', '__proto__', 'constructor', 'toString']) {
    assert.deepEqual(await s.sign({ alg, kid: 'ec', signing_input: si }), { error: `unsupported algorithm ${JSON.stringify(alg)}` });
  }
  assert.deepEqual(await s.sign({ alg: 'ES384', kid: 'ec' }), { error: 'key id "ec" does not sign for this client' });
  assert.deepEqual(await s.sign(null), { error: 'no signing key for key id undefined' });
  // WebCrypto does not answer short signatures or fail on a good key; a stand-in for a broken one does.
  const real = subtle.sign;
  try {
    subtle.sign = async (...args) => new Uint8Array(await real.apply(subtle, args)).slice(1);
    assert.deepEqual(await s.sign({ alg: 'ES384', kid: 'ec', signing_input: si }), { error: 'signer returned 95 bytes, want 96' });
    assert.deepEqual(await s.sign({ alg: 'RS256', kid: 'rsa', signing_input: si }), { error: 'signer returned 255 bytes, want 256' });
    subtle.sign = async () => {
      throw new DOMException(`the key ${keys.ES384.jwk.d} failed`, 'OperationError');
    };
    assert.deepEqual(await s.sign({ alg: 'ES384', kid: 'ec', signing_input: si }), { error: 'signer: OperationError' }, "the error's name only: its message may say anything");
  } finally {
    delete subtle.sign;
  }
  assert.equal(subtle.sign, real);
});

test('createClient refuses signers it cannot use, naming the kid, never quoting the key', async () => {
  const small = await subtle.generateKey({ ...GEN.RS256, modulusLength: 1024 }, true, ['sign']);
  const smallJwk = await subtle.exportKey('jwk', small.privateKey);
  const p521 = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-521' }, true, ['sign']);
  const hmac = await subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, true, ['sign']);
  const pkcs1 = keys.RS256.pem.replace(/PRIVATE KEY/g, 'RSA PRIVATE KEY');
  for (const [name, signers, why] of [
    ['not an array', { kid: 'a', key: keys.ES256.jwk }, /signers must be an array/],
    ['no kid', [{ key: keys.ES256.jwk }], /each signer needs a kid/],
    ['kid over 256 bytes', [{ kid: 'k'.repeat(257), key: keys.ES256.jwk }], /each signer needs a kid/],
    ['kid given twice', [{ kid: 'a', key: keys.ES256.jwk }, { kid: 'a', key: keys.ES384.jwk }], /signer "a" is given twice/],
    ['unknown alg', [{ kid: 'a', key: bare(keys.RS256.jwk), alg: 'RS512' }], /signer "a": alg must be one of/],
    ['alg "constructor"', [{ kid: 'a', key: bare(keys.RS256.jwk), alg: 'constructor' }], /signer "a": alg must be one of/],
    ['a JWK alg "__proto__"', [{ kid: 'a', key: { ...bare(keys.RS256.jwk), alg: '__proto__' } }], /the JWK's alg must be one of/],
    ['a JWK crv "constructor"', [{ kid: 'a', key: { ...keys.ES256.jwk, crv: 'constructor' } }], /a JWK must be RSA/],
    ['alg of another kind', [{ kid: 'a', key: bare(keys.RS256.jwk), alg: 'ES256' }], /signer "a": an RSA key cannot sign ES256/],
    ['alg of another curve', [{ kid: 'a', key: keys.ES256.pem, alg: 'ES384' }], /signer "a": an ECDSA P-256 key cannot sign ES384/],
    ['alg unlike the CryptoKey', [{ kid: 'a', key: keys.RS384.locked, alg: 'RS256' }], /alg RS256 does not match the CryptoKey, which signs RS384/],
    ['alg unlike the JWK', [{ kid: 'a', key: keys.RS256.jwk, alg: 'PS256' }], /alg PS256 and the JWK's alg "RS256" differ/],
    ['clients not an array', [{ kid: 'a', key: keys.ES256.jwk, clients: 'backend-app' }], /clients must be an array/],
    ['RSA under 2048 bits', [{ kid: 'a', key: smallJwk }], /RSA keys under 2048 bits are refused/],
    ['P-521', [{ kid: 'a', key: p521.privateKey }], /must be RSASSA-PKCS1-v1_5/],
    ['an HMAC CryptoKey', [{ kid: 'a', key: hmac }], /must be a private key with the "sign" usage/],
    ['a public CryptoKey', [{ kid: 'a', key: keys.ES256.pair.publicKey }], /must be a private key with the "sign" usage/],
    ['a public JWK', [{ kid: 'a', key: keys.ES256.publicJwk }], /a JWK must be RSA/],
    ['PKCS #1 PEM', [{ kid: 'a', key: pkcs1 }], /"RSA PRIVATE KEY" is not an unencrypted PKCS #8 "PRIVATE KEY" \(convert it to PKCS #8/],
    ['garbled PEM', [{ kid: 'a', key: keys.RS256.pem.replace(/[A-Z]{10}/, '!!') }], /signer "a": (unreadable PEM|the (PKCS #8 key must be|key could not be imported))/],
    ['a JWK whose d is not its key', [{ kid: 'a', key: { ...keys.ES256.jwk, d: keys.ES256.jwk.x } }], /signer "a": (the key could not be imported|publicKey is not)/],
    ['another public key', [{ kid: 'a', key: keys.ES256.locked, publicKey: (await subtle.generateKey(GEN.ES256, true, ['sign'])).publicKey }], /publicKey is not the public half of this key/],
    ['a public key of another kind', [{ kid: 'a', key: keys.ES256.locked, publicKey: keys.RS256.publicJwk }], /publicKey is not the public half of this key/],
    ['a number', [{ kid: 'a', key: 42 }], /key must be a CryptoKey/],
  ]) {
    await assert.rejects(
      createClient({ wasm: WASM, signers }),
      (err) => {
        assert.ok(err instanceof TypeError, `${name}: ${err}`);
        assert.match(err.message, why, name);
        for (const k of Object.values(keys)) {
          assert.ok(!err.message.includes(k.jwk.d) && !err.message.includes(k.pem.split('\n')[1]), `${name}: key material in ${err.message}`);
        }
        return true;
      },
      name,
    );
  }
});
