import type { SharedCache } from './index.js';

/** The shared cache on Redis (node-redis), sealed values under HMAC key names. */
export declare class RedisCache implements SharedCache {
  constructor(client: { withTypeMapping(m: object): any }, options: { keys: Uint8Array[]; hashKey?: Uint8Array });
  readonly shared: true;
  redisKey(key: string): string;
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string, ttlMs: number, nx?: boolean): Promise<boolean>;
  delete(key: string, ifValue?: string): Promise<void>;
}
