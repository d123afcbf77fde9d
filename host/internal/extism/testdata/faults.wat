;; A minimal Extism plugin for the kernel's tests: echo, error, trap, infinite loop, memory growth and
;; an out-of-bounds kernel access. Build: wat2wasm faults.wat -o faults.wasm (Debian package wabt).
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "load_u64" (func $load_u64 (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/user" "echo" (func $user_echo (param i64) (result i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/user" "slow" (func $user_slow (param i64) (result i64)))
  (memory (export "memory") 1)

  ;; copy_input copies the input into a new kernel block and returns its offset.
  (func $copy_input (result i64)
    (local $n i64) (local $i i64) (local $off i64)
    (local.set $n (call $input_length))
    (local.set $off (call $alloc (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8 (i64.add (local.get $off) (local.get $i)) (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (local.get $off))

  (func (export "echo") (result i32)
    (local $off i64)
    (local.set $off (call $copy_input))
    (call $output_set (local.get $off) (call $input_length))
    (i32.const 0))

  ;; user_echo passes the input through the host's extism:host/user echo import.
  (func (export "user_echo") (result i32)
    (local $off i64)
    (local.set $off (call $user_echo (call $copy_input)))
    (call $output_set (local.get $off) (call $length (local.get $off)))
    (i32.const 0))

  ;; slow_import calls the host's slow import, then loops forever: the deadline must stop it at the
  ;; import's return, without Config.Interruptible.
  (func (export "slow_import") (result i32)
    (drop (call $user_slow (call $copy_input)))
    (loop $forever (br $forever))
    (i32.const 0))

  (func (export "fail") (result i32)
    (call $error_set (call $copy_input))
    (i32.const 3))

  (func (export "trap") (result i32) unreachable)

  (func (export "spin") (result i32)
    (loop $forever (br $forever))
    (i32.const 0))

  ;; grow asks for 4 GiB of linear memory, past any cap, and traps if refused.
  (func (export "grow") (result i32)
    (if (i32.eq (memory.grow (i32.const 65535)) (i32.const -1)) (then unreachable))
    (i32.const 0))

  (func (export "oob") (result i32)
    (drop (call $load_u64 (i64.const 0x7fffffff)))
    (i32.const 0))

  ;; peek reads or writes kernel memory where its input says, for the kernel's bounds tests. The
  ;; input is an op (u64), an offset (u64) and any padding: op 0 is input_load_u64(offset), 1
  ;; input_load_u8(offset), 2 load_u64(b + offset), 3 load_u8(b + offset), 4 store_u64(b + offset),
  ;; where b is a block holding a copy of the input. Its output is the 8 bytes read (or written).
  (func (export "peek") (result i32)
    (local $op i64) (local $at i64) (local $v i64) (local $b i64) (local $out i64)
    (local.set $op (call $input_load_u64 (i64.const 0)))
    (local.set $at (call $input_load_u64 (i64.const 8)))
    (if (i64.ge_u (local.get $op) (i64.const 2))
      (then (local.set $b (call $copy_input))))
    (local.set $v (i64.const 0x0123456789abcdef))
    (block $done
      (br_if $done (i64.eq (local.get $op) (i64.const 4)))
      (if (i64.eq (local.get $op) (i64.const 0))
        (then (local.set $v (call $input_load_u64 (local.get $at))) (br $done)))
      (if (i64.eq (local.get $op) (i64.const 1))
        (then (local.set $v (i64.extend_i32_u (call $input_load_u8 (local.get $at)))) (br $done)))
      (if (i64.eq (local.get $op) (i64.const 2))
        (then (local.set $v (call $load_u64 (i64.add (local.get $b) (local.get $at)))) (br $done)))
      (local.set $v (i64.extend_i32_u (call $load_u8 (i64.add (local.get $b) (local.get $at))))))
    (if (i64.eq (local.get $op) (i64.const 4))
      (then (call $store_u64 (i64.add (local.get $b) (local.get $at)) (local.get $v))))
    (local.set $out (call $alloc (i64.const 8)))
    (call $store_u64 (local.get $out) (local.get $v))
    (call $output_set (local.get $out) (i64.const 8))
    (i32.const 0))

  ;; fresh outputs a new block as long as the input, unwritten: it must hold zeros, never what an
  ;; earlier call left in kernel memory.
  (func (export "fresh") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (call $input_length)))
    (call $output_set (local.get $off) (call $input_length))
    (i32.const 0))
)
