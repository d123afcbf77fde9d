;; A plugin that imports the kernel's memory: it must not instantiate (the kernel exports functions only).
(module
  (import "extism:host/env" "memory" (memory 1))
  (func (export "run") (result i32) (i32.const 0)))
