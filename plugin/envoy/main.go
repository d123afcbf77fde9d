// Command envoy is the tokenwasm proxy-wasm filter for Envoy (and other proxy-wasm hosts): it sets
// a provider's access token on upstream requests, fetching it with the same provider core as the
// Extism plugin (plugin/core), through one proxy_http_call per token shared by every worker.
//
// Build (proxy-wasm-go-sdk needs standard Go, not TinyGo):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/envoy-filter.wasm ./plugin/envoy
package main

import "github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

func main() {}

func init() { proxywasm.SetVMContext(&vmContext{}) }
