//! How Envoy 1.40 ends a filter's gRPC call or stream, as the filter sees
//! it: the callbacks in order, each with what the host serves meanwhile.
//! Pinned against Envoy by `scenarios/grpc_calls.yaml`.

use crate::model::{Cluster, Headers};
use crate::world::{CallEnding, CallKind, HttpCall};

/// One callback of a gRPC exchange and what it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcEvent {
    /// `proxy_on_grpc_receive_initial_metadata` (streams only).
    InitialMetadata(Headers),
    /// `proxy_on_grpc_receive`: a message in the gRPC receive buffer.
    Message(Vec<u8>),
    /// `proxy_on_grpc_receive_trailing_metadata` (streams only).
    TrailingMetadata(Headers),
    /// `proxy_on_grpc_close`; the detail is what `proxy_get_status` gives.
    Close { status: u32, detail: String },
}

const UNAVAILABLE: u32 = 14;
const REFUSED: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
const REFUSED_DETAILS: &str = "{upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}}";
const RESET: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: remote reset";
const RESET_DETAILS: &str = "{upstream_reset_before_response_started{remote_reset}}";

fn pairs<'a>(list: impl IntoIterator<Item = (&'a str, &'a str)>) -> Headers {
    Headers(
        list.into_iter()
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect(),
    )
}

/// The callbacks that end `call` (a unary call or a stream the caller has
/// finished sending on), given how its cluster answers.
pub fn exchange(call: &HttpCall) -> Vec<GrpcEvent> {
    let stream = call.kind == CallKind::GrpcStream;
    // A failure is the router's local reply: UNAVAILABLE with its words,
    // trailers-only on a stream (empty initial metadata).
    let failure = |words: &str, details: &str| {
        let close = GrpcEvent::Close {
            status: UNAVAILABLE,
            detail: format!("{words}{details}"),
        };
        if !stream {
            return vec![close];
        }
        vec![
            GrpcEvent::InitialMetadata(Headers::new()),
            GrpcEvent::TrailingMetadata(pairs([
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-message", words),
            ])),
            close,
        ]
    };
    match call.ending() {
        CallEnding::Refused => failure(REFUSED, REFUSED_DETAILS),
        CallEnding::TimedOut => failure("upstream request timeout", "{response_timeout}"),
        CallEnding::Reset => failure(RESET, RESET_DETAILS),
        CallEnding::Answered(cluster) if !stream => vec![unary_answer(cluster)],
        CallEnding::Answered(cluster) if call.replied_at_open => closing(cluster).to_vec(),
        CallEnding::Answered(cluster) => {
            let mut events = opening(cluster, true);
            events.extend(closing(cluster));
            events
        }
    }
}

/// Whether `call` is a stream whose service replies before the caller
/// has finished sending, and has not yet.
pub fn replies_at_open(call: &HttpCall) -> bool {
    call.kind == CallKind::GrpcStream
        && !call.replied_at_open
        && matches!(call.ending(), CallEnding::Answered(c) if c.reply_at_open)
}

/// The service's status as `proxy_get_status` details it.
fn close(cluster: &Cluster) -> GrpcEvent {
    let detail = if cluster.grpc_message.is_empty() {
        "via_upstream".to_owned()
    } else {
        format!("{}{{via_upstream}}", cluster.grpc_message)
    };
    GrpcEvent::Close {
        status: cluster.grpc_status,
        detail,
    }
}

/// A unary call gets its reply, or its status: never both.
fn unary_answer(cluster: &Cluster) -> GrpcEvent {
    if cluster.grpc_status == 0 {
        GrpcEvent::Message(cluster.body.as_bytes().to_vec())
    } else {
        close(cluster)
    }
}

/// A stream's start as the service sends it: initial metadata, messages.
/// Envoy's router adds `x-envoy-upstream-service-time` only to a response
/// that starts after the caller finished sending.
pub fn opening(cluster: &Cluster, caller_done: bool) -> Vec<GrpcEvent> {
    let mut initial = pairs([(":status", "200"), ("content-type", "application/grpc")]);
    for (k, v) in &cluster.headers {
        initial.add(&k.to_ascii_lowercase(), v.as_bytes());
    }
    if caller_done {
        initial.add("x-envoy-upstream-service-time", b"0");
    }
    let mut events = vec![GrpcEvent::InitialMetadata(initial)];
    events.extend(
        cluster
            .chunks
            .iter()
            .map(|m| GrpcEvent::Message(m.as_bytes().to_vec())),
    );
    events
}

/// A stream's end: trailing metadata with the status, then close.
fn closing(cluster: &Cluster) -> [GrpcEvent; 2] {
    let status_text = cluster.grpc_status.to_string();
    let mut trailing = pairs([("grpc-status", status_text.as_str())]);
    if !cluster.grpc_message.is_empty() {
        trailing.add("grpc-message", cluster.grpc_message.as_bytes());
    }
    [GrpcEvent::TrailingMetadata(trailing), close(cluster)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: CallKind, cluster: Cluster) -> HttpCall {
        HttpCall {
            token: 1,
            vm: 0,
            root_context: 1,
            cluster: "c".into(),
            headers: Headers::new(),
            body: Vec::new(),
            timeout_ms: 0,
            dispatched_at_ms: 0,
            answered: false,
            kind,
            client_done_at_ms: Some(0),
            replied_at_open: false,
            answer: Some(cluster),
        }
    }

    #[test]
    fn a_unary_call_gets_its_reply_or_its_status_never_both() {
        let ok = Cluster::default().body("pong");
        assert_eq!(
            exchange(&call(CallKind::GrpcCall, ok)),
            [GrpcEvent::Message(b"pong".to_vec())]
        );
        let denied = Cluster {
            grpc_status: 7,
            grpc_message: "no".into(),
            ..Cluster::default()
        };
        assert_eq!(
            exchange(&call(CallKind::GrpcCall, denied)),
            [GrpcEvent::Close {
                status: 7,
                detail: "no{via_upstream}".into()
            }]
        );
    }

    #[test]
    fn a_stream_that_replied_at_open_ends_with_its_status_only() {
        let bidi = Cluster {
            reply_at_open: true,
            chunks: vec!["hello".into()],
            ..Cluster::default()
        };
        let mut stream = call(CallKind::GrpcStream, bidi.clone());
        assert!(replies_at_open(&stream));
        assert_eq!(
            opening(&bidi, false)[1..],
            [GrpcEvent::Message(b"hello".to_vec())]
        );
        stream.replied_at_open = true;
        assert!(!replies_at_open(&stream));
        let events = exchange(&stream);
        assert!(matches!(events[0], GrpcEvent::TrailingMetadata(_)));
        assert!(matches!(events[1], GrpcEvent::Close { status: 0, .. }));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_failed_stream_is_trailers_only_and_unavailable() {
        let events = exchange(&call(CallKind::GrpcStream, Cluster::refused()));
        assert_eq!(events[0], GrpcEvent::InitialMetadata(Headers::new()));
        let GrpcEvent::TrailingMetadata(t) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(t.get_str("grpc-status").as_deref(), Some("14"));
        assert!(matches!(events[2], GrpcEvent::Close { status: 14, .. }));
    }
}
