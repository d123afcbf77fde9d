// RedisCache: the shared cache on Redis (Node), so tokens, 429 gates and the fleet lock are shared by
// every process of a fleet. It follows host/rediscache's (Go) key names and sealing: a Go and a JS
// process on one Redis share tokens, gates and locks (test/gofleet.test.js).
//   - Redis keys are `tokenwasm/1/<provider>/<hex HMAC-SHA256 of the plugin's key>` plus its
//     `/gate` or `/lock` suffix, under a hash key only the fleet holds (abi/ABI.md, "Cache keys"):
//     whoever lists the keys cannot test secret guesses against them.
//   - Values are AES-256-GCM sealed, nonce || ciphertext || tag, with the plugin's key as associated
//     data (a value moved to another key does not open).
import { createHmac, createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Buffer } from 'node:buffer';

const HASH_KEY_INFO = 'tokenwasm rediscache v1: HMAC key for Redis key names';
const NONCE = 12;
const TAG = 16;
const MAX_LOCK_TTL_MS = 122_000; // the plugin's longest timeout_ms and its 2 s margin

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

export class RedisCache {
  #redis;
  #keys;
  #hashKey;

  /**
   * @param {import('redis').RedisClientType} client a connected node-redis client
   * @param {{keys: Uint8Array[], hashKey?: Uint8Array}} opts keys: 32-byte AES-256 keys, the first
   *   seals, all open (rotation); hashKey (32 bytes or more): the HMAC key, derived from keys[0]
   *   with HKDF-SHA256 when absent, as host/rediscache does.
   */
  constructor(client, { keys, hashKey } = {}) {
    if (!Array.isArray(keys) || keys.length === 0) throw new TypeError('RedisCache: at least one 32-byte key is required');
    keys.forEach((k, i) => {
      if (k?.length !== 32) throw new TypeError(`RedisCache: key ${i} is ${k?.length} bytes, want 32 (AES-256)`);
    });
    if (hashKey !== undefined && hashKey.length < 32) throw new TypeError('RedisCache: hashKey must be at least 32 bytes');
    this.#keys = keys.map((k) => Buffer.from(k));
    this.#hashKey = hashKey ? Buffer.from(hashKey) : Buffer.from(hkdfSync('sha256', this.#keys[0], Buffer.alloc(0), HASH_KEY_INFO, 32));
    this.#redis = client.withTypeMapping({ 36: Buffer }); // RESP_TYPES.BLOB_STRING ('$') as Buffers: values are binary
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

  /** open returns the value sealed in raw, or undefined when no key opens it (a miss). */
  #open(key, raw) {
    if (!raw || raw.length < NONCE + TAG) return undefined;
    for (const k of this.#keys) {
      try {
        const d = createDecipheriv('aes-256-gcm', k, raw.subarray(0, NONCE));
        d.setAAD(Buffer.from(key));
        d.setAuthTag(raw.subarray(raw.length - TAG));
        return Buffer.concat([d.update(raw.subarray(NONCE, raw.length - TAG)), d.final()]).toString('utf8');
      } catch {}
    }
    return undefined;
  }

  async get(key) {
    return this.#open(key, await this.#redis.get(this.redisKey(key)));
  }

  async set(key, value, ttlMs, nx = false) {
    const rk = this.redisKey(key);
    const sealed = this.#seal(key, value);
    const ms = Math.max(Math.ceil(ttlMs), 1);
    if (!nx) {
      await this.#redis.set(rk, sealed, { expiration: { type: 'PX', value: ms } });
      return true;
    }
    const res = await this.#redis.eval(SET_NX, { keys: [rk], arguments: [sealed, String(ms), String(Math.max(ms, MAX_LOCK_TTL_MS))] });
    return Number(res) !== 0;
  }

  async delete(key, ifValue) {
    const rk = this.redisKey(key);
    if (ifValue === undefined) {
      await this.#redis.del(rk);
      return;
    }
    const raw = await this.#redis.get(rk);
    if (this.#open(key, raw) !== ifValue) return; // only its owner releases a lock
    await this.#redis.eval(DELETE_IF, { keys: [rk], arguments: [raw] });
  }
}
