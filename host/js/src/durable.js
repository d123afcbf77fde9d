// The shared cache on a Cloudflare Durable Object: every isolate and every Worker bound to one
// Durable Object namespace shares tokens, 429 gates, the fleet lock and a one-time grant's lineage,
// as the processes of a fleet do on Redis (redis.js).
//   - TokenCoordinator is the Durable Object: a store of opaque strings with TTLs and the two atomic
//     operations the ABI asks for (store-if-absent, compare-and-delete). One object runs one
//     operation at a time (a queue, not only the runtime's input gates), so two of them never
//     interleave between a read and a write. It never sees a plugin key or a plain value.
//   - DurableObjectCache is the cache a client is given (the SharedCache interface, shared = true):
//     it names each entry by an HMAC of the plugin's key and seals each value with AES-256-GCM
//     (WebCrypto), as redis.js and host/rediscache do, under keys only the fleet's Workers hold (a
//     secret binding). The object's storage is Cloudflare's: whoever can read it (the account's
//     other code, the dashboard's data browser) sees key names that test no secret guess and values
//     that open with nothing it has (abi/ABI.md, "Cache keys").
// No runtime API but fetch, WebCrypto and timers: it loads in Node too (test/durable.test.js).

const HASH_KEY_INFO = 'tokenwasm rediscache v1: HMAC key for Redis key names'; // redis.js's, so names match
const NONCE = 12;
const TAG = 16;
const MAX_LOCK_TTL_MS = 122_000; // the plugin's longest timeout_ms and its 2 s margin, as redis.js
const MAX_KEY = 2048; // a Durable Object storage key's limit (bytes; our names are ASCII)
const MAX_VALUE = 96 * 1024; // under a stored value's limit (128 KiB), base64 and all
const SWEEP_MS = 3_600_000; // how often the object drops entries past their TTL (an alarm)
const OBJECT_URL = 'https://tokenwasm.invalid/cache'; // the object reads the body only

const utf8 = new TextEncoder();
const fromUTF8 = new TextDecoder('utf-8', { fatal: true });

