// The Extism kernel (module extism:host/env) and the WASI preview 1 calls the plugin imports,
// implemented in JavaScript as host/internal/extism does in Go. The official SDK compiles a kernel
// of its own at run time, which Cloudflare's workerd forbids; this one only instantiates the
// plugin's already compiled WebAssembly.Module, so it runs wherever WebAssembly does.
//
// Kernel semantics (those of Extism): memory blocks live in an arena apart from the plugin's linear
// memory, addressed by u64 offsets; 0 is null; the arena is reset at the start of every call, so
// blocks never outlive a call (a 50,000-call loop stays flat); an export is () -> i32 and 0 is
// success.
//
// Memory cap (as the Go host's WithMemoryLimit): the plugin's linear memory is the module's own,
// which a host cannot bound from outside, and TinyGo's heap only grows (it doubles when a collection
// frees less than a third of it) and never gives memory back. So an instance whose memory is over
// its cap after a call is broken: the call's answer stands, and the host replaces the instance
// before its next call (client.js), so no instance keeps more than the cap between calls.

const ENV = 'extism:host/env';
const WASI = 'wasi_snapshot_preview1';
const ARENA_BASE = 8; // offsets below it are never valid, so 0 stays null
const KERNEL_LIMIT = 64 << 20; // alloc beyond it returns 0, as the Go host's KernelMemoryLimit
/** The default cap of an instance's linear memory: the Go host's default (WithMemoryLimit, 512 pages). */
export const DEFAULT_MEMORY_LIMIT_BYTES = 32 << 20;
const ERRNO = { SUCCESS: 0, BADF: 8, INVAL: 28, NOSYS: 52 };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A trap ends the current call; the instance is broken afterwards. */
export class PluginTrap extends Error {
  name = 'PluginTrap';
}

/**
 * Instance is one instantiation of the plugin with its own kernel arena. It is single-threaded and
 * every call is synchronous, so JavaScript's event loop can never run two calls on it at once.
 */
export class Instance {
  #exports;
  #memory; // the plugin's linear memory (WASI reads and writes it)
  #arena = new Uint8Array(4096);
  #view = new DataView(this.#arena.buffer);
  #len = ARENA_BASE; // bytes of the arena in use
  #blocks = []; // [{off, len, freed}] in offset order
  #input = new Uint8Array(0);
  #inputView = new DataView(this.#input.buffer); // input_load_u64 reads through it: one per call, not per 8 bytes
  #out = null; // [off, len] set by output_set
  #error = '';
  #memoryLimit;
  broken = false;

