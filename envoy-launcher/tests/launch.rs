//! The launcher against real Envoy (`make setup` installs it): ports picked
//! by Envoy, readiness, the log kept, a refused bootstrap answered with it.

use envoy_launcher::Launch;

/// A listener on port 0 answering every request itself, and the admin
/// interface on port 0, as every caller's bootstrap has them.
fn direct_response(body: &str) -> String {
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "l",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "t",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": body}}
                    }]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    }}]
                }
            }]}]
        }]}
    })
    .to_string()
}

#[test]
fn envoy_answers_on_the_ports_it_picked() {
    let envoy = Launch::new()
        .start(&direct_response("hello"))
        .unwrap_or_else(|log| panic!("{log}"));
    assert_ne!(envoy.port, 0);
    assert_ne!(envoy.admin_port, envoy.port);
    let body = ureq::get(&envoy.url("/"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(body, "hello");
    let (status, _) = envoy.admin_get("/ready").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn two_envoys_at_once_do_not_collide() {
    let a = Launch::new().start(&direct_response("a")).unwrap();
    let b = Launch::new().start(&direct_response("b")).unwrap();
    assert_ne!(a.port, b.port);
    let get = |e: &envoy_launcher::Envoy| ureq::get(&e.url("/")).call().unwrap().into_string();
    assert_eq!(
        (get(&a).unwrap(), get(&b).unwrap()),
        ("a".into(), "b".into())
    );
}

#[test]
fn a_refused_bootstrap_is_answered_with_envoys_log() {
    let bad = direct_response("x").replace("\"stat_prefix\"", "\"no_such_field\"");
    let err = match Launch::new().start(&bad) {
        Ok(_) => panic!("Envoy accepted a bootstrap without stat_prefix"),
        Err(e) => e,
    };
    assert!(err.starts_with("Envoy exited with"), "{err}");
    assert!(err.contains("no_such_field"), "{err}");
}

#[test]
fn the_log_is_kept_from_a_mark() {
    let envoy = Launch::new()
        .component_log_level("admin:debug")
        .start(&direct_response("x"))
        .unwrap();
    let mark = envoy.log_len();
    envoy.admin_get("/server_info").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !envoy.logs_since(mark).contains("/server_info") {
        assert!(std::time::Instant::now() < deadline, "{}", envoy.logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(envoy.logs().len() >= envoy.logs_since(mark).len());
}
