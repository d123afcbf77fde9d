// Types of the tokenwasm package. The shapes are those of abi/ABI.md.

/**
 * A token request: exactly the fields of abi/ABI.md's TokenRequest table. The plugin refuses any
 * other (`invalid_request: unknown field "scopes"`), so a misspelt field is a compile error here.
 */
export interface TokenRequest {
  provider: 'candid' | 'pattern' | 'candescent' | 'nikohealth' | 'smart' | 'custom';
  grant_type?: 'client_credentials' | 'password' | 'authorization_code' | 'refresh_token';
  client_id: string;
  /** Required but for a client authenticated without it (private_key_jwt, smart; tls_client_auth). */
  client_secret?: string;
  token_url?: string;
  domain?: string;
  scope?: string;
  institution_id?: string;
  username?: string;
  password?: string;
  code?: string;
  redirect_uri?: string;
  code_verifier?: string;
  refresh_token?: string;
  body?: 'json' | 'form';
  timeout_ms?: number;
  params?: Record<string, string>;
  headers?: Record<string, string>;
  /** Required when provider is 'custom'. */
  profile?: Profile;
  /** token only: fetch past the caches. */
  force?: boolean;
  /** token and decode only: the clock, for tests and replays. */
  now_ms?: number;
  /** token only: serve a cached token only with more than this much life left. */
  min_ttl_ms?: number;
  /** token only: take the fetch lock in the shared cache first (a shared cache, RedisCache, implies it). */
  fleet_lock?: boolean;
  /** invalidate only: drop the cached token only if it is this one. */
  access_token?: string;
  /** private_key_jwt: the signing key the host holds (the assertion's kid); tls_client_auth: the client certificate. */
  key_id?: string;
  /** The client assertion's algorithm, one of the profile's (HS256: client_secret_jwt). */
  assertion_alg?: 'HS256' | JWSAlgorithm;
  /** Tests and replays only, with now_ms: the assertion's jti. */
  assertion_jti?: string;
  /** revoke: the RFC 7009 endpoint, over the profile's. */
  revocation_url?: string;
  /** smart: the FHIR base URL whose .well-known/smart-configuration names the token URL. */
  fhir_base?: string;
}

/** A custom provider's profile: the fields of abi/ABI.md's Profile table, and name (a label, ignored). */
export interface Profile {
  name?: string;
  token_url?: string;
  body?: 'json' | 'form';
  client_auth?: 'body' | 'basic' | 'basic_rfc6749' | 'client_secret_jwt' | 'private_key_jwt' | 'tls_client_auth';
  revocation_url?: string;
  revocation_method?: 'POST' | 'DELETE';
  /** private_key_jwt: the one algorithm of the client's key; client_secret_jwt: HS256. */
  assertion_alg?: 'HS256' | JWSAlgorithm;
  send_grant_type?: boolean;
  send_scope?: boolean;
  expires_in_unit?: 's' | 'ms';
  headers?: Record<string, string>;
  grants?: Array<'client_credentials' | 'password' | 'authorization_code' | 'refresh_token'>;
}

export interface Token {
  access_token: string;
  token_type: string;
  expires_in: number;
  expires_at_ms: number;
  issued_at_ms: number;
  refresh_token?: string;
  scope?: string;
}

export type ErrorKind =
  | 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unauthorized_client' | 'unsupported_grant_type'
  | 'invalid_scope' | 'access_denied' | 'rate_limited' | 'unsupported_media_type' | 'server_error'
  | 'malformed_response' | 'transport' | 'policy'
  /** The host did not sign a private_key_jwt assertion (no key for key_id, a key of another kind, another client's key): nothing sent. */
  | 'signing'
  /** A private_key_jwt request on a client without `signers`: nothing sent. */
  | 'signing_required';

export interface TokenwasmError {
  kind: ErrorKind;
  message: string;
  status?: number;
  retryable: boolean;
  retry_after_ms?: number;
  oauth_error?: string;
  description?: string;
  /** This host's: the caller's signal aborted (kind 'transport'); the flow ran on for its other callers. */
  aborted?: true;
}

export type TokenAnswer =
  | {
      token: Token;
      cached: boolean;
      /** The plugin's schedule (Unix ms): from refresh_at_ms the token is refreshed in the background. */
      refresh_at_ms: number;
      /** From stale_at_ms a caller waits for a fetch; if it fails, the token is still served until expires_at_ms. */
      stale_at_ms: number;
      error?: undefined;
    }
  | { error: TokenwasmError; token?: undefined };