  /**
   * @param {WebAssembly.Module} module the compiled plugin
   * @param {Record<string, (input: string) => string>} [user] imports of extism:host/user, if any
   *   (token_step needs none: it hands each import to the host)
   * @param {{memoryLimitBytes?: number}} [options] memoryLimitBytes: the cap of the plugin's linear
   *   memory (default DEFAULT_MEMORY_LIMIT_BYTES; Infinity for none): over it after a call, the
   *   instance is broken; below the plugin's memory at start (768 KiB), a RangeError
   */
  constructor(module, user = {}, { memoryLimitBytes = DEFAULT_MEMORY_LIMIT_BYTES } = {}) {
    if (typeof memoryLimitBytes !== 'number' || !(memoryLimitBytes > 0)) {
      throw new TypeError('tokenwasm: memoryLimitBytes must be a positive number of bytes (Infinity: no cap)');
    }
    this.#memoryLimit = memoryLimitBytes;
    const imports = { [ENV]: this.#env(), [WASI]: this.#wasi() };
    // Anything else the module imports (another build may import more) answers ENOSYS (WASI) or
    // traps when called: the plugin is told, never left with a silent zero.
    for (const imp of WebAssembly.Module.imports(module)) {
      if (imp.kind !== 'function') continue;
      const mod = (imports[imp.module] ??= {});
      if (mod[imp.name]) continue;
      if (imp.module === 'extism:host/user' && user[imp.name]) mod[imp.name] = this.#userFunc(user[imp.name]);
      else if (imp.module === WASI) mod[imp.name] = () => ERRNO.NOSYS;
      else
        mod[imp.name] = () => {
          throw new PluginTrap(`import ${imp.module}.${imp.name} is not provided by this host`);
        };
    }
    const instance = new WebAssembly.Instance(module, imports);
    this.#exports = instance.exports;
    this.#memory = instance.exports.memory;
    this.#exports._initialize?.();
    // The plugin grows its heap at start (768 KiB of memory in all): under a cap below that every
    // call would be over it, and each would cost a new instance. Say so once, here.
    if (this.#memory.buffer.byteLength > memoryLimitBytes) {
      throw new RangeError(
        `tokenwasm: memoryLimitBytes ${memoryLimitBytes} is below the plugin's memory at start (${this.#memory.buffer.byteLength} bytes)`,
      );
    }
  }

  /**
   * call runs export with input (a string or bytes) and returns its output as a string. A trap or a
   * non-zero return throws and leaves the instance broken: throw it away (abi/ABI.md). So does a
   * call after which the plugin's memory is over the cap, but its answer is returned.
   */
  call(name, input) {
    if (this.broken) throw new PluginTrap('instance is broken');
    const fn = this.#exports[name];
    if (typeof fn !== 'function') throw new TypeError(`the plugin has no export ${name}`);
    this.#reset();
    let rc;
    try {
      this.#input = typeof input === 'string' ? encoder.encode(input) : input;
      this.#inputView = new DataView(this.#input.buffer, this.#input.byteOffset, this.#input.length);
      rc = fn();
    } catch (err) {
      this.broken = true;
      // Never the input or output: they may hold secrets.
      throw new PluginTrap(`${name} trapped: ${err instanceof PluginTrap ? err.message : (err?.name ?? 'Error')}`);
    } finally {
      this.#input = EMPTY;
      this.#inputView = EMPTY_VIEW;
    }
    if (rc !== 0) {
      this.broken = true;
      throw new PluginTrap(`${name} returned ${rc}: ${this.#error}`);
    }
    if (this.#memory.buffer.byteLength > this.#memoryLimit) this.broken = true;
    if (!this.#out) return '';
    const [off, len] = this.#out;
    return decoder.decode(this.#arena.subarray(off, off + len));
  }

  /** arenaBytes is the kernel memory in use (tests: it must not grow from call to call). */
  get arenaBytes() {
    return this.#len;
  }

  /** memoryBytes is the size of the plugin's linear memory (it only grows). */
  get memoryBytes() {
    return this.#memory.buffer.byteLength;
  }

  /** memoryLimitBytes is the cap of memoryBytes after a call. */
  get memoryLimitBytes() {
    return this.#memoryLimit;
  }

  #reset() {
    this.#len = ARENA_BASE;
    this.#blocks.length = 0;
    this.#out = null;
    this.#error = '';
  }

  #alloc(n) {
    if (n === 0) return 0;
    const off = (this.#len + 7) & ~7;
    const end = off + n;
    if (end > KERNEL_LIMIT) return 0;
    if (end > this.#arena.length) {
      const grown = new Uint8Array(Math.max(end, 2 * this.#arena.length));
      grown.set(this.#arena.subarray(0, this.#len));
      this.#arena = grown;
      this.#view = new DataView(grown.buffer);
    } else this.#arena.fill(0, this.#len, end); // the arena is reused: no call reads what an earlier one left
    this.#len = end;
    this.#blocks.push({ off, len: n, freed: false });
    return off;
  }

  /** find returns the index of the live block starting at off, or -1. */
  #find(off) {
    const b = this.#blocks;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (b[mid].off < off) lo = mid + 1;
      else hi = mid;
    }
    return lo < b.length && b[lo].off === off && !b[lo].freed ? lo : -1;
  }

  /** free releases a block; freed blocks at the end of the arena are reclaimed at once. */
  #free(off) {
    const j = this.#find(off);
    if (j < 0) return;
    const b = this.#blocks;
    b[j].freed = true;
    while (b.length > 0 && b[b.length - 1].freed) this.#len = b.pop().off;
  }

  #block(off) {
    const j = this.#find(off);
    return j < 0 ? null : this.#arena.subarray(off, off + this.#blocks[j].len);
  }

  /** span checks that [off, off+n) lies in allocated kernel memory and returns off; traps if not. */
  #span(off, n) {
    if (off < ARENA_BASE || off + n > this.#len) throw new PluginTrap('kernel memory access out of bounds');
    return off;
  }

  #inputAt(off, n) {
    if (off < 0 || off + n > this.#input.length) throw new PluginTrap('input access out of bounds');
    return off;
  }

  #env() {
    const N = Number;
    const none = () => 0n;
    return {
      alloc: (n) => BigInt(this.#alloc(N(n))),
      free: (off) => this.#free(N(off)),
      length: (off) => {
        const j = this.#find(N(off));
        return BigInt(j < 0 ? 0 : this.#blocks[j].len);
      },
      length_unsafe: (off) => {
        const j = this.#find(N(off));
        return BigInt(j < 0 ? 0 : this.#blocks[j].len);
      },
      load_u8: (off) => this.#arena[this.#span(N(off), 1)],
      load_u64: (off) => this.#view.getBigUint64(this.#span(N(off), 8), true),
      store_u8: (off, v) => {
        this.#arena[this.#span(N(off), 1)] = v;
      },
      store_u64: (off, v) => this.#view.setBigUint64(this.#span(N(off), 8), v, true),
      input_length: () => BigInt(this.#input.length),
      input_load_u8: (off) => this.#input[this.#inputAt(N(off), 1)],
      input_load_u64: (off) => this.#inputView.getBigUint64(this.#inputAt(N(off), 8), true),
      output_set: (off, len) => {
        this.#span(N(off), N(len));
        this.#out = [N(off), N(len)];
      },
      error_set: (off) => {
        this.#error = decoder.decode(this.#block(N(off)) ?? new Uint8Array(0));
      },
      config_get: none,
      var_get: none,
      var_set: () => {},
      http_request: none,
      http_status_code: () => 0,
      http_headers: none,
      get_log_level: () => 5, // off: the plugin's logs are not wanted
      log_trace: () => {},
      log_debug: () => {},
      log_info: () => {},
      log_warn: () => {},
      log_error: () => {},
    };
  }

  /** userFunc adapts (input JSON) -> answer JSON to an (i64) -> i64 import. */
  #userFunc(fn) {
    return (off) => {
      const out = fn(decoder.decode(this.#block(Number(off)) ?? new Uint8Array(0)));
      if (!out) return 0n;
      const bytes = encoder.encode(out);
      const at = this.#alloc(bytes.length);
      if (at === 0) throw new PluginTrap('kernel memory limit reached');
      this.#arena.set(bytes, at);
      return BigInt(at);
    };
  }

  #wasi() {
    const mem = () => new DataView(this.#memory.buffer);
    /** none answers a count and a size of 0 (args_sizes_get, environ_sizes_get). */
    const none = (count, size) => {
      const v = mem();
      v.setUint32(count, 0, true);
      v.setUint32(size, 0, true);
      return ERRNO.SUCCESS;
    };
    return {
      // stdout and stderr are discarded (the plugin writes nothing there on purpose).
      fd_write: (fd, iovs, n, written) => {
        const v = mem();
        let total = 0;
        for (let i = 0; i < n; i++) total += v.getUint32(iovs + i * 8 + 4, true);
        v.setUint32(written, total, true);
        return fd === 1 || fd === 2 ? ERRNO.SUCCESS : ERRNO.BADF;
      },
      fd_close: () => ERRNO.BADF,
      fd_seek: () => ERRNO.BADF,
      // A cryptographic source (Candescent's transactionId); getRandomValues takes 64 KiB at most.
      random_get: (buf, len) => {
        const bytes = new Uint8Array(this.#memory.buffer, buf, len);
        for (let i = 0; i < len; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(len, i + 65536)));
        return ERRNO.SUCCESS;
      },
      // The real wall clock (expiry), and a monotonic one.
      clock_time_get: (id, _precision, out) => {
        let ns;
        if (id === 0) ns = BigInt(Date.now()) * 1000000n;
        else if (id === 1) ns = BigInt(Math.round(performance.now() * 1e6));
        else return ERRNO.INVAL;
        mem().setBigUint64(out, ns, true);
        return ERRNO.SUCCESS;
      },
      // No arguments and no environment: the plugin is configured by its input only.
      args_sizes_get: none,
      args_get: () => ERRNO.SUCCESS,
      environ_sizes_get: none,
      environ_get: () => ERRNO.SUCCESS,
      proc_exit: (code) => {
        throw new PluginTrap(`proc_exit(${code})`);
      },
    };
  }
}

const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);
