//! The Rust API for what a client's connection and body look like to a
//! filter: mTLS peers for `connection.*` properties, bodies in chunks,
//! trailers. (Their Envoy behaviour is pinned by
//! `scenarios/bodies_in_chunks.yaml`, `scenarios/trailers.yaml` and
//! `scenarios/http_call_answers.yaml`.)

mod common;
use common::built;
use switchyard_harness::{Cluster, Connection, Harness, Headers, Request, Tls};

#[test]
fn an_mtls_peer_is_what_connection_properties_report() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    let istio_peer = Connection {
        source: "10.8.0.7:41234".into(),
        destination: "10.8.0.2:8443".into(),
        tls: Some(Tls {
            sni: "shop.example.com".into(),
            peer_uri_san: Some("spiffe://cluster.local/ns/shop/sa/productpage".into()),
            ..Tls::default()
        }),
    };
    let ex = h.send(
        Request::get("/")
            .header("x-probe-mode", "connection")
            .connection(istio_peer),
    );
    assert_eq!(
        ex.response_header("x-probe").as_deref(),
        Some(
            "source=0:10.8.0.7 destination=0:10.8.0.2 source_port=0:8bytes destination_port=0:8bytes \
             connection_id=0:8bytes mtls=0:1bytes protocol=0:HTTP/1.1 tls_version=0:TLSv1.3 \
             sni=0:shop.example.com peer_san=0:spiffe://cluster.local/ns/shop/sa/productpage"
        )
    );
}

#[test]
fn each_chunk_is_a_body_callback_and_a_pausing_filter_sees_them_add_up() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    let ex = h.send(
        Request::new("POST", "/upload")
            .header("x-probe-body", "buffer")
            .body_chunks(["ab", "cd", "ef"]),
    );
    let bodies: Vec<&str> = ex
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.starts_with("request body"))
        .collect();
    assert_eq!(
        bodies,
        [
            "request body 2 end_of_stream=false seen=ab",
            "request body 4 end_of_stream=false seen=abcd",
            "request body 6 end_of_stream=false seen=abcdef",
            "request body 6 end_of_stream=true seen=abcdef",
        ]
    );
    assert_eq!(ex.upstream.unwrap().body, b"abcdef");
}

#[test]
fn a_body_rewritten_at_the_end_of_a_chunked_response_reaches_the_client_whole() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_body"), "").unwrap();
    h.upstream(Cluster::status(200).chunks(["top ", "sec", "ret"]));
    let ex = h.send(Request::get("/"));
    assert_eq!(
        ex.response.unwrap().body_str(),
        "Original message body (10 bytes) redacted.\n"
    );
}

#[test]
fn a_grpc_call_carries_its_method_and_metadata_and_can_be_answered_by_the_test() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    h.cluster("authz", Cluster::default())
        .manual_http_calls(true);
    let id = h.start(
        Request::get("/")
            .header("x-probe-mode", "grpc")
            .header("x-probe-cluster", "authz"),
    );
    let calls = h.pending_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.kind, switchyard_harness::CallKind::GrpcCall);
    assert_eq!(
        call.headers.get_str(":path").as_deref(),
        Some("/probe.Echo/Say")
    );
    assert_eq!(call.headers.get_str("x-probe-meta").as_deref(), Some("1"));
    assert_eq!(call.body, b"ping");
    assert!(!h.is_done(id), "the request waits for the call");

    h.answer_grpc_call(call.token, Err((16, "who are you".into())));
    let ex = h.exchange(id).unwrap();
    assert_eq!(
        ex.response_header("x-probe").as_deref(),
        Some("grpc_status=16 grpc_code=16")
    );
    assert!(ex.logged("grpc status message: who are you"));
}

/// The probe opening a gRPC stream to `chat` in `mode`; the test answers.
fn probe_streaming(mode: &str) -> (Harness, switchyard_harness::StreamId) {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    h.cluster("chat", Cluster::default())
        .manual_http_calls(true);
    let id = h.start(
        Request::get("/")
            .header("x-probe-mode", mode)
            .header("x-probe-cluster", "chat"),
    );
    (h, id)
}

#[test]
fn a_grpc_stream_is_answered_once_the_filter_ends_its_side() {
    use switchyard_harness::grpc::GrpcEvent;
    use switchyard_harness::Headers;
    let (mut h, id) = probe_streaming("grpc-stream");
    let call = h.pending_calls().remove(0);
    assert_eq!(call.kind, switchyard_harness::CallKind::GrpcStream);
    assert_eq!(call.token % 2, 0, "Envoy numbers streams even");
    assert_eq!(call.body, b"onetwo", "both messages sent");
    assert!(call.client_done_at_ms.is_some(), "the probe ended its side");

    h.answer_grpc_stream(
        call.token,
        vec![
            GrpcEvent::InitialMetadata(Headers::from_pairs([(":status", "200")])),
            GrpcEvent::Message(b"hi".to_vec()),
            GrpcEvent::Close {
                status: 0,
                detail: String::new(),
            },
        ],
    );
    let ex = h.exchange(id).unwrap();
    assert!(ex.completed);
    assert!(ex.logged("stream initial metadata: :status"));
    assert!(ex.logged("stream message: hi"));
    assert_eq!(
        ex.response_header("x-probe").as_deref(),
        Some("stream_token_even=true stream_status=0 stream_code=0")
    );
}

