// The sign action (abi/ABI.md, "The sign action"): a private_key_jwt client assertion is signed here,
// with WebCrypto (crypto.subtle: Node, Deno, Bun, workerd), never in the plugin. The plugin builds the
// JWS signing input and asks for a signature; this file answers it with the key registered under the
// request's key_id, as the Go host's WithSigner does (host/signer.go), and gives the keys' public
// halves as a JWK Set to publish. createClient loads this module only when it is given signers.
import { topMembers } from './http.js';

/** The algorithms the plugin asks for: how WebCrypto imports a key for each, and signs with it. */
const ALGS = {
  RS256: { kty: 'RSA', key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
  RS384: { kty: 'RSA', key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-384' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
  PS256: { kty: 'RSA', key: { name: 'RSA-PSS', hash: 'SHA-256' }, sign: { name: 'RSA-PSS', saltLength: 32 } },
  // WebCrypto's ECDSA signature is already JWS's r || s (IEEE P1363), not DER: 64 and 96 bytes.
  ES256: { kty: 'EC', crv: 'P-256', bytes: 64, key: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  ES384: { kty: 'EC', crv: 'P-384', bytes: 96, key: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
};
const RSA_ALGS = ['RS256', 'RS384', 'PS256'];
const EC_ALG = { 'P-256': 'ES256', 'P-384': 'ES384' };
/** own is table[name] when name is one of its own keys (not "constructor" or "__proto__"), else undefined. */
const own = (table, name) => (typeof name === 'string' && Object.hasOwn(table, name) ? table[name] : undefined);
const MAX_KID_BYTES = 256; // TokenRequest.key_id's limit

const q = JSON.stringify;
const subtle = () => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new TypeError('tokenwasm: signers need WebCrypto (crypto.subtle), which this runtime lacks');
  return s;
};

/** b64url encodes bytes as unpadded base64url. */
export function b64url(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** unb64url decodes unpadded base64url (nothing else: no padding, no +/), or null. */
function unb64url(s) {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return null;
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * signsFor reports whether a key bound to `clients` (a Set, or null: any client) may sign the JWS
 * signing input "header.payload": the payload, unpadded base64url of a UTF-8 JSON object, names one
 * of the clients as iss and as sub (RFC 7523; the plugin writes iss = sub = client_id), each once. A
 * repeated iss or sub, in any spelling a server could match (an escape, another case), is refused:
 * servers differ on which of a repeat they read (JSON.parse keeps the last, gjson the first), so
 * such a payload could name another client to the server. The rules of host/signer.go's signsFor.
 */
export function signsFor(clients, input) {
  if (clients === null) return true;
  const dot = input.indexOf('.');
  const bytes = dot < 0 ? null : unb64url(input.slice(dot + 1));
  if (!bytes) return false;
  let text, claims;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    claims = JSON.parse(text);
  } catch {
    return false;
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) return false;
  const found = { iss: [], sub: [] };
  for (const [key, raw] of topMembers(text)) {
    const k = key.toLowerCase().replace(/\u017f/g, 's'); // case-folded as Go's strings.EqualFold (ſ folds to s)
    if (k === 'iss' || k === 'sub') found[k].push(JSON.parse(raw));
  }
  const [iss, sub] = [found.iss, found.sub];
  return iss.length === 1 && sub.length === 1 && typeof iss[0] === 'string' && iss[0] === sub[0] && clients.has(iss[0]);
}

/** isCryptoKey tells a CryptoKey without relying on the global class (every runtime has one, named alike). */
const isCryptoKey = (k) => k !== null && typeof k === 'object' && typeof k.type === 'string' && typeof k.algorithm === 'object' && Array.isArray(k.usages);

/** algOfCryptoKey is the one JWS algorithm a CryptoKey signs, as its algorithm says. */
function algOfCryptoKey(key) {
  const { name, hash, namedCurve } = key.algorithm;
  const h = hash?.name ?? hash;
  if (name === 'RSASSA-PKCS1-v1_5' && (h === 'SHA-256' || h === 'SHA-384')) return h === 'SHA-256' ? 'RS256' : 'RS384';
  if (name === 'RSA-PSS' && h === 'SHA-256') return 'PS256';
  if (name === 'ECDSA' && own(EC_ALG, namedCurve)) return EC_ALG[namedCurve];
  return null;
}

/** publicOf keeps a JWK's public members only. */
function publicOf(jwk) {
  return jwk.kty === 'RSA' ? { kty: 'RSA', n: jwk.n, e: jwk.e } : { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y };
}

/**
 * pkcs8Kind reads a PKCS #8 PrivateKeyInfo's algorithm (DER: SEQUENCE { INTEGER, SEQUENCE { OID,
 * params } ... }): 'RSA', 'P-256', 'P-384', or null.
 */
function pkcs8Kind(der) {
  let at = 0;
  const tlv = (tag) => {
    if (der[at++] !== tag) throw new Error('der');
    let len = der[at++];
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n < 1 || n > 3) throw new Error('der');
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[at++];
    }
    const start = at;
    if (start + len > der.length) throw new Error('der');
    return [start, len];
  };
  const hex = (start, len) => Array.from(der.subarray(start, start + len), (b) => b.toString(16).padStart(2, '0')).join('');
  try {
    tlv(0x30); // PrivateKeyInfo
    const [v, vl] = tlv(0x02); // version
    at = v + vl;
    tlv(0x30); // AlgorithmIdentifier
    const [o, ol] = tlv(0x06);
    const oid = hex(o, ol);
    at = o + ol;
    if (oid === '2a864886f70d010101') return 'RSA'; // rsaEncryption
    if (oid !== '2a8648ce3d0201') return null; // id-ecPublicKey
    const [c, cl] = tlv(0x06);
    return { '2a8648ce3d030107': 'P-256', '2b81040022': 'P-384' }[hex(c, cl)] ?? null;
  } catch {
    return null;
  }
}

/** readPEM returns the DER of a "PRIVATE KEY" PEM block; other blocks are refused by name. */
function readPEM(text, kid) {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) throw new TypeError(`tokenwasm: signer ${q(kid)}: key is neither a CryptoKey, a JWK nor a PEM block`);
  if (m[1] !== 'PRIVATE KEY') {
    const hint = /^(RSA|EC) PRIVATE KEY$/.test(m[1]) ? ' (convert it to PKCS #8: openssl pkcs8 -topk8 -nocrypt)' : '';
    throw new TypeError(`tokenwasm: signer ${q(kid)}: PEM block ${q(m[1])} is not an unencrypted PKCS #8 "PRIVATE KEY"${hint}`);
  }
  let bin;
  try {
    bin = atob(m[2].replace(/\s+/g, ''));
  } catch {
    throw new TypeError(`tokenwasm: signer ${q(kid)}: unreadable PEM`);
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/**
 * prepare reads one signers entry into {kid, clients, kty, crv, keys: Map(alg -> CryptoKey), bytes,
 * publicJwk}: the keys it imports are not extractable. Throws a TypeError naming the kid, never
 * quoting the key.
 */
async function prepare(entry) {
  const { kid, key, alg, clients, publicKey } = entry ?? {};
  const bad = (msg) => new TypeError(`tokenwasm: signer ${q(kid)}: ${msg}`);
  if (typeof kid !== 'string' || kid === '' || new TextEncoder().encode(kid).length > MAX_KID_BYTES) {
    throw new TypeError('tokenwasm: each signer needs a kid: a string of 1 to 256 bytes (the requests\' key_id)');
  }
  if (alg !== undefined && !own(ALGS, alg)) throw bad(`alg must be one of ${Object.keys(ALGS).join(', ')}`);
  if (clients !== undefined && (!Array.isArray(clients) || clients.some((c) => typeof c !== 'string'))) {
    throw bad('clients must be an array of client ids');
  }
  const s = { kid, clients: clients === undefined ? null : new Set(clients), keys: new Map(), publicJwk: null };
  const crypto = subtle();
  const pair = key !== null && typeof key === 'object' && isCryptoKey(key.privateKey);
  let priv = pair ? key.privateKey : key;
  let pub = pair ? key.publicKey : publicKey;

  if (isCryptoKey(priv)) {
    const a = algOfCryptoKey(priv);
    if (priv.type !== 'private' || !priv.usages.includes('sign')) throw bad('the CryptoKey must be a private key with the "sign" usage');
    if (!a) throw bad('the CryptoKey must be RSASSA-PKCS1-v1_5 (SHA-256 or SHA-384), RSA-PSS (SHA-256) or ECDSA (P-256 or P-384)');
    if (alg !== undefined && alg !== a) throw bad(`alg ${alg} does not match the CryptoKey, which signs ${a}`);
    s.keys.set(a, priv);
    if (pub === undefined && priv.extractable) pub = publicOf(await crypto.exportKey('jwk', priv));
  } else {
    // A JWK (an object or its JSON) or a PKCS #8 PEM: imported once per algorithm it may sign, not extractable.
    let jwk = null;
    let der = null;
    if (typeof key === 'string' && key.trim().startsWith('{')) {
      try {
        jwk = JSON.parse(key);
      } catch {
        throw bad('unreadable JWK');
      }
    } else if (typeof key === 'string') der = readPEM(key, kid);
    else if (key !== null && typeof key === 'object' && typeof key.kty === 'string') jwk = key;
    else throw bad('key must be a CryptoKey, a CryptoKeyPair, a JWK or a PKCS #8 PEM');
    let kind;
    if (jwk) {
      if (jwk.kty === 'RSA' && typeof jwk.n === 'string' && typeof jwk.d === 'string') kind = 'RSA';
      else if (jwk.kty === 'EC' && own(EC_ALG, jwk.crv) && typeof jwk.d === 'string') kind = jwk.crv;
      else throw bad('a JWK must be RSA (n, e, d, p, q, ...) or EC on P-256 or P-384 (x, y, d)');
      if (jwk.alg !== undefined && alg !== undefined && jwk.alg !== alg) throw bad(`alg ${alg} and the JWK's alg ${q(String(jwk.alg))} differ`);
      const pinned = alg ?? jwk.alg;
      if (pinned !== undefined && !own(ALGS, pinned)) throw bad(`the JWK's alg must be one of ${Object.keys(ALGS).join(', ')}`);
      entry = { ...entry, alg: pinned };
      // Only the key's members: alg, use, key_ops or ext would make importKey refuse one of the algorithms.
      const members = kind === 'RSA' ? ['kty', 'n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] : ['kty', 'crv', 'x', 'y', 'd'];
      jwk = Object.fromEntries(members.filter((m) => jwk[m] !== undefined).map((m) => [m, jwk[m]]));
    } else {
      kind = pkcs8Kind(der);
      if (!kind) throw bad('the PKCS #8 key must be RSA or ECDSA on P-256 or P-384');
    }
    const pinned = entry.alg;
    const algs = kind === 'RSA' ? RSA_ALGS : [EC_ALG[kind]];
    if (pinned !== undefined && !algs.includes(pinned)) throw bad(`an ${kind === 'RSA' ? 'RSA' : `ECDSA ${kind}`} key cannot sign ${pinned}`);
    const format = jwk ? 'jwk' : 'pkcs8';
    const data = jwk ?? der;
    try {
      for (const a of pinned ? [pinned] : algs) s.keys.set(a, await crypto.importKey(format, data, ALGS[a].key, false, ['sign']));
      if (pub === undefined) {
        // The public half, from the key itself (a JWK's own members, or the PEM exported once as a JWK).
        pub = jwk ? publicOf(jwk) : publicOf(await crypto.exportKey('jwk', await crypto.importKey('pkcs8', der, ALGS[algs[0]].key, true, ['sign'])));
      }
    } catch (err) {
      if (err instanceof TypeError && err.message.startsWith('tokenwasm:')) throw err;
      throw bad(`the key could not be imported (${err?.name ?? 'Error'})`);
    }
  }

  const first = s.keys.values().next().value;
  s.kty = first.algorithm.name === 'ECDSA' ? 'EC' : 'RSA';
  s.crv = first.algorithm.namedCurve;
  if (s.kty === 'RSA') {
    if (first.algorithm.modulusLength < 2048) throw bad('RSA keys under 2048 bits are refused');
    s.bytes = Math.ceil(first.algorithm.modulusLength / 8);
  }
  if (isCryptoKey(pub)) {
    if (pub.type !== 'public') throw bad('publicKey must be a public key');
    pub = publicOf(await crypto.exportKey('jwk', pub));
  }
  if (pub !== undefined) {
    if (pub === null || typeof pub !== 'object' || pub.kty !== s.kty || (s.kty === 'EC' && pub.crv !== s.crv)) throw bad('publicKey is not the public half of this key');
    s.publicJwk = publicOf(pub);
    // A document that publishes another key fails at the server, later and less clearly: the public
    // half must verify a signature of the key, checked once here.
    const [a, k] = s.keys.entries().next().value;
    const probe = new TextEncoder().encode(`tokenwasm probe ${kid}`);
    let ok = false;
    try {
      const verifier = await crypto.importKey('jwk', s.publicJwk, ALGS[a].key, false, ['verify']);
      ok = await crypto.verify(ALGS[a].sign, verifier, await crypto.sign(ALGS[a].sign, k, probe), probe);
    } catch {}
    if (!ok) throw bad('publicKey is not the public half of this key');
  }
  // The JWK Set names an algorithm when the key signs one only (an EC key, or a pinned RSA key).
  s.alg = s.keys.size === 1 ? s.keys.keys().next().value : undefined;
  return s;
}

/**
 * createSigners reads createClient's `signers` ([{kid, key, alg?, clients?, publicKey?}]) and returns
 * {sign, jwkSet}: sign answers the sign action ({alg, kid, signing_input} -> {signature} | {error});
 * jwkSet() is the public keys as a JWK Set. Throws a TypeError for an entry it cannot use.
 */
export async function createSigners(entries) {
  if (!Array.isArray(entries)) throw new TypeError('tokenwasm: signers must be an array of {kid, key, alg?, clients?}');
  const byKid = new Map();
  for (const entry of entries) {
    const s = await prepare(entry);
    if (byKid.has(s.kid)) throw new TypeError(`tokenwasm: signer ${q(s.kid)} is given twice`);
    byKid.set(s.kid, s);
  }
  const encoder = new TextEncoder();

  /** signWith signs or throws an Error whose message names the key id and algorithm, never key material. */
  async function signWith(alg, kid, input) {
    const s = byKid.get(kid);
    if (!s) throw new Error(`no signing key for key id ${q(kid)}`);
    if (typeof input !== 'string' || !signsFor(s.clients, input)) throw new Error(`key id ${q(kid)} does not sign for this client`);
    const a = own(ALGS, alg);
    if (!a) throw new Error(`unsupported algorithm ${q(alg)}`);
    if (a.kty !== s.kty || (a.crv && a.crv !== s.crv)) throw new Error(`an ${s.kty === 'RSA' ? 'RSA' : `ECDSA ${s.crv}`} key cannot sign ${alg}`);
    const key = s.keys.get(alg);
    if (!key) throw new Error(`key id ${q(kid)} signs ${s.alg} only, not ${alg}`);
    let sig;
    try {
      sig = new Uint8Array(await subtle().sign(a.sign, key, encoder.encode(input)));
    } catch (err) {
      throw new Error(`signer: ${err?.name ?? 'Error'}`);
    }
    const want = a.bytes ?? s.bytes;
    if (sig.length !== want) throw new Error(`signer returned ${sig.length} bytes, want ${want}`);
    return sig;
  }

  return {
    kids: [...byKid.keys()],
    /** sign answers one sign action; it never throws. */
    async sign(input) {
      const { alg, kid, signing_input: si } = input ?? {};
      try {
        return { signature: b64url(await signWith(alg, kid, si)) };
      } catch (err) {
        return { error: err.message };
      }
    },
    /** jwkSet is {keys: [...]} ordered by kid, as the Go host's Runtime.JWKS. */
    jwkSet() {
      const keys = [];
      for (const kid of [...byKid.keys()].sort()) {
        const s = byKid.get(kid);
        if (!s.publicJwk) {
          throw new TypeError(`tokenwasm: signer ${q(kid)} has no public key to publish: give key as a CryptoKeyPair, or its publicKey`);
        }
        const { kty, ...rest } = s.publicJwk;
        keys.push({ kty, kid, use: 'sig', ...(s.alg ? { alg: s.alg } : {}), ...rest });
      }
      return { keys };
    },
  };
}
