// RedisCache: the shared cache on Redis (Node), so tokens, 429 gates and the fleet lock are shared by
// every process of a fleet. It follows host/rediscache's (Go) key names and sealing: a Go and a JS
// process on one Redis share tokens, gates and locks (test/gofleet.test.js).
//   - Redis keys are `tokenwasm/1/<provider>/<hex HMAC-SHA256 of the plugin's key>` plus its
//     `/gate` or `/lock` suffix, under a hash key only the fleet holds (abi/ABI.md, "Cache keys"):
//     whoever lists the keys cannot test secret guesses against them.
//   - Values are AES-256-GCM sealed, nonce || ciphertext || tag, with the plugin's key as associated
//     data (a value moved to another key does not open).
//   - A fetch lock that cannot be a live one (no TTL, a TTL longer than any fetch lock has, another
//     type, or a value no key opens) is taken over at once; a key Redis refuses (WRONGTYPE) is a miss
//     for that key only; a value no key opens is a miss, counted (decryptFailures). Warnings of these
//     go to the logger at most once a minute each, as host/rediscache's do.
import { createHmac, createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Buffer } from 'node:buffer';

const HASH_KEY_INFO = 'tokenwasm rediscache v1: HMAC key for Redis key names';
const NONCE = 12;
const TAG = 16;
const MAX_LOCK_TTL_MS = 122_000; // the plugin's longest timeout_ms and its 2 s margin
const LOG_INTERVAL_MS = 60_000; // the least time between two warnings of one kind