#[test]
fn a_test_can_reply_on_a_grpc_stream_while_the_filter_still_sends() {
    use switchyard_harness::grpc::GrpcEvent;
    let (mut h, id) = probe_streaming("grpc-bidi");
    let call = h.pending_calls().remove(0);
    assert_eq!(call.body, b"ping");
    assert!(
        call.client_done_at_ms.is_none(),
        "the probe waits for a reply"
    );

    h.reply_on_grpc_stream(call.token, vec![GrpcEvent::Message(b"hello".to_vec())]);
    let call = h.pending_calls().remove(0);
    assert_eq!(call.body, b"pingbye", "the probe answered the reply");
    assert!(call.client_done_at_ms.is_some(), "and ended its side");
    assert!(!h.is_done(id), "the stream is still open");

    h.answer_grpc_stream(
        call.token,
        vec![GrpcEvent::Close {
            status: 0,
            detail: String::new(),
        }],
    );
    let ex = h.exchange(id).unwrap();
    assert!(ex.completed);
    assert!(ex.logged("stream message: hello"));
    assert!(h.pending_calls().is_empty());
}

#[test]
fn a_stream_service_that_replies_at_open_sends_its_status_after_the_caller_ends() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    h.cluster(
        "chat",
        Cluster {
            grpc: true,
            reply_at_open: true,
            chunks: vec!["hello".into()],
            delay_ms: 30,
            ..Cluster::default()
        },
    );
    let ex = h.send(
        Request::get("/")
            .header("x-probe-mode", "grpc-bidi")
            .header("x-probe-cluster", "chat"),
    );
    assert!(ex.completed);
    assert!(ex.logged("stream message: hello"));
    assert_eq!(
        ex.response_header("x-probe").as_deref(),
        Some("stream_status=0 stream_code=0")
    );
    // The reply came after the service's delay; the status right after the probe's "bye".
    assert_eq!(ex.http_calls[0].body, b"pingbye");
    assert_eq!(ex.http_calls[0].client_done_at_ms, Some(30));
}

#[test]
fn trailers_end_each_direction_and_carry_what_the_filter_adds() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    h.upstream(Cluster::status(200).body("hello").trailer("x-sum", "5d41"));
    let ex = h.send(
        Request::new("POST", "/upload")
            .header("x-probe-body", "stream")
            .header("x-probe-trailers", "1")
            .body_chunks(["ab", "cd"])
            .trailers(Headers::from_pairs([("x-checksum", "e2fc")])),
    );
    let upstream = ex.upstream.as_ref().expect("reached the upstream");
    assert_eq!(upstream.body, b"abcd");
    assert_eq!(
        upstream.trailers.as_ref().map(|t| t.0.clone()),
        Some(vec![
            ("x-checksum".to_owned(), b"e2fc".to_vec()),
            ("x-probed".to_owned(), b"request".to_vec()),
        ])
    );
    let response = ex.response.as_ref().expect("answered");
    assert_eq!(
        response
            .trailers
            .as_ref()
            .and_then(|t| t.get_str("x-probed")),
        Some("response".to_owned())
    );
    assert_eq!(ex.response_header("trailer").as_deref(), Some("x-sum"));
    // Trailers end the stream: no body callback says end_of_stream.
    let callbacks: Vec<&str> = ex
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.contains(" body ") || m.contains("trailers:"))
        .collect();
    assert_eq!(
        callbacks,
        [
            "request body 2 end_of_stream=false seen=ab",
            "request body 2 end_of_stream=false seen=cd",
            "request trailers: x-checksum=e2fc",
            "response body 5 end_of_stream=false seen=hello",
            "response trailers: x-sum=5d41",
        ]
    );
}

#[test]
fn over_http2_the_last_chunk_ends_the_request() {
    let mut h = Harness::new();
    h.filter(built("abi_probe"), "").unwrap();
    let body_callbacks = |ex: &switchyard_harness::Exchange| -> Vec<String> {
        ex.logs
            .iter()
            .map(|l| l.message.clone())
            .filter(|m| m.starts_with("request body"))
            .collect()
    };
    let post = || {
        Request::new("POST", "/upload")
            .header("x-probe-body", "stream")
            .body_chunks(["ab", "cd"])
    };
    let h2 = h.send(post().http2());
    assert_eq!(
        body_callbacks(&h2),
        [
            "request body 2 end_of_stream=false seen=ab",
            "request body 2 end_of_stream=true seen=cd",
        ]
    );
    let h1 = h.send(post());
    assert_eq!(
        body_callbacks(&h1).last().map(String::as_str),
        Some("request body 0 end_of_stream=true seen="),
        "HTTP/1.1 ends with an empty callback"
    );
}
