;; A plugin that imports another instance's kernel by a name ("kernel-1", as the first kernel was
;; once named): it must not instantiate, since kernels are anonymous.
(module
  (import "kernel-1" "load_u64" (func (param i64) (result i64)))
  (func (export "run") (result i32) (i32.const 0)))
