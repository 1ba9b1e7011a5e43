//! Switchyard's proxy-wasm adapter: maps host callbacks to the policy core.
//!
//! Host calls go through [`host`], which never panics (the SDK's wrappers
//! `panic!` on statuses they do not expect, and a panic traps the VM and
//! takes down every plugin sharing it); the host enters the module through
//! [`vm`], which exports only the callbacks a filter uses.

pub mod allocator;
pub mod auth;
pub mod chain;
pub(crate) mod claims;
pub(crate) mod counter_batch;
pub mod host;
pub(crate) mod path;
pub(crate) mod request;
pub mod router;
pub mod sections;
pub mod shadow;
pub mod stats;
pub(crate) mod streams;
pub mod timeouts;
pub mod vm;

/// Compiles a policy's configuration with `compile`, or logs one line
/// naming the problem (and the field) and returns `None`, so that
/// `on_configure` rejects the plugin.
pub(crate) fn configure<T>(
    filter: &str,
    required: &str,
    config: Option<&[u8]>,
    compile: impl FnOnce(&[u8]) -> Result<T, switchyard_core::ConfigError>,
) -> Option<T> {
    let error = match config {
        Some(bytes) if !bytes.is_empty() => match compile(bytes) {
            Ok(compiled) => return Some(compiled),
            Err(err) => err.to_string(),
        },
        _ => format!("missing ({required} required)"),
    };
    host::log(
        host::Level::Error,
        &format!("{filter}: invalid configuration: {error}"),
    );
    None
}

/// The request headers a policy's decisions read (first values, from the
/// chain's one read of the map); host refusals are counted.
pub(crate) fn fetch_request_headers(
    names: &[String],
    errors: host::Counter,
) -> switchyard_core::HeaderList {
    let mut headers = switchyard_core::HeaderList(Vec::with_capacity(names.len()));
    for name in names {
        match request::header(name) {
            Ok(Some(v)) => headers.0.push((name.clone(), v)),
            Ok(None) => {}
            Err(_) => errors.increment(),
        }
    }
    headers
}

/// As [`fetch_request_headers`], but every value of a repeated header: a
/// credential check must see them all, since the upstream does.
pub(crate) fn fetch_request_headers_repeated(
    names: &[String],
    errors: host::Counter,
) -> switchyard_core::HeaderList {
    match request::values_of(names) {
        Ok(pairs) => switchyard_core::HeaderList(pairs),
        Err(_) => {
            errors.increment();
            fetch_request_headers(names, errors)
        }
    }
}

/// Runs a policy's decision once over the request's headers (the chain's
/// shared read) and the verified claims, when `wants_claims`. If the host
/// refuses the map, the refusal is counted and the decision reads `names`
/// one by one instead.
pub(crate) fn decide_on_request<T>(
    names: &[String],
    wants_claims: bool,
    errors: host::Counter,
    mut decide: impl FnMut(&dyn switchyard_core::RequestHeaders) -> T,
) -> T {
    // Taken by whichever of the two calls below runs.
    let mut claims = verified_claims(wants_claims);
    let mut run = |headers: &dyn switchyard_core::RequestHeaders| {
        decide(&switchyard_core::WithClaims {
            headers,
            claims: claims.take(),
        })
    };
    request::with_headers(|h| run(h)).unwrap_or_else(|_| {
        errors.increment();
        run(&fetch_request_headers(names, errors))
    })
}

/// The claims the auth policy verified for this request, when `wanted`:
/// from this VM's auth section in memory, else the `switchyard.claims`
/// property an auth filter before this one wrote. A policy that matches on
/// claims reads them from here, whichever policy it is.
pub(crate) fn verified_claims(wanted: bool) -> Option<serde_json::Value> {
    if !wanted {
        return None;
    }
    if let Some(claims) = claims::of_current() {
        return Some(claims);
    }
    let written = host::property(switchyard_core::claims::CLAIMS_PROPERTY)
        .ok()
        .flatten();
    if written.is_none() && !claims::from_this_vm() {
        say_once_where_claims_come_from();
    }
    written.and_then(|bytes| switchyard_core::json::parse_strict(&bytes).ok())
}

/// A claim rule outside auth's VM sees claims only if auth was asked to
/// write them (`claims_property`, off by default): said once per VM, on the
/// first request that arrives without them, so a configuration that relies
/// on the old default does not fail silently.
fn say_once_where_claims_come_from() {
    thread_local! {
        static SAID: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if SAID.with(|s| s.replace(true)) {
        return;
    }
    host::log(
        host::Level::Info,
        "switchyard: a claim rule found no verified claims on a request; an auth filter \
         before this one writes them (property switchyard.claims) only with \
         \"claims_property\": true",
    );
}

thread_local! {
    static SPLIT_DRAW: std::cell::Cell<u64> = std::cell::Cell::new(fastrand::u64(..));
}

/// The next draw for a per-request (non-sticky) split: a golden-ratio Weyl
/// sequence from a random start per VM. Unlike independent random numbers,
/// it is equidistributed, so a 90/10 split holds within a request or two of
/// 90/10 over any window, not only on average.
pub(crate) fn next_split_draw() -> u64 {
    SPLIT_DRAW.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        next
    })
}
