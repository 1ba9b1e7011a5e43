//! The cases `make bench` measures, shared by the instruction count
//! (callgrind, the primary figure) and the wrk load run, both in
//! `tests/src/bin/bench.rs`:
//! the same route table with no filter, the floor modules, each Switchyard
//! filter, `switchyard.wasm` with all four sections, and the filters a user
//! would pick instead (a Lua router, Envoy's `jwt_authn`, both together).

use crate::tokens::{self, mint};
use crate::{paths, Bootstrap};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A benchmark case: its filters (before Envoy's router) and its requests.
pub struct Case {
    pub name: &'static str,
    pub what: &'static str,
    pub filters: Vec<Value>,
    pub load: Load,
    /// The case whose cost this one's is counted over (same request, no filter).
    pub baseline: &'static str,
}

pub enum Load {
    /// The same request every time, with these headers.
    Fixed(Vec<(String, String)>),
    /// A different bearer token on each request, from this pool.
    Tokens(Vec<String>),
}

/// The path every case requests: no shadow or timeout rule names it except the defaults.
pub const PATH: &str = "/productpage";

/// A Wasm filter from a module file, its configuration as a JSON string.
pub fn wasm_filter(name: &str, module: PathBuf, config: Value) -> Value {
    json!({
        "name": format!("switchyard.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name, "root_id": name, "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.to_string_lossy()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
}

fn wasm(name: &str, config: Value) -> Value {
    wasm_filter(name, paths::wasm(name), config)
}

/// A floor module from `bench/floor/<name>.wat`, compiled to
/// `target/bench-floor/<name>.wasm`.
pub fn floor_module(name: &str) -> PathBuf {
    let source = paths::project_root().join(format!("bench/floor/{name}.wat"));
    let binary = wat::parse_file(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let out = paths::project_root().join("target/bench-floor");
    std::fs::create_dir_all(&out).expect("target/bench-floor");
    let path = out.join(format!("{name}.wasm"));
    std::fs::write(&path, binary).expect("write floor module");
    path
}

/// The router's lab decision as a Lua user writes it: the override header,
/// `end-user: jason` → v2, a sticky 90/10 canary on `x-user-id`; the version
/// header written, the route cache cleared, and the served version set on
/// the response from dynamic metadata.
pub fn lua_router() -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": r#"
local allowed = {v1 = true, v2 = true}
local function bucket(s)
  local h = 5381
  for i = 1, #s do h = (h * 33 + s:byte(i)) % 4294967296 end
  return h % 100
end
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local version = headers:get("x-version-override")
  if not (version and allowed[version]) then
    if headers:get("end-user") == "jason" then
      version = "v2"
    else
      local user = headers:get("x-user-id")
      if user and bucket(user) < 10 then version = "v2" else version = "v1" end
    end
  end
  headers:replace("x-version", version)
  request_handle:clearRouteCache()
  request_handle:streamInfo():dynamicMetadata():set("switchyard", "version", version)
end
function envoy_on_response(response_handle)
  local md = response_handle:streamInfo():dynamicMetadata():get("switchyard")
  if md then response_handle:headers():replace("x-served-version", md["version"]) end
end
"#}
        }
    })
}

pub fn jwt_authn(cache: bool) -> Value {
    let mut provider = json!({
        "issuer": tokens::ISSUER,
        "audiences": [tokens::AUDIENCE],
        "local_jwks": {"inline_string": tokens::jwks().to_string()},
        "forward": true,
        "claim_to_headers": [{"header_name": "end-user", "claim_name": "sub"}]
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1000});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"corp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}]
        }
    })
}

/// The lab's router: jason → v2, a header override, a sticky 90/10 canary,
/// the served version on the response (its default).
pub fn router_config() -> Value {
    json!({"default_version": "v1", "routes": [
        {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
        {"name": "canary", "match": {"path": {"prefix": "/"}},
         "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
         "sticky": {"header": "x-user-id"}}],
        "override": {"header": "x-version-override", "allow": ["v1", "v2"]}})
}

/// Auth with the test keys inline (no key-set fetch), the identity from `sub`.
pub fn auth_config(cache_entries: usize) -> Value {
    json!({
        "providers": [{"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE],
            "jwks": tokens::jwks(), "from": [{"header": "authorization", "prefix": "Bearer "}]}}],
        "rules": [{"match": {}, "require": ["corp"]}],
        "identity": {"header": "end-user", "from_claim": "sub"},
        "cache_entries": cache_entries
    })
}