/** A cache shared by the clients (and processes) that should share tokens, 429 gates and fetch locks. */
export interface SharedCache {
  /** The live value of key, or undefined. Never an entry past its TTL. */
  get(key: string): string | undefined | Promise<string | undefined>;
  /** Store value for ttlMs; with nx only if key is absent, atomically. Returns whether it stored. */
  set(key: string, value: string, ttlMs: number, nx?: boolean): boolean | Promise<boolean>;
  /** Delete key; with ifValue only while key holds exactly that value. */
  delete(key: string, ifValue?: string): void | Promise<void>;
  /** True for a cache shared across processes (RedisCache, DurableObjectCache): every fetch then takes the fleet lock. */
  readonly shared?: boolean;
}

export declare class MemoryCache implements SharedCache {
  get(key: string): string | undefined;
  set(key: string, value: string, ttlMs: number, nx?: boolean): boolean;
  delete(key: string, ifValue?: string): void;
  readonly size: number;
}

/** A Durable Object namespace binding (Cloudflare's DurableObjectNamespace), as far as the cache uses it. */
export interface DurableObjectNamespaceLike {
  idFromName(name: string): unknown;
  get(id: any, options?: { locationHint?: string }): { fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> };
}

/**
 * The shared cache on a Durable Object of TokenCoordinator: every isolate and every Worker bound to
 * the namespace (and using the same name and keys) shares tokens, 429 gates, the fleet lock and a
 * one-time grant's lineage. Names are HMACs of the plugin's keys and values are AES-256-GCM sealed,
 * as RedisCache does: the object's storage (Cloudflare's) holds nothing readable.
 */
export declare class DurableObjectCache implements SharedCache {
  /**
   * @param namespace the binding of a TokenCoordinator namespace (env.TOKENS)
   * @param options keys: 32-byte AES-256 keys, bytes or base64 text (a secret binding); the first
   *   seals, all open (rotation). hashKey: the HMAC key for names (32 bytes or more), derived from
   *   keys[0] when absent. name: the object's name, default "tokenwasm". locationHint: where the
   *   object is created (Cloudflare's location hints, "enam", "weur", ...), near its Workers.
   */
  constructor(
    namespace: DurableObjectNamespaceLike,
    options: { keys: (Uint8Array | ArrayBuffer | string)[]; hashKey?: Uint8Array | ArrayBuffer | string; name?: string; locationHint?: string },
  );
  readonly shared: true;
  /** The object's key for a plugin key: RedisCache's redisKey, byte for byte. */
  storageKey(key: string): Promise<string>;
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string, ttlMs: number, nx?: boolean): Promise<boolean>;
  delete(key: string, ifValue?: string): Promise<void>;
}

/**
 * The Durable Object class behind DurableObjectCache: export it from the Worker's main module and
 * bind a namespace of it. It stores opaque strings with TTLs, one operation at a time (POST of
 * {op: "get" | "set" | "delete", key, value?, ttl_ms?, nx?, if_value?}), and sweeps expired entries
 * with an alarm.
 */
export declare class TokenCoordinator {
  constructor(state: { storage: any }, env?: unknown);
  fetch(request: Request): Promise<Response>;
  alarm(): Promise<void>;
}

export interface Logger {
  debug?(msg: string, attrs: Record<string, unknown>): void;
  warn?(msg: string, attrs: Record<string, unknown>): void;
}

/** The client assertion algorithms of private_key_jwt. */
export type JWSAlgorithm = 'RS256' | 'RS384' | 'PS256' | 'ES256' | 'ES384';

/**
 * A key that signs private_key_jwt client assertions (token_step's sign action) with WebCrypto.
 * The private key never enters the plugin, and keys given as a JWK or PEM are imported not
 * extractable.
 */
