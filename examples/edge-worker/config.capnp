# The edge gateway in workerd, from an app that installed the package (README.md): bundle first,
#   npx esbuild worker.js --bundle --format=esm --platform=neutral --loader:.wasm=copy '--asset-names=[name]' --outdir=dist
# then, with the secrets in the environment,
#   TOKEN_REQUEST='{"provider":...}' TOKENWASM_CACHE_KEY="$(openssl rand -base64 32)" npx workerd serve config.capnp
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .gateway)],
  sockets = [(name = "http", address = "127.0.0.1:8080", http = (), service = "main")],
);

const gateway :Workerd.Worker = (
  # The bundle (worker.js, upstream.js and the package) and the plugin beside it, as esbuild wrote them.
  modules = [
    (name = "worker.js", esModule = embed "dist/worker.js"),
    (name = "tokenwasm.wasm", wasm = embed "dist/tokenwasm.wasm"),
  ],
  bindings = [
    (name = "UPSTREAM", text = "https://api.example.com/v1"),
    (name = "TOKEN_REQUEST", fromEnvironment = "TOKEN_REQUEST"),
    (name = "TOKENS", durableObjectNamespace = "TokenCoordinator"),
    (name = "TOKENWASM_CACHE_KEY", fromEnvironment = "TOKENWASM_CACHE_KEY"),
  ],
  # The fleet's tokens, sealed (another Worker of this config binds them with
  # durableObjectNamespace = (serviceName = "main", className = "TokenCoordinator")).
  durableObjectNamespaces = [(className = "TokenCoordinator", uniqueKey = "tokenwasm-gateway-tokens")],
  # In memory: gone with the process. To keep them, (localDisk = "tokens") and a service
  # (name = "tokens", disk = (path = "/var/lib/tokenwasm", writable = true)).
  durableObjectStorage = (inMemory = void),
  compatibilityDate = "2026-11-01",
);
