;; A plugin whose _initialize, run before its first call, writes into its kernel's memory below the
;; arena (the header, at 40) and past it: it must trap, not instantiate.
(module
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "_initialize")
    (call $store_u64 (i64.const 40) (i64.const 0x4142434445464748))
    (call $store_u64 (i64.const 65000) (i64.const 7)))
  (func (export "run") (result i32) (i32.const 0)))
