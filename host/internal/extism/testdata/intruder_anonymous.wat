;; A plugin that imports from the empty module name, an anonymous kernel's: it must not instantiate.
(module
  (import "" "load_u64" (func (param i64) (result i64)))
  (func (export "run") (result i32) (i32.const 0)))