// SET NX PX that also takes over a stale key (no TTL, or longer than any lock's): as host/rediscache.
const SET_NX = `
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return 1 end
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -1 or ttl > tonumber(ARGV[3]) or redis.call("TYPE", KEYS[1]).ok ~= "string" then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 2
end
return 0`;
const DELETE_IF = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`;
// Sets KEYS[1] to ARGV[2] with PX ARGV[3] only while it still holds ARGV[1].
const REPLACE_IF = `if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3]) return 1 end return 0`;

/** KEY_FAILED: what #run answers when Redis refused the operation for its key only. */
const KEY_FAILED = Symbol('key failed');

/**
 * Error replies that concern the whole server (or the cluster), not the key an operation names: a
 * connection failure, these and a timeout fail the operation (the client counts it as a cache
 * failure); any other error reply (WRONGTYPE, a script error) is the key's (as host/rediscache's
 * keyError).
 */
const SERVER_ERRORS = /^(LOADING|READONLY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|NOAUTH|WRONGPASS|NOPERM|OOM|NOREPLICAS|BUSY|MISCONF|MOVED|ASK|ERR max number of clients)\b/;

/** isErrorReply reports whether err is node-redis's ErrorReply (an error Redis answered), by name: another copy of node-redis than ours may have made it. */
function isErrorReply(err) {
  for (let p = err && Object.getPrototypeOf(err); p && p !== Error.prototype; p = Object.getPrototypeOf(p)) {
    if (p.constructor?.name === 'ErrorReply') return true;
  }
  return false;
}

/** lineageKey: a one-time grant's lineage or exchange mark (abi/ABI.md, "One-time grants"). */
const lineageKey = (key) => key.endsWith('/grant') || key.endsWith('/sent');

const keyError = (err) => isErrorReply(err) && !SERVER_ERRORS.test(String(err.message));

export class RedisCache {
  #redis;
  #keys;
  #hashKey;
  #logger;
  #decryptFailures = 0;
  #keyErrors = 0;
  #lastLog = { decrypt: -Infinity, keyError: -Infinity, takeover: -Infinity }; // Date.now() of the last warning of each kind

  /**
   * @param {import('redis').RedisClientType} client a connected node-redis client
   * @param {{keys: Uint8Array[], hashKey?: Uint8Array, logger?: {warn?: Function}}} opts keys:
   *   32-byte AES-256 keys, the first seals, all open (rotation); hashKey (32 bytes or more): the
   *   HMAC key, derived from keys[0] with HKDF-SHA256 when absent, as host/rediscache does (set it
   *   in a fleet that rotates keys: processes on different keys then see, count and log each
   *   other's values); logger: gets at most one warning a minute each for values that do not
   *   decrypt, keys Redis refuses and locks taken over.
   */
  constructor(client, { keys, hashKey, logger } = {}) {
    if (!Array.isArray(keys) || keys.length === 0) throw new TypeError('RedisCache: at least one 32-byte key is required');
    keys.forEach((k, i) => {
      if (k?.length !== 32) throw new TypeError(`RedisCache: key ${i} is ${k?.length} bytes, want 32 (AES-256)`);
    });
    if (hashKey !== undefined && hashKey.length < 32) throw new TypeError('RedisCache: hashKey must be at least 32 bytes');
    this.#keys = keys.map((k) => Buffer.from(k));
    this.#hashKey = hashKey ? Buffer.from(hashKey) : Buffer.from(hkdfSync('sha256', this.#keys[0], Buffer.alloc(0), HASH_KEY_INFO, 32));
    this.#redis = client.withTypeMapping({ 36: Buffer }); // RESP_TYPES.BLOB_STRING ('$') as Buffers: values are binary
    this.#logger = logger;
  }

  /**
   * decryptFailures counts values found in Redis that no key opens: almost always processes sharing
   * the Redis with different keys, which then share no tokens, gates or locks. Each is a miss.
   */
  get decryptFailures() {
    return this.#decryptFailures;
  }

  /**
   * keyErrors counts operations Redis refused for one key (WRONGTYPE: a key of another type under a
   * cache key): each costs that key a miss (the next set replaces it) and no other key anything.
   */
  get keyErrors() {
    return this.#keyErrors;
  }

  /** warn logs msg unless a warning of its kind was logged within the last minute. */
  #warn(kind, msg, attrs) {
    const now = Date.now();
    if (now - this.#lastLog[kind] < LOG_INTERVAL_MS) return;
    this.#lastLog[kind] = now;
    try {
      this.#logger?.warn?.(msg, attrs);
    } catch {}
  }

  /**
   * run runs op (one or more Redis commands on the key rk) and answers what it answers, or
   * KEY_FAILED when Redis refused it for that key (counted, logged at most once a minute). Any other
   * failure (a connection, the server) is thrown: the client counts it as a cache failure.
   */
  async #run(rk, op) {
    try {
      return await op();
    } catch (err) {
      if (!keyError(err)) throw err;
      this.#keyErrors++;
      this.#warn('keyError', 'tokenwasm RedisCache: Redis refused an operation on one key; that key is a miss (something other than this cache writes under its keys?)', {
        key: rk,
        error: String(err.message).slice(0, 200),
      });
      return KEY_FAILED;
    }
  }

  /** shared: the client takes the fleet lock on every fetch, as the Go host does on host/rediscache. */
  get shared() {
    return true;
  }

  /** redisKey maps a plugin key to its Redis key (see the file's comment). */
  redisKey(key) {
    const suffix = key.endsWith('/gate') ? '/gate' : key.endsWith('/lock') ? '/lock' : '';
    const base = key.slice(0, key.length - suffix.length);
    const m = /^tokenwasm\/1\/([a-z0-9_-]+)\//.exec(base);
    const mac = createHmac('sha256', this.#hashKey).update(base).digest('hex');
    return `tokenwasm/1/${m ? m[1] : '_'}/${mac}${suffix}`;
  }

  #seal(key, value) {
    const nonce = randomBytes(NONCE);
    const c = createCipheriv('aes-256-gcm', this.#keys[0], nonce);
    c.setAAD(Buffer.from(key));
    return Buffer.concat([nonce, c.update(value, 'utf8'), c.final(), c.getAuthTag()]);
  }

  /**
   * open returns the value sealed in raw (a value read from Redis, null for none), or undefined when
   * there is none or no key opens it (a miss). One that does not open is counted and, at most once a
   * minute, logged as the misconfiguration it almost always is, naming neither key nor value.
   */
  #open(key, raw) {
    if (raw === null || raw === undefined) return undefined;
    if (raw.length >= NONCE + TAG) {
      for (const k of this.#keys) {
        try {
          const d = createDecipheriv('aes-256-gcm', k, raw.subarray(0, NONCE));
          d.setAAD(Buffer.from(key));
          d.setAuthTag(raw.subarray(raw.length - TAG));
          return Buffer.concat([d.update(raw.subarray(NONCE, raw.length - TAG)), d.final()]).toString('utf8');
        } catch {}
      }
    }
    const n = ++this.#decryptFailures;
    this.#warn(
      'decrypt',
      'tokenwasm RedisCache: a value in Redis does not decrypt with any of its keys; processes sharing this Redis probably have different encryption keys and share no tokens, 429 gates or fetch locks',
      { decrypt_failures: n },
    );
    return undefined;
  }

  /**
   * get answers the value of key, or undefined: none, one no key opens, or a key Redis refuses
   * (WRONGTYPE). For a one-time grant's lineage or exchange mark, the last two throw instead: a miss
   * would make the flow send the request's own refresh token, which may be a used one.
   */
  async get(key) {
    const rk = this.redisKey(key);
    const raw = await this.#run(rk, () => this.#redis.get(rk));
    const v = raw === KEY_FAILED ? undefined : this.#open(key, raw);
    if (v === undefined && raw !== null && lineageKey(key)) throw new Error('tokenwasm RedisCache: a grant lineage in Redis cannot be read (wrong type, or sealed under other keys)');
    return v;
  }

  /**
   * set stores value for ttlMs (SET replaces a key of any type). With nx only if key is absent, or
   * holds what cannot be a live fetch lock (see SET_NX, and a value no key opens): it is then taken
   * over. A key Redis refuses counts as stored: the caller fetches rather than waits on a lock it
   * cannot see.
   */
  async set(key, value, ttlMs, nx = false) {
    const rk = this.redisKey(key);
    const sealed = this.#seal(key, value);
    const ms = Math.max(Math.ceil(ttlMs), 1); // PX 0 is an error, and no PX would be a lock that never ends
    if (!nx) {
      const done = await this.#run(rk, () => this.#redis.set(rk, sealed, { expiration: { type: 'PX', value: ms } }));
      if (done === KEY_FAILED && lineageKey(key)) throw new Error('tokenwasm RedisCache: Redis refused a grant lineage write');
      return true;
    }
    let res = await this.#run(rk, () => this.#redis.eval(SET_NX, { keys: [rk], arguments: [sealed, String(ms), String(Math.max(ms, MAX_LOCK_TTL_MS))] }));
    if (res === KEY_FAILED) {
      if (lineageKey(key)) throw new Error('tokenwasm RedisCache: Redis refused a grant mark');
      return true;
    }
    res = Number(res);
    // A stray lock is taken over; a grant's mark that no key opens is not (the flow fails closed).
    if (res === 0 && !lineageKey(key) && (await this.#strayLock(key, rk, sealed, ms))) res = 2;
    if (res === 2) {
      this.#warn('takeover', 'tokenwasm RedisCache: took over a lock without a TTL, with a longer TTL than any fetch lock has, or that no key opens (set by hand?)', {
        key: rk,
        ttl_ms: ms,
      });
    }
    return res !== 0;
  }

  /**
   * strayLock takes over a held lock whose value does not open with any key (planted, or written by a
   * process with other keys, which is counted as such): it guards no fetch this process can see.
   */
  async #strayLock(key, rk, sealed, ms) {
    const took = await this.#run(rk, async () => {
      const raw = await this.#redis.get(rk);
      if (raw === null || this.#open(key, raw) !== undefined) return false;
      return Number(await this.#redis.eval(REPLACE_IF, { keys: [rk], arguments: [raw, sealed, String(ms)] })) === 1;
    });
    return took === true;
  }

  /** delete drops key; with ifValue only while it holds a value that opens to ifValue (a key Redis refuses is left alone). */
  async delete(key, ifValue) {
    const rk = this.redisKey(key);
    if (ifValue === undefined) {
      await this.#run(rk, () => this.#redis.del(rk));
      return;
    }
    await this.#run(rk, async () => {
      const raw = await this.#redis.get(rk);
      if (this.#open(key, raw) !== ifValue) return; // only its owner releases a lock
      await this.#redis.eval(DELETE_IF, { keys: [rk], arguments: [raw] });
    });
  }
}
