;; The floor with a response callback: as request.wat, and sets one response
;; header from proxy_on_response_headers (the router's served-version header).
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $set_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "end-user")
  (data (i32.const 32) "x-version")
  (data (i32.const 48) "v2")
  (data (i32.const 80) "x-served-version")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_header (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 64) (i32.const 68)))
    (drop (call $set_header (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 48) (i32.const 2)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    ;; map 2 = response headers
    (drop (call $set_header (i32.const 2) (i32.const 80) (i32.const 16) (i32.const 48) (i32.const 2)))
    (i32.const 0))
)