export interface Signer {
  /** The key id: what requests name as key_id, the assertions' kid, the JWK Set's kid. 1 to 256 bytes. */
  kid: string;
  /**
   * The private key: a CryptoKey (RSASSA-PKCS1-v1_5 with SHA-256 or SHA-384, RSA-PSS with SHA-256,
   * ECDSA on P-256 or P-384; a non-extractable one from a platform's secret store works), a
   * CryptoKeyPair, a JWK (an object or its JSON), or a PKCS #8 PEM ("BEGIN PRIVATE KEY"). RSA keys
   * of 2048 bits or more.
   */
  key: CryptoKey | CryptoKeyPair | JsonWebKey | string;
  /**
   * The one algorithm the key signs. A CryptoKey's own (its algorithm and hash) by default; an EC
   * key's curve decides; an RSA JWK or PEM without alg (nor a JWK alg member) signs RS256, RS384 or
   * PS256 as each request's assertion_alg asks, as the Go host's WithSigner does.
   */
  alg?: JWSAlgorithm;
  /**
   * The client ids the key signs for (the assertion's iss = sub): a key id is public (it is in the
   * JWK Set), so a client serving several tenants binds each key to its client, or a request naming
   * another client's kid gets that client's tokens signed. Absent: any client; [] binds to none.
   */
  clients?: string[];
  /** The public key, for client.jwks() when `key` is a private CryptoKey that is not extractable. */
  publicKey?: CryptoKey | JsonWebKey;
}

export interface ClientOptions {
  /**
   * The plugin: bytes, a path or file URL (Node, Deno, Bun: the package's "node" entry), or a
   * WebAssembly.Module (workerd: a module of the worker). Default in Node, Deno and Bun: the
   * package's own; in Workers and bundles (the "workerd", "worker", "browser" and "default"
   * entry, which names no node: module) it must be given.
   */
  wasm?: Uint8Array | ArrayBuffer | string | URL | WebAssembly.Module;
  /** https hosts besides the providers' own: "host" (port 443), "host:port", "*.domain". */
  allowedHosts?: string[];
  /** Let token requests reach loopback, plain http included: local fakes only. */
  allowLoopback?: boolean;
  /** Default: a MemoryCache of this client. Share one (or a RedisCache, or a DurableObjectCache in Workers) to share tokens; with a shared MemoryCache set fleet_lock (the other two imply it). */
  cache?: SharedCache;
  logger?: Logger;
  /** The fetch used for token requests and client.fetch (tests). */
  fetch?: typeof fetch;
  /** Plugin instances (default 4): flows of different credential sets keep to their own. */
  instances?: number;
  /**
   * The cap of each instance's WebAssembly memory in bytes (default 32 MiB, as the Go host's
   * WithMemoryLimit; Infinity for none). The plugin's memory only grows: an instance over the cap
   * after a call keeps that call's answer and is replaced before its next call. A cap below the
   * plugin's memory at start (768 KiB) is a RangeError.
   */
  memoryLimitBytes?: number;
  /**
   * Called with each refresh token a fetched (not cached) answer carries, for the application to
   * keep beyond the cache's life (the flow itself keeps a one-time grant's newest refresh token in
   * the cache and sends it in place of the request's). The request is the one whose call fetched,
   * without `force`: the credential set as given, whichever refresh token the flow sent. It is the
   * caller's object itself, read when the answer arrives: an object reused for another tenant while
   * the fetch was in flight shows that tenant's fields, so give each call its own (or a frozen one).
   * Not awaited; what it throws or rejects is swallowed and never logged. A provider that does not
   * rotate may hand the same token again; one equal to the request's refresh_token is not passed.
   */
  onRefreshToken?: (request: TokenRequest, refreshToken: string) => void | Promise<void>;
  /**
   * For tests only: the clock (Unix ms) the client judges its held tokens' schedule by, also given
   * to the plugin as now_ms, so a test moves time instead of sleeping. Waits and timeouts keep the
   * wall clock; the cache keeps its own (give it the same one). Default: Date.now.
   */
  now?: () => number;
  /**
   * The keys that sign private_key_jwt client assertions (SMART Backend Services: Epic, Oracle
   * Health). Without them a private_key_jwt request ends with `signing_required`. createClient
   * throws a TypeError for a key it cannot use (naming the kid, never the key).
   */
  signers?: Signer[];
}

/**
 * Errors, one style: token() and invalidate() answer every failure as {error} (the provider, the
 * network, the host's policy, the cache, another process's fetch, a plugin fault, and an abort:
 * {error: {kind: 'transport', aborted: true, retryable: true, message}}); they reject only when
 * called wrongly (a TypeError for a request that is not a JSON object; an Error on a closed client).
 * fetch() rejects with a TokenError when token() answers {error}, and otherwise exactly as fetch
 * does: with the signal's reason on an abort (while the token is fetched too), with fetch's own
 * error when the API request fails.
 */
