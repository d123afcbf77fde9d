;; The Extism kernel module of the wazero host: the functions a plugin calls for every 8 bytes it
;; reads or writes (input_length, input_load_*, load_*, store_*) run here, in wasm, on this module's
;; memory, which holds the call's input and the block arena; every other kernel function is the Go
;; one (env.go), imported from "extism:host/env/go" and exported again under its Extism name. A call
;; from the plugin into Go costs some 80 ns in wazero, one into this module a few: a token fetch
;; reads and writes a few KB this way. Each plugin instance has its own instance of this module,
;; anonymous: only the plugin's imports reach it (Module.Instantiate).
;;
;; The module exports functions only: no memory and no global a plugin could import. Go keeps the
;; header at the start of the memory true (Kernel.sync), below every offset a block may have: at 0
;; where blocks start (past the input), at 8 where the arena ends, at 16 the input's length, at 24
;; whether the input is in this memory at all (an input too large to copy in is read through Go),
;; which it is at 64, right after the header (Go's arenaBase). An access outside them traps with Go's
;; message (oob, input_oob).
;;
;; Build: wat2wasm kernel.wat -o kernel.wasm (Debian package wabt); TestWasmIsBuiltFromWat
;; checks the committed kernel.wasm.
(module
  (import "extism:host/env/go" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env/go" "free" (func $free (param i64)))
  (import "extism:host/env/go" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env/go" "length_unsafe" (func $length_unsafe (param i64) (result i64)))
  (import "extism:host/env/go" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env/go" "error_set" (func $error_set (param i64)))
  (import "extism:host/env/go" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env/go" "var_get" (func $var_get (param i64) (result i64)))
  (import "extism:host/env/go" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env/go" "http_request" (func $http_request (param i64 i64) (result i64)))
  (import "extism:host/env/go" "http_status_code" (func $http_status_code (result i32)))
  (import "extism:host/env/go" "http_headers" (func $http_headers (result i64)))
  (import "extism:host/env/go" "get_log_level" (func $get_log_level (result i32)))
  (import "extism:host/env/go" "log_trace" (func $log_trace (param i64)))
  (import "extism:host/env/go" "log_debug" (func $log_debug (param i64)))
  (import "extism:host/env/go" "log_info" (func $log_info (param i64)))
  (import "extism:host/env/go" "log_warn" (func $log_warn (param i64)))
  (import "extism:host/env/go" "log_error" (func $log_error (param i64)))
  (import "extism:host/env/go" "input_load_u8" (func $go_input_load_u8 (param i64) (result i32)))
  (import "extism:host/env/go" "input_load_u64" (func $go_input_load_u64 (param i64) (result i64)))
  (import "extism:host/env/go" "oob" (func $oob))
  (import "extism:host/env/go" "input_oob" (func $input_oob))

  (memory 1)

  (export "alloc" (func $alloc))
  (export "free" (func $free))
  (export "length" (func $length))
  (export "length_unsafe" (func $length_unsafe))
  (export "output_set" (func $output_set))
  (export "error_set" (func $error_set))
  (export "config_get" (func $config_get))
  (export "var_get" (func $var_get))
  (export "var_set" (func $var_set))
  (export "http_request" (func $http_request))
  (export "http_status_code" (func $http_status_code))
  (export "http_headers" (func $http_headers))
  (export "get_log_level" (func $get_log_level))
  (export "log_trace" (func $log_trace))
  (export "log_debug" (func $log_debug))
  (export "log_info" (func $log_info))
  (export "log_warn" (func $log_warn))
  (export "log_error" (func $log_error))

  ;; at returns the address of n bytes of the arena at off, trapping unless base <= off and
  ;; off + n <= end (end >= base >= 64 > n once Go has written the header, which it does before the
  ;; plugin's _initialize: end - n does not wrap).
  (func $at (param $off i64) (param $n i64) (result i32)
    (if (i32.or (i64.lt_u (local.get $off) (i64.load (i32.const 0)))
                (i64.gt_u (local.get $off) (i64.sub (i64.load (i32.const 8)) (local.get $n))))
      (then (call $oob) (unreachable)))
    (i32.wrap_i64 (local.get $off)))

  (func (export "load_u8") (param $off i64) (result i32)
    (i32.load8_u (call $at (local.get $off) (i64.const 1))))
  (func (export "load_u64") (param $off i64) (result i64)
    (i64.load (call $at (local.get $off) (i64.const 8))))
  (func (export "store_u8") (param $off i64) (param $v i32)
    (i32.store8 (call $at (local.get $off) (i64.const 1)) (local.get $v)))
  (func (export "store_u64") (param $off i64) (param $v i64)
    (i64.store (call $at (local.get $off) (i64.const 8)) (local.get $v)))

  (func (export "input_length") (result i64) (i64.load (i32.const 16)))

  ;; in returns the address of n bytes of the input at off, trapping unless off + n <= in_len.
  (func $in (param $off i64) (param $n i64) (result i32)
    (local $len i64)
    (local.set $len (i64.load (i32.const 16)))
    (if (i32.or (i64.lt_u (local.get $len) (local.get $n))
                (i64.gt_u (local.get $off) (i64.sub (local.get $len) (local.get $n))))
      (then (call $input_oob) (unreachable)))
    (i32.wrap_i64 (i64.add (i64.const 64) (local.get $off))))

  (func (export "input_load_u8") (param $off i64) (result i32)
    (if (result i32) (i64.ne (i64.load (i32.const 24)) (i64.const 0))
      (then (i32.load8_u (call $in (local.get $off) (i64.const 1))))
      (else (call $go_input_load_u8 (local.get $off)))))
  (func (export "input_load_u64") (param $off i64) (result i64)
    (if (result i64) (i64.ne (i64.load (i32.const 24)) (i64.const 0))
      (then (i64.load (call $in (local.get $off) (i64.const 8))))
      (else (call $go_input_load_u64 (local.get $off)))))
)
