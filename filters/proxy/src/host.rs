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
    /// A compare-and-swap lost: another VM wrote in between.
    pub const CAS_MISMATCH: Status = Status(8);
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const MAP_HTTP_RESPONSE_HEADERS: u32 = 2;
const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
const BUFFER_HTTP_RESPONSE_BODY: u32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;
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
    /// The response to a `dispatch_http_call`, inside its callback.
    HttpCallResponse,
}

impl Headers {
    fn map_type(self) -> u32 {
        match self {
            Headers::Request => MAP_HTTP_REQUEST_HEADERS,
            Headers::Response => MAP_HTTP_RESPONSE_HEADERS,
            Headers::HttpCallResponse => MAP_HTTP_CALL_RESPONSE_HEADERS,
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
    fn proxy_add_header_map_value(
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
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of host-written bytes.
///
/// # Safety
/// `data` is null, or was returned by this module's `proxy_on_memory_allocate`
/// (`crate::vm::allocate`) for exactly `size` bytes, which the host filled.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, crate::vm::returned_capacity(size))
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
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The plugin configuration bytes (`None` when the host has none).
pub fn plugin_configuration() -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe {
        proxy_get_buffer_bytes(
            BUFFER_PLUGIN_CONFIGURATION,
            0,
            usize::MAX,
            &mut data,
            &mut size,
        )
    } {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// The first value of header `name`; `Ok(None)` when absent.
pub fn header(map: Headers, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe {
        proxy_get_header_map_value(
            map.map_type(),
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    } {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// Replaces every value of `name` with `value` (adding it when absent).
pub fn set_header(map: Headers, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
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

/// Adds a value of `name`, beside any it has: for a name known absent.
pub fn add_header(map: Headers, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe {
        proxy_add_header_map_value(
            map.map_type(),
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: Headers, name: &str) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_remove_header_map_value(map.map_type(), name.as_ptr(), name.len()) })
}

/// A counter: sent to the host at each increment, or summed in the module
/// and sent at the chain's flush (see [`crate::counter_batch`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Sink);

#[derive(Debug, Clone, Copy, Default)]
enum Sink {
    /// The host refused to define it: increments are no-ops.
    #[default]
    Refused,
    /// The host's metric id.
    Host(u32),
    /// A slot of the module's batch.
    Batch(u32),
}

impl Counter {
    pub fn define(name: &str) -> Self {
        let mut id = 0u32;
        let code =
            // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
            unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
        if code == OK {
            Counter(match crate::counter_batch::slot_for(id) {
                Some(slot) => Sink::Batch(slot),
                None => Sink::Host(id),
            })
        } else {
            log(
                Level::Warn,
                &format!("switchyard: could not define metric {name}: status {code}"),
            );
            Counter(Sink::Refused)
        }
    }

    pub fn increment(self) {
        match self.0 {
            Sink::Refused => {}
            Sink::Host(id) => increment_metric(id, 1),
            Sink::Batch(slot) => crate::counter_batch::add(slot),
        }
    }
}

/// Adds `offset` to host metric `id`; a refusal is ignored (counting never
/// fails a request).
pub(crate) fn increment_metric(id: u32, offset: i64) {
    // SAFETY: a host import taking plain integers.
    let _ = unsafe { proxy_increment_metric(id, offset) };
}

/// Calls a host foreign function; `Err(Status::NOT_FOUND)` when the host lacks it.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let args_ptr = if args.is_empty() {
        null()
    } else {
        args.as_ptr()
    };
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
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
    // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
    let out = unsafe { owned(data, size) };
    status(code).map(|()| out)
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

/// Every (name, value) of a header map; `Ok(vec![])` when the map is empty.
pub fn header_pairs(map: Headers) -> Result<Vec<(String, Vec<u8>)>, Status> {
    Ok(deserialize_pairs(&header_map_bytes(map)?).unwrap_or_default())
}

/// The whole map as the host encodes it (see [`crate::request::View`]).
pub fn header_map_bytes(map: Headers) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_get_header_map_pairs(map.map_type(), &mut data, &mut size) })?;
    // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
    Ok(unsafe { owned(data, size) })
}

/// The ABI's map encoding: a count, (key, value) sizes, then NUL-terminated bytes.
fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let n = word(0)?;
    let mut at = 4 + n.checked_mul(8)?;
    let mut out = Vec::with_capacity(n.min(64));
    for i in 0..n {
        let (k, v) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(out)
}

pub(crate) fn serialize_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Sends an HTTP request to `cluster`; its answer comes to this context's
/// `on_http_call_response` with the token returned.
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u32, Status> {
    let headers = serialize_pairs(headers);
    let trailers = serialize_pairs(&[]);
    let mut token = 0u32;
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.map_or(null(), <[u8]>::as_ptr),
            body.map_or(0, <[u8]>::len),
            trailers.as_ptr(),
            trailers.len(),
            u32::try_from(timeout_ms).unwrap_or(u32::MAX),
            &mut token,
        )
    })
    .map(|()| token)
}

/// The body of the response to a `dispatch_http_call`, inside its callback.
pub fn http_call_response_body(size: usize) -> Vec<u8> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe {
        proxy_get_buffer_bytes(BUFFER_HTTP_CALL_RESPONSE_BODY, 0, size, &mut data, &mut len)
    } {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => unsafe { owned(data, len) },
        _ => Vec::new(),
    }
}

