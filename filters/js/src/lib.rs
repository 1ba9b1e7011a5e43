//! `@switchyard/policy`: the policy core for JavaScript hosts.
//!
//! The wasm-bindgen surface is deliberately narrow: JSON text in, JSON
//! text out (`{"ok": …}` or `{"error": …}`), so no input can throw from
//! inside the module or leave it half-updated; the JavaScript wrapper
//! (`js/index.js`) parses the answer and throws typed errors. The decisions
//! themselves are the core's, sequenced as the Envoy filter sequences them
//! ([`engine`], [`authorize`]).

pub mod authorize;
pub mod compare;
pub mod decision;
pub mod engine;
pub mod request;

use serde::Serialize;
use std::cell::RefCell;
use wasm_bindgen::prelude::*;

/// Every failure the package reports: `kind` is `config`, `request`,
/// `options` or `state`; `field` names where (a configuration path such as
/// `routes[0].split`, a request key such as `headers.x-user`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Error {
    pub kind: &'static str,
    /// The chain section a configuration error is in (`router`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    pub field: String,
    pub message: String,
}

impl Error {
    pub fn config(
        section: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: "config",
            section: section.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: "request",
            section: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn options(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: "options",
            section: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn state(message: impl Into<String>) -> Self {
        Self {
            kind: "state",
            section: None,
            field: String::new(),
            message: message.into(),
        }
    }
}

/// `{"ok": value}` or `{"error": error}`.
fn answer<T: Serialize>(result: Result<T, Error>) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    enum Answer<T> {
        Ok(T),
        Error(Error),
    }
    let a = match result {
        Ok(v) => Answer::Ok(v),
        Err(e) => Answer::Error(e),
    };
    serde_json::to_string(&a).unwrap_or_else(|e| {
        format!(
            r#"{{"error":{{"kind":"state","field":"","message":"unserialisable answer: {e}"}}}}"#
        )
    })
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    from_json_under(text, what).map_err(|e| Error::options(e.field, e.message))
}

/// Parses `text` as the core parses configuration, the field named under
/// `prefix` (`options.nowMs`; `prefix` alone for the whole value).
pub(crate) fn from_json_under<T: serde::de::DeserializeOwned>(
    text: &str,
    prefix: &str,
) -> Result<T, switchyard_core::ConfigError> {
    switchyard_core::config::from_json(text.as_bytes()).map_err(|mut e| {
        e.field = match (prefix.is_empty(), e.field.is_empty()) {
            (true, _) => e.field,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", e.field),
        };
        e
    })
}

/// A compiled configuration. Reuse one across requests; `free()` it when done.
#[wasm_bindgen]
pub struct WasmEngine {
    engine: engine::Engine,
    auth: RefCell<Option<authorize::AuthState>>,
}

#[wasm_bindgen]
impl WasmEngine {
    /// Compiles a configuration; `policy` is `None` for the chain's sections.
    /// Throws the error's JSON text, which the wrapper turns into a `ConfigError`.
    pub fn compile(config: &str, policy: Option<String>, seed: f64) -> Result<WasmEngine, String> {
        let seed = if seed.is_finite() {
            seed.abs() as u64
        } else {
            0
        };
        match engine::Engine::compile(config.as_bytes(), policy.as_deref(), seed) {
            Ok(engine) => {
                let auth = engine.auth.as_ref().map(authorize::AuthState::new);
                Ok(WasmEngine {
                    engine,
                    auth: RefCell::new(auth),
                })
            }
            Err(e) => Err(answer::<()>(Err(e))),
        }
    }

    /// Every policy but auth (whose place verified `claims` take).
    pub fn decide(&self, request: &str, options: &str) -> String {
        answer((|| {
            let req = request::Request::from_json(request)?;
            let opts: engine::DecideOptions = parse(options, "options")?;
            self.engine.decide(&req, &opts)
        })())
    }

    /// The router's version and rule only (`{version, rule}`, or `{status}`
    /// for a refused path); `random` is a draw in [0, 1), or NaN for none.
    pub fn route(&self, request: &str, random: f64) -> String {
        answer((|| {
            let req = request::Request::from_json(request)?;
            self.engine
                .route(&req, random.is_finite().then_some(random))
        })())
    }

