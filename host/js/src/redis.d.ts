import type { SharedCache } from './index.js';

export interface RedisCacheOptions {
  /** 32-byte AES-256 keys: the first seals, every one opens (rotation). */
  keys: Uint8Array[];
  /** The HMAC key of Redis key names (32 bytes or more); default derived from keys[0], as host/rediscache does. */
  hashKey?: Uint8Array;
  /** At most one warning a minute each for values that do not decrypt, keys Redis refuses (WRONGTYPE) and locks taken over. */
  logger?: { warn?(msg: string, attrs: Record<string, unknown>): void };
}

/** The shared cache on Redis (node-redis), sealed values under HMAC key names. */
export declare class RedisCache implements SharedCache {
  constructor(client: { withTypeMapping(m: object): any }, options: RedisCacheOptions);
  readonly shared: true;
  /** Values found in Redis that no key opens (processes with other keys, most likely); each is a miss. */
  readonly decryptFailures: number;
  /** Operations Redis refused for one key (WRONGTYPE); each is a miss for that key only. */
  readonly keyErrors: number;
  redisKey(key: string): string;
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string, ttlMs: number, nx?: boolean): Promise<boolean>;
  delete(key: string, ifValue?: string): Promise<void>;
}