/** toBase64 and fromBase64: values travel and rest as base64 text (btoa and atob are everywhere). */
function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** keyBytes takes a key as bytes or base64 text (a secret binding's value). */
function keyBytes(k, what) {
  let b;
  try {
    b = typeof k === 'string' ? fromBase64(k.trim()) : k instanceof ArrayBuffer ? new Uint8Array(k) : ArrayBuffer.isView(k) ? new Uint8Array(k.buffer, k.byteOffset, k.byteLength) : null;
  } catch {
    b = null;
  }
  if (!b) throw new TypeError(`DurableObjectCache: ${what} must be bytes or base64 text`);
  return b;
}

/**
 * TokenCoordinator is the Durable Object class: export it from the Worker's main module and bind a
 * namespace of it (wrangler.toml: [[durable_objects.bindings]] and a migration; workerd:
 * durableObjectNamespaces). Its fetch takes one JSON operation per POST:
 *   {op: "get", key}                             -> {value: string | null}
 *   {op: "set", key, value, ttl_ms, nx?}         -> {stored: bool}
 *   {op: "delete", key, if_value?}               -> {}
 * An entry past its TTL is never returned. set with nx stores only if the key is absent or expired
 * (or holds a value whose TTL is longer than any lock's and this set's: stale, as redis.js takes
 * over); delete with if_value deletes only while the key holds exactly that value.
 */
export class TokenCoordinator {
  #storage;
  #queue = Promise.resolve();
  #alarmSet = false;

  constructor(state) {
    this.#storage = state.storage;
  }

  async fetch(request) {
    if (request.method !== 'POST') return new Response(null, { status: 405, headers: { Allow: 'POST' } });
    let op;
    try {
      op = await request.json();
    } catch {
      return Response.json({ error: 'invalid_json' }, { status: 400 });
    }
    const bad = invalid(op);
    if (bad) return Response.json({ error: bad }, { status: 400 });
    const run = this.#queue.then(() => this.#apply(op));
    this.#queue = run.catch(() => {});
    try {
      return Response.json(await run);
    } catch (err) {
      return Response.json({ error: err?.name ?? 'Error' }, { status: 500 }); // never a key or value
    }
  }

  /** apply runs one operation; the queue runs one at a time. */
  async #apply({ op, key, value, ttl_ms: ttlMs, nx, if_value: ifValue }) {
    const now = Date.now();
    const entry = await this.#storage.get(key); // {v, e}: the value and when it expires (Unix ms)
    const live = entry && now < entry.e ? entry : undefined;
    switch (op) {
      case 'get':
        if (entry && !live) await this.#storage.delete(key);
        return { value: live ? live.v : null };
      case 'set': {
        const ttl = Math.max(Math.ceil(ttlMs), 1);
        if (nx && live && live.e - now <= Math.max(ttl, MAX_LOCK_TTL_MS)) return { stored: false };
        await this.#storage.put(key, { v: value, e: now + ttl });
        await this.#schedule(now);
        return { stored: true };
      }
      case 'delete':
        if (typeof ifValue === 'string' && live?.v !== ifValue) return {};
        if (entry) await this.#storage.delete(key);
        return {};
    }
  }

  /** schedule sets the sweep's alarm unless one is set; a runtime without alarms only skips sweeps. */
  async #schedule(now) {
    if (this.#alarmSet) return;
    try {
      if ((await this.#storage.getAlarm()) === null) await this.#storage.setAlarm(now + SWEEP_MS);
      this.#alarmSet = true;
    } catch {}
  }

  /** alarm drops the entries past their TTL (gates, locks, tokens nobody asks for again). */
  async alarm() {
    this.#alarmSet = false;
    const run = this.#queue.then(() => this.#sweep());
    this.#queue = run.catch(() => {});
    await run;
  }

  async #sweep() {
    const now = Date.now();
    const gone = [];
    let left = 0;
    for (const [k, e] of await this.#storage.list()) {
      if (!(now < e?.e)) gone.push(k);
      else left++;
    }
    for (let i = 0; i < gone.length; i += 128) await this.#storage.delete(gone.slice(i, i + 128));
    if (left > 0) await this.#schedule(now);
  }
}

/** invalid returns why an operation is malformed, or null. */
function invalid(op) {
  if (op === null || typeof op !== 'object') return 'not_an_object';
  if (op.op !== 'get' && op.op !== 'set' && op.op !== 'delete') return 'unknown_op';
  if (typeof op.key !== 'string' || op.key.length === 0 || op.key.length > MAX_KEY) return 'bad_key';
  if (op.op === 'set') {
    if (typeof op.value !== 'string' || op.value.length > MAX_VALUE) return 'bad_value';
    if (typeof op.ttl_ms !== 'number' || !(op.ttl_ms > 0)) return 'bad_ttl';
  }
  if (op.op === 'delete' && op.if_value !== undefined && typeof op.if_value !== 'string') return 'bad_value';
  return null;
}

/**
 * DurableObjectCache is the cache for createClient on a TokenCoordinator namespace: one object (by
 * name) holds the fleet's entries, each named by an HMAC of the plugin's key and sealed.
 */
export class DurableObjectCache {
  #namespace;
  #name;
  #keys;
  #hashKey;
  #ready = null;
  #where;

  /**
   * @param namespace the Durable Object namespace binding of TokenCoordinator (env.TOKENS)
   * @param opts keys: 32-byte AES-256 keys (bytes or base64 text, a secret binding), the first
   *   seals, all open (rotation); hashKey (32 bytes or more): the HMAC key for names, derived from
   *   keys[0] with HKDF-SHA256 when absent, as redis.js does; name: the object's name (default
   *   "tokenwasm"): Workers that share tokens use one name; locationHint: where to create the
   *   object ("enam", "weur", ...; Cloudflare's location hints), near the Workers that call it.
   */
  constructor(namespace, { keys, hashKey, name = 'tokenwasm', locationHint } = {}) {
    if (typeof namespace?.idFromName !== 'function' || typeof namespace?.get !== 'function') {
      throw new TypeError('DurableObjectCache: the first argument must be a Durable Object namespace binding (of TokenCoordinator)');
    }
    if (!Array.isArray(keys) || keys.length === 0) throw new TypeError('DurableObjectCache: at least one 32-byte key is required (keys)');
    this.#keys = keys.map((k, i) => {
      const b = keyBytes(k, `key ${i}`);
      if (b.length !== 32) throw new TypeError(`DurableObjectCache: key ${i} is ${b.length} bytes, want 32 (AES-256)`);
      return b;
    });
    if (hashKey !== undefined) {
      this.#hashKey = keyBytes(hashKey, 'hashKey');
      if (this.#hashKey.length < 32) throw new TypeError('DurableObjectCache: hashKey must be at least 32 bytes');
    } else if (this.#keys.length > 1) {
      // Without a hashKey, entry names derive from keys[0]: putting a new key first would rename
      // every entry, and a grant's lineage lost so sends a used refresh token again.
      throw new TypeError('DurableObjectCache: rotating keys needs a fixed hashKey (entry names would move with keys[0])');
    }
    if (typeof name !== 'string' || name === '') throw new TypeError('DurableObjectCache: name must be a non-empty string');
    this.#namespace = namespace;
    this.#name = name;
    this.#where = locationHint === undefined ? undefined : { locationHint };
  }

  /** shared: the client takes the fleet lock on every fetch, as with RedisCache. */
  get shared() {
    return true;
  }

  /** ready imports the keys into WebCrypto once. */
  #init() {
    this.#ready ??= (async () => {
      const subtle = crypto.subtle;
      let hash = this.#hashKey;
      if (!hash) {
        const base = await subtle.importKey('raw', this.#keys[0], 'HKDF', false, ['deriveBits']);
        hash = new Uint8Array(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: utf8.encode(HASH_KEY_INFO) }, base, 256));
      }
      return {
        mac: await subtle.importKey('raw', hash, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']),
        aes: await Promise.all(this.#keys.map((k) => subtle.importKey('raw', k, 'AES-GCM', false, ['encrypt', 'decrypt']))),
      };
    })();
    return this.#ready;
  }

  /** storageKey maps a plugin key to the object's key: redis.js's redisKey, byte for byte. */
  async storageKey(key) {
    const { mac } = await this.#init();
    const suffix = key.endsWith('/gate') ? '/gate' : key.endsWith('/lock') ? '/lock' : '';
    const base = key.slice(0, key.length - suffix.length);
    const m = /^tokenwasm\/1\/([a-z0-9_-]+)\//.exec(base);
    const sum = new Uint8Array(await crypto.subtle.sign('HMAC', mac, utf8.encode(base)));
    return `tokenwasm/1/${m ? m[1] : '_'}/${Array.from(sum, (b) => b.toString(16).padStart(2, '0')).join('')}${suffix}`;
  }

  /** seal: nonce || ciphertext || tag, the plugin's key as associated data, in base64. */
  async #seal(key, value) {
    const { aes } = await this.#init();
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: utf8.encode(key) }, aes[0], utf8.encode(value)));
    const out = new Uint8Array(NONCE + ct.length);
    out.set(nonce);
    out.set(ct, NONCE);
    return toBase64(out);
  }

  /** open returns the value sealed in raw, or undefined when no key opens it (a miss). */
  async #open(key, raw) {
    if (typeof raw !== 'string') return undefined;
    let bytes;
    try {
      bytes = fromBase64(raw);
    } catch {
      return undefined;
    }
    if (bytes.length < NONCE + TAG) return undefined;
    const { aes } = await this.#init();
    for (const k of aes) {
      try {
        const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: bytes.subarray(0, NONCE), additionalData: utf8.encode(key) }, k, bytes.subarray(NONCE));
        return fromUTF8.decode(pt);
      } catch {}
    }
    return undefined;
  }

  /** call sends one operation to the object and returns its answer; a failure throws (a miss). */
  async #call(op) {
    // A stub per call: a stub belongs to the request that made it, and a client's flows run in
    // whichever request started them.
    const id = this.#namespace.idFromName(this.#name);
    const stub = this.#where ? this.#namespace.get(id, this.#where) : this.#namespace.get(id);
    const res = await stub.fetch(OBJECT_URL, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(op) });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error(`TokenCoordinator answered ${res.status}${typeof answer.error === 'string' ? ` (${answer.error})` : ''}`);
      err.name = 'DurableObjectError';
      throw err;
    }
    return answer;
  }

  async get(key) {
    const { value } = await this.#call({ op: 'get', key: await this.storageKey(key) });
    return this.#open(key, value);
  }

  async set(key, value, ttlMs, nx = false) {
    const [sk, sealed] = await Promise.all([this.storageKey(key), this.#seal(key, value)]);
    const { stored } = await this.#call({ op: 'set', key: sk, value: sealed, ttl_ms: Math.max(Math.ceil(ttlMs), 1), nx: nx === true });
    return stored === true;
  }

  async delete(key, ifValue) {
    const sk = await this.storageKey(key);
    if (ifValue === undefined) {
      await this.#call({ op: 'delete', key: sk });
      return;
    }
    // Sealed values differ each time: read, open and compare here, then delete only while the
    // object still holds that very sealed value (its owner releases a lock, as redis.js does).
    const { value: raw } = await this.#call({ op: 'get', key: sk });
    if ((await this.#open(key, raw)) !== ifValue) return;
    await this.#call({ op: 'delete', key: sk, if_value: raw });
  }
}