    /// `route` on the compact form (see [`request::headers_from_flat`]):
    /// the index of the answer in [`WasmEngine::route_outcomes`], minus a
    /// refused path's status (`-400`), or `-1` for anything else, which the
    /// wrapper sends again as JSON to get its typed error.
    pub fn route_flat(&self, flat: &str, random: f64) -> i32 {
        let routed = request::headers_from_flat(flat).and_then(|h| {
            self.engine
                .route_headers(h, None, random.is_finite().then_some(random))
        });
        match routed {
            Ok(engine::Routed::Outcome(i)) => i32::try_from(i).unwrap_or(-1),
            Ok(engine::Routed::Refused { status }) => -i32::from(status),
            Err(_) => -1,
        }
    }

    /// `[[version, rule], …]`: what `route_flat`'s indexes stand for.
    pub fn route_outcomes(&self) -> String {
        let pairs: Vec<[&str; 2]> = self
            .engine
            .route_outcomes()
            .iter()
            .map(|o| [o.version.as_str(), o.rule.as_str()])
            .collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
    }

    /// Starts `authorize`: `{state: "done", decision}` or what to fetch.
    pub fn authorize_begin(&self, request: &str, options: &str) -> String {
        answer((|| {
            let req = request::Request::from_json(request)?;
            let opts: engine::DecideOptions = parse(options, "options")?;
            let mut auth = self
                .auth
                .try_borrow_mut()
                .map_err(|_| Error::state("engine busy"))?;
            match auth.as_mut() {
                Some(state) => self.engine.authorize_begin(state, &req, opts),
                None => {
                    let mut none = authorize::AuthState::empty();
                    self.engine.authorize_begin(&mut none, &req, opts)
                }
            }
        })())
    }

    /// Resumes a waiting `authorize` with what the host fetched.
    pub fn authorize_resume(&self, id: u32, answer_json: &str) -> String {
        answer((|| {
            let a: authorize::Answer = parse(answer_json, "answer")?;
            let mut auth = self
                .auth
                .try_borrow_mut()
                .map_err(|_| Error::state("engine busy"))?;
            let state = auth
                .as_mut()
                .ok_or_else(|| Error::state("this engine has no auth section"))?;
            self.engine.authorize_resume(state, id, a)
        })())
    }

    /// Loads provider `provider`'s key set from a JWKS response (`status`
    /// negative when the fetch failed). `{"ok": skipped}` or the failure.
    pub fn provide_keys(&self, provider: u32, status: i32, body: &[u8], now_ms: f64) -> String {
        answer((|| {
            let mut auth = self
                .auth
                .try_borrow_mut()
                .map_err(|_| Error::state("engine busy"))?;
            let (Some(state), Some(a)) = (auth.as_mut(), self.engine.auth.as_ref()) else {
                return Err(Error::state("this engine has no auth section"));
            };
            let status = u16::try_from(status).ok();
            state
                .provide_keys(a, provider as usize, status, body, now_ms.max(0.0) as u64)
                .map_err(|why| Error::state(format!("key set not loaded: {why}")))
        })())
    }
}

/// Validates a configuration without keeping it: `{ok, errors}`.
#[wasm_bindgen]
pub fn check(config: &str, policy: Option<String>) -> String {
    #[derive(Serialize)]
    struct Checked {
        ok: bool,
        errors: Vec<Error>,
    }
    let errors = match engine::Engine::compile(config.as_bytes(), policy.as_deref(), 0) {
        Ok(_) => Vec::new(),
        Err(e) => vec![e],
    };
    answer(Ok(Checked {
        ok: errors.is_empty(),
        errors,
    }))
}

/// The shadow comparison the filter makes, between two captured responses.
#[wasm_bindgen]
pub fn diff_responses(primary: &str, shadow: &str, options: &str) -> String {
    answer(compare::diff(primary, shadow, options))
}

/// The package's version, carried in playground share links.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
