// The shared-cache interface (get; set with nx; delete with if_value) and its in-memory default.

/**
 * MemoryCache is the default cache: string values with TTLs in a Map, with the two atomic operations
 * the ABI asks for (store-if-absent for the fleet lock, compare-and-delete for its release). A
 * replacement (Redis, ...) implements the same three methods; they may return promises.
 */
export class MemoryCache {
  #entries = new Map(); // key -> {value, expiresAt}
  #writes = 0;

  /** get returns the live value of key, or undefined. An entry past its TTL is never returned. */
  get(key) {
    return this.#live(key);
  }

  // #live is get for set and delete: a subclass that overrides get (a wrapper, an async one) must
  // not change what nx and if_value compare with.
  #live(key) {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (Date.now() >= e.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** set stores value for ttlMs; with nx only if key is absent (or expired). Returns whether it stored. */
  set(key, value, ttlMs, nx = false) {
    if (nx && this.#live(key) !== undefined) return false;
    this.#entries.set(key, { value, expiresAt: Date.now() + ttlMs });
    if (++this.#writes % 1024 === 0) this.#sweep(); // keys nobody reads again must not pile up
    return true;
  }

  /** delete drops key; with ifValue only while key holds exactly that value. */
  delete(key, ifValue) {
    if (ifValue !== undefined && this.#live(key) !== ifValue) return;
    this.#entries.delete(key);
  }

  get size() {
    return this.#entries.size;
  }

  #sweep() {
    const now = Date.now();
    for (const [k, e] of this.#entries) if (now >= e.expiresAt) this.#entries.delete(k);
  }
}