export interface Client {
  /**
   * A valid token ({token, cached, refresh_at_ms, stale_at_ms}) or a typed error ({error}); from
   * memory when one is held. `force: true` fetches past the caches; for a one-time grant
   * (refresh_token, authorization_code) it joins the fetch in progress instead of racing it. An
   * aborted signal answers {error} with `aborted: true` at once and only detaches this caller: the
   * flow runs on and stores what it fetched.
   */
  token(request: TokenRequest, options?: { signal?: AbortSignal }): Promise<TokenAnswer>;
  /**
   * Drops the cached token after an API's 401. With access_token: only that token, at most once per
   * 30 s per credential set across the fleet; `retry` says whether a new token is worth trying.
   * `error.not_dropped`: the cache could not drop it (a shared cache may serve it again).
   */
  invalidate(request: TokenRequest): Promise<{ retry?: boolean; error?: TokenwasmError & { not_dropped?: boolean } }>;
  /**
   * fetch with the request's token in Authorization; a 401 invalidates once and retries once.
   * Rejects with a TokenError when no token can be had; else as fetch does (an abort: the signal's
   * reason, while the token is fetched too; an API request that fails: fetch's error).
   */
  fetch(request: TokenRequest, input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Run one export (describe, encode, decode, token_step) and return its parsed JSON answer. */
  call(exportName: string, input?: unknown): any;
  describe(): any;
  encode(request: TokenRequest): { request: object } | { error: TokenwasmError };
  decode(request: TokenRequest, response: object, nowMs?: number): { token: Token } | { error: TokenwasmError };
  readonly cache: SharedCache;
  /**
   * The signers' public keys as a JWK Set ({"keys": [{kty, kid, use: "sig", alg?, n, e | crv, x, y}]},
   * ordered by kid; alg when the key signs one algorithm only), a new Response each call with
   * `application/jwk-set+json` and `Cache-Control: public, max-age=300`: serve it at the URL given
   * to the servers (a jwks_uri). `{"keys": []}` without signers. Throws a TypeError for a signer
   * whose public key it cannot have (a non-extractable private CryptoKey without publicKey).
   */
  jwks(): Response;
  /** Refuse new calls and wait for the flows in progress. */
  close(): Promise<void>;
}

export declare function createClient(options?: ClientOptions): Promise<Client>;
export declare function loadModule(wasm?: ClientOptions['wasm']): Promise<WebAssembly.Module>;

/** What client.fetch rejects with when no token could be had: `error` is token()'s {error}. */
export declare class TokenError extends Error {
  constructor(error: TokenwasmError);
  readonly error: TokenwasmError;
}

export declare const DEFAULT_ALLOWED_HOSTS: readonly string[];
export declare const MAX_RESPONSE_BYTES: number;
export declare const MAX_RESPONSE_HEADER_BYTES: number;
export declare function parseAllowedHosts(entries: readonly string[]): { host: string; port: number; wildcard: boolean }[];
/** The client's http_send without a plugin: HttpRequest -> HttpResponse | {error} | {error, policy: true}. */
export declare function httpSender(options?: Pick<ClientOptions, 'allowLoopback' | 'allowedHosts' | 'fetch' | 'logger'>): (request: object) => Promise<object>;

/** One plugin instance on this package's Extism kernel (tests and other hosts). */
export declare class Instance {
  constructor(module: WebAssembly.Module, user?: Record<string, (input: string) => string>, options?: Pick<ClientOptions, 'memoryLimitBytes'>);
  /** Throws PluginTrap on a trap (the instance is broken); over its memory cap after the call, the instance is broken but the answer returned. */
  call(exportName: string, input: string | Uint8Array): string;
  readonly arenaBytes: number;
  /** The plugin's linear memory in bytes (it only grows). */
  readonly memoryBytes: number;
  readonly memoryLimitBytes: number;
  broken: boolean;
}
/** The default memoryLimitBytes: 32 MiB, the Go host's default (WithMemoryLimit). */
export declare const DEFAULT_MEMORY_LIMIT_BYTES: number;
export declare class PluginTrap extends Error {}
