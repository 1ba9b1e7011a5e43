//! No-panic wrappers over the proxy-wasm ABI 0.2.1 host functions Switchyard uses.
//!
//! Every call returns a `Result` over the raw status, whatever the host
//! answers, so a host that refuses a call (a header map that is gone, a
//! foreign function it lacks) degrades one feature instead of trapping.

use std::ptr::{null, null_mut};

/// A host status other than `Ok`, as the raw ABI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const NOT_FOUND: Status = Status(1);
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const MAP_HTTP_RESPONSE_HEADERS: u32 = 2;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const METRIC_COUNTER: u32 = 0;

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[derive(Debug, Clone, Copy)]
pub enum Headers {
    Request,
    Response,
}

impl Headers {
    fn map_type(self) -> u32 {
        match self {
            Headers::Request => MAP_HTTP_REQUEST_HEADERS,
            Headers::Response => MAP_HTTP_RESPONSE_HEADERS,
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of host-allocated bytes (allocated through the SDK's
/// exported `proxy_on_memory_allocate`, i.e. this module's allocator).
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        if !data.is_null() {
            drop(Vec::from_raw_parts(data, 0, 0));
        }
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

fn status(code: u32) -> Result<(), Status> {
    if code == OK {
        Ok(())
    } else {
        Err(Status(code))
    }
}

pub fn log(level: Level, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The plugin configuration bytes (`None` when the host has none).
pub fn plugin_configuration() -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    match unsafe {
        proxy_get_buffer_bytes(
            BUFFER_PLUGIN_CONFIGURATION,
            0,
            usize::MAX,
            &mut data,
            &mut size,
        )
    } {
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// The first value of header `name`; `Ok(None)` when absent.
pub fn header(map: Headers, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    match unsafe {
        proxy_get_header_map_value(
            map.map_type(),
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    } {
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// Replaces every value of `name` with `value` (adding it when absent).
pub fn set_header(map: Headers, name: &str, value: &[u8]) -> Result<(), Status> {
    status(unsafe {
        proxy_replace_header_map_value(
            map.map_type(),
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: Headers, name: &str) -> Result<(), Status> {
    status(unsafe { proxy_remove_header_map_value(map.map_type(), name.as_ptr(), name.len()) })
}

/// A counter; `None` when the host refused to define it (then increments are no-ops).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Self {
        let mut id = 0u32;
        let code =
            unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
        if code == OK {
            Counter(Some(id))
        } else {
            log(
                Level::Warn,
                &format!("switchyard: could not define metric {name}: status {code}"),
            );
            Counter(None)
        }
    }

    pub fn increment(self) {
        if let Some(id) = self.0 {
            let _ = unsafe { proxy_increment_metric(id, 1) };
        }
    }
}

/// Calls a host foreign function; `Err(Status::NOT_FOUND)` when the host lacks it.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let args_ptr = if args.is_empty() {
        null()
    } else {
        args.as_ptr()
    };
    let code = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args_ptr,
            args.len(),
            &mut data,
            &mut size,
        )
    };
    let out = unsafe { owned(data, size) };
    status(code).map(|()| out)
}

/// Asks the host to re-pick the route after a header change. Envoy since 1.33
/// no longer does this by itself for Wasm filters; hosts without the function
/// (older Envoy re-picks on its own) are fine to ignore.
pub fn clear_route_cache() {
    let _ = call_foreign_function("clear_route_cache", &[]);
}

/// Turns a stat-name fragment from configuration into something every
/// stats sink accepts: anything but `[A-Za-z0-9_-]` becomes `_`.
pub fn stat_fragment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
