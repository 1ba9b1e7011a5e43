;; The floor for a Wasm HTTP filter in Envoy: reads one request header and
;; sets one, with no SDK and no allocator. It exports only what Envoy needs to
;; load a module (ABI marker, vm start, configure, memory allocate) and the
;; request-headers callback: Envoy skips every callback a module lacks.
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $set_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "end-user")
  (data (i32.const 32) "x-version")
  (data (i32.const 48) "v2")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; One scratch page for every value the host returns: nothing is kept.
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))
  ;; (context_id, header count, end_of_stream) -> Continue
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; map 0 = request headers; value pointer and size land at 64 and 68
    (drop (call $get_header (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 64) (i32.const 68)))
    (drop (call $set_header (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 48) (i32.const 2)))
    (i32.const 0))
)
