//! The statuses host calls return to a module (proxy-wasm's `WasmResult`),
//! as Envoy returns them. A leaf: every ABI area and foreign function uses it.

pub const OK: i32 = 0;
pub const NOT_FOUND: i32 = 1;
pub const BAD_ARGUMENT: i32 = 2;
pub const SERIALIZATION_FAILURE: i32 = 3;
pub const PARSE_FAILURE: i32 = 4;
pub const EMPTY: i32 = 7;
pub const CAS_MISMATCH: i32 = 8;
pub const INTERNAL_FAILURE: i32 = 10;
pub const UNIMPLEMENTED: i32 = 12;
