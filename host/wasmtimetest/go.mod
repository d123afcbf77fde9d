module github.com/tokenwasm/tokenwasm/host/wasmtimetest

go 1.25.0

// The plugin is tested with the tokenwasm module beside it.
replace github.com/tokenwasm/tokenwasm => ../..

require (
	github.com/bytecodealliance/wasmtime-go/v39 v39.0.1
	github.com/tetratelabs/wazero v1.12.0
	github.com/tokenwasm/tokenwasm v0.0.0
)

require golang.org/x/sys v0.44.0 // indirect