/// The default budget is a minute, not the lab's 3 s: under callgrind the
/// first requests take seconds, and a 504 is not the job being measured.
pub fn timeouts_config() -> Value {
    json!({
        "rules": [{"name": "reviews-v2", "match": {"headers": {"x-version": {"exact": "v2"}}, "path": {"prefix": "/reviews"}},
                   "timeout_ms": 500, "retries": {"attempts": 2, "on": ["5xx", "reset"]}},
                  {"name": "default", "match": {}, "timeout_ms": 60000}],
        "deadline": {"inbound": ["grpc-timeout", "x-request-timeout-ms"], "propagate": "x-request-timeout-ms"},
        "faults": [{"name": "ratings-delay", "match": {"path": {"prefix": "/ratings"}}, "delay": {"fixed_ms": 2000, "percent": 100}}]
    })
}

/// Shadowing /reviews only: the load (/productpage) pays the decision, not a copy.
pub fn shadow_config() -> Value {
    json!({
        "rules": [{"name": "reviews-compare", "match": {"path": {"prefix": "/reviews"}}, "percent": 100.0,
                   "target_cluster": "v2", "mode": "compare"}],
        "compare": {"timeout_ms": 2000}
    })
}

/// Every case, baselines first.
pub fn cases() -> Vec<Case> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Valid for the whole run: claims() gives ten minutes; stretch to a day.
    let claims = |sub: &str| {
        let mut c = tokens::claims(sub, now);
        c["exp"] = json!(now + 86_400);
        c
    };
    let rs256 = format!("Bearer {}", mint("RS256", &claims("jason")));
    let pool = |alg: &str| -> Vec<String> {
        (0..2000)
            .map(|i| mint(alg, &claims(&format!("user-{i}"))))
            .collect()
    };
    let fixed = |h: &[(&str, &str)]| {
        Load::Fixed(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let jason = || fixed(&[("end-user", "jason")]);
    let bearer = || fixed(&[("authorization", &rs256)]);
    let case = |name, what, filters, load, baseline| Case {
        name,
        what,
        filters,
        load,
        baseline,
    };
    vec![
        case("baseline", "route table only", vec![], jason(), "baseline"),
        case(
            "baseline_bearer",
            "route table only, the RS256 bearer token sent",
            vec![],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "floor_request",
            "floor: a module without SDK, one request-header read and write",
            vec![wasm_filter(
                "floor_request",
                floor_module("request"),
                json!({}),
            )],
            jason(),
            "baseline",
        ),
        case(
            "floor_response",
            "floor, and one response header set",
            vec![wasm_filter(
                "floor_response",
                floor_module("response"),
                json!({}),
            )],
            jason(),
            "baseline",
        ),
        case(
            "floor_every_callback",
            "floor's work, every stream callback exported (as the SDK does)",
            vec![wasm_filter(
                "floor_every_callback",
                floor_module("every_callback"),
                json!({}),
            )],
            jason(),
            "baseline",
        ),
        case(
            "floor_router_calls",
            "floor: router.wasm's host calls, no logic",
            vec![wasm_filter(
                "floor_router_calls",
                floor_module("router_calls"),
                json!({}),
            )],
            jason(),
            "baseline",
        ),
        case(
            "floor_timeouts_calls",
            "floor: timeouts.wasm's host calls, no logic",
            vec![wasm_filter(
                "floor_timeouts_calls",
                floor_module("timeouts_calls"),
                json!({}),
            )],
            jason(),
            "baseline",
        ),
        case(
            "floor_auth_calls",
            "floor: auth.wasm's host calls (cached token), no logic",
            vec![wasm_filter(
                "floor_auth_calls",
                floor_module("auth_calls"),
                json!({}),
            )],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "floor_chain_calls",
            "floor: switchyard.wasm's host calls (cached token), no logic",
            vec![wasm_filter(
                "floor_chain_calls",
                floor_module("chain_calls"),
                json!({}),
            )],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "router",
            "router.wasm, lab config: end-user: jason → v2",
            vec![wasm("router", router_config())],
            jason(),
            "baseline",
        ),
        case(
            "lua_router",
            "peer: the same decision in an Envoy Lua filter",
            vec![lua_router()],
            jason(),
            "baseline",
        ),
        case(
            "timeouts",
            "timeouts.wasm: rule match, budget and retry headers",
            vec![wasm("timeouts", timeouts_config())],
            jason(),
            "baseline",
        ),
        case(
            "shadow",
            "shadow.wasm: decision only (request not shadowed)",
            vec![wasm("shadow", shadow_config())],
            jason(),
            "baseline",
        ),
        case(
            "auth_rs256_cached",
            "auth.wasm: one RS256 token (verified once, then cached)",
            vec![wasm("auth", auth_config(1024))],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "jwt_authn_rs256_cached",
            "peer: Envoy jwt_authn, same token, jwt_cache_config on",
            vec![jwt_authn(true)],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "switchyard_chain",
            "switchyard.wasm: auth (RS256, cached) → router → timeouts → shadow",
            vec![wasm(
                "switchyard",
                json!({"auth": auth_config(1024), "router": router_config(),
                       "timeouts": timeouts_config(), "shadow": shadow_config()}),
            )],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "switchyard_chain_batched",
            "the same, counters sent every second (stats_flush_ms: 1000)",
            vec![wasm(
                "switchyard",
                json!({"auth": auth_config(1024), "router": router_config(),
                       "timeouts": timeouts_config(), "shadow": shadow_config(),
                       "stats_flush_ms": 1000}),
            )],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "native_chain",
            "peer: jwt_authn (cached) → the Lua router",
            vec![jwt_authn(true), lua_router()],
            bearer(),
            "baseline_bearer",
        ),
        case(
            "auth_rs256_uncached",
            "auth.wasm: 2,000 RS256 tokens in turn, cache of 16",
            vec![wasm("auth", auth_config(16))],
            Load::Tokens(pool("RS256")),
            "baseline_bearer",
        ),
        case(
            "jwt_authn_rs256_uncached",
            "peer: Envoy jwt_authn, same 2,000 tokens, no cache",
            vec![jwt_authn(false)],
            Load::Tokens(pool("RS256")),
            "baseline_bearer",
        ),
        case(
            "auth_hs256",
            "auth.wasm: 2,000 HS256 tokens in turn, cache of 16",
            vec![wasm("auth", auth_config(16))],
            Load::Tokens(pool("HS256")),
            "baseline_bearer",
        ),
        case(
            "jwt_authn_hs256",
            "peer: Envoy jwt_authn, same 2,000 HS256 tokens, no cache",
            vec![jwt_authn(false)],
            Load::Tokens(pool("HS256")),
            "baseline_bearer",
        ),
    ]
}

/// `router.yaml`'s route table (v1, v2 both on `port`) with `case`'s
/// filters before Envoy's router.
pub fn bootstrap(case: &Case, port: u16) -> Bootstrap {
    let mut b = Bootstrap::load(&paths::envoy_config("router.yaml"));
    b.set_cluster_port("v1", port).set_cluster_port("v2", port);
    let filters =
        b.0.pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("http_filters");
    let router = filters.pop().expect("Envoy's router is last");
    *filters = case.filters.clone();
    filters.push(router);
    b
}

/// Cases named in `--only a,b` (all when absent), baselines they count over kept.
pub fn selected(cases: Vec<Case>, args: &[String]) -> Vec<Case> {
    let Some(only) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
    else {
        return cases;
    };
    let wanted: Vec<&str> = cases
        .iter()
        .filter(|c| only.iter().any(|n| n == c.name))
        .flat_map(|c| [c.name, c.baseline])
        .collect();
    cases
        .into_iter()
        .filter(|c| wanted.contains(&c.name))
        .collect()
}

/// Where and when a run was made, for the results' first line.
pub fn machine() -> Value {
    use std::process::Command;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy = envoy_launcher::envoy_binary()
        .and_then(|bin| {
            Command::new(bin)
                .arg("--version")
                .output()
                .map_err(|e| e.to_string())
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(paths::project_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "kernel": kernel.trim(), "envoy": envoy,
           "date": date, "commit": commit})
}

pub mod callgrind;
pub mod wrk;
