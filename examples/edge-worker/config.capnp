# The edge worker in workerd: `workerd serve config.capnp` (from this folder). Replace the bindings'
# values; in production keep TOKEN_REQUEST a secret (wrangler: `wrangler secret put TOKEN_REQUEST`).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .gateway)],
  sockets = [(name = "http", address = "127.0.0.1:8080", http = (), service = "main")],
);

const gateway :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "upstream.js", esModule = embed "upstream.js"),
    (name = "tokenwasm.wasm", wasm = embed "../../host/js/tokenwasm.wasm"),
    # The package under its own name, its files beside it (its relative imports resolve to them).
    (name = "tokenwasm", esModule = embed "../../host/js/src/index.js"),
    (name = "client.js", esModule = embed "../../host/js/src/client.js"),
    (name = "kernel.js", esModule = embed "../../host/js/src/kernel.js"),
    (name = "http.js", esModule = embed "../../host/js/src/http.js"),
    (name = "redact.js", esModule = embed "../../host/js/src/redact.js"),
    (name = "cache.js", esModule = embed "../../host/js/src/cache.js"),
  ],
  bindings = [
    (name = "UPSTREAM", text = "https://api.example.com/v1"),
    (name = "TOKEN_REQUEST", text = "{\"provider\":\"nikohealth\",\"domain\":\"acme\",\"client_id\":\"...\",\"client_secret\":\"...\"}"),
  ],
  compatibilityDate = "2026-11-01",
);