/// The current chunk of the response body (`size` bytes from a body
/// callback); empty if the host refuses.
pub fn response_body_chunk(size: usize) -> Vec<u8> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe { proxy_get_buffer_bytes(BUFFER_HTTP_RESPONSE_BODY, 0, size, &mut data, &mut len) }
    {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => unsafe { owned(data, len) },
        _ => Vec::new(),
    }
}

/// Host time in milliseconds since the Unix epoch (0 if the host refuses).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

thread_local! {
    /// The clock as first read in the current host callback.
    static NOW_NS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The host's clock (Unix time) in nanoseconds; 0 if unavailable.
///
/// Read from the host once per host callback and kept until it ends
/// ([`forget_now`]): every policy of a chain sees the same instant, and the
/// chain pays one host call where auth, the arrival stamp and timeouts each
/// paid their own (about 0.7k instructions apiece in Envoy).
pub fn now_ns() -> u64 {
    if let Some(ns) = NOW_NS.with(std::cell::Cell::get) {
        return ns;
    }
    let mut ns = 0u64;
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    let ns = match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
        OK => ns,
        _ => return 0,
    };
    NOW_NS.with(|c| c.set(Some(ns)));
    ns
}

/// The host callback ended: the next [`now_ns`] reads the clock again.
pub(crate) fn forget_now() {
    NOW_NS.with(|c| c.set(None));
}

pub fn set_tick_period_ms(period: u32) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Makes later host calls act on stream `context_id` (from a root callback).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    crate::request::forget();
    crate::claims::enter(context_id);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Resumes a request paused in its headers callback.
pub fn continue_request() -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

/// Answers the request locally (after the current callback returns).
pub fn send_local_response(
    status_code: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &[u8])],
) -> Result<(), Status> {
    send_local_response_grpc(status_code, details, body, headers, None)
}

/// As [`send_local_response`], with the gRPC status a gRPC caller gets
/// (`None`: Envoy maps the HTTP status).
pub fn send_local_response_grpc(
    status_code: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &[u8])],
    grpc_status: Option<u32>,
) -> Result<(), Status> {
    let headers = serialize_pairs(headers);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status.map_or(-1, |g| g as i32),
        )
    })
}

/// When the proxy received the current request (`request.time`, Unix ns).
pub fn request_start_ns() -> Option<u64> {
    let bytes = property("request\0time").ok()??;
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// A property by its one-segment name (`Ok(None)` when absent).
pub fn property(name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe { proxy_get_property(name.as_ptr(), name.len(), &mut data, &mut size) } {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// Sets a one-segment property: in Envoy, filter state `wasm.<name>` on the
/// stream, readable by later filters of the same request.
pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// A value every VM of this plugin's `vm_id` shares, with its
/// compare-and-swap token; `Ok(None)` when nobody has written it.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
        // SAFETY: after OK the host has written `size` bytes to memory it took from proxy_on_memory_allocate, and hands it over.
        OK => Ok(Some((unsafe { owned(data, size) }, cas))),
        NOT_FOUND => Ok(None),
        code => Err(Status(code)),
    }
}

/// Writes a shared value if it still has token `cas` (0: whatever it has).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: a host import; every pointer is to a live local or slice, valid for the call, written only through the out-pointers.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}
