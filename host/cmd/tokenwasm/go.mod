module github.com/tokenwasm/tokenwasm/host/cmd/tokenwasm

go 1.25.0

require (
	github.com/redis/go-redis/v9 v9.22.0
	github.com/tokenwasm/tokenwasm v0.0.0
	github.com/tokenwasm/tokenwasm/host/rediscache v0.0.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	github.com/tidwall/gjson v1.18.0 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	go.uber.org/atomic v1.11.0 // indirect
	golang.org/x/oauth2 v0.35.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
)

// The command is built and tested with the tokenwasm modules beside it.
replace (
	github.com/tokenwasm/tokenwasm => ../../..
	github.com/tokenwasm/tokenwasm/host/rediscache => ../../rediscache
)
