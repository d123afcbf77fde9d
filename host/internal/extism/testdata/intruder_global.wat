;; A plugin that imports a global of the kernel: it must not instantiate.
(module
  (import "extism:host/env" "base" (global (mut i64)))
  (func (export "run") (result i32) (i32.const 0)))
