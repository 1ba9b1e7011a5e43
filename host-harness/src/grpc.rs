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
        CallEnding::Answered(cluster) => answered(cluster, stream),
    }
}

/// The service answered: its messages and status.
fn answered(cluster: &Cluster, stream: bool) -> Vec<GrpcEvent> {
    let status = cluster.grpc_status;
    let detail = if cluster.grpc_message.is_empty() {
        "via_upstream".to_owned()
    } else {
        format!("{}{{via_upstream}}", cluster.grpc_message)
    };
    let close = GrpcEvent::Close { status, detail };
    if !stream {
        // A unary call gets its reply, or its status: never both.
        return vec![if status == 0 {
            GrpcEvent::Message(cluster.body.as_bytes().to_vec())
        } else {
            close
        }];
    }
    let mut initial = pairs([(":status", "200"), ("content-type", "application/grpc")]);
    for (k, v) in &cluster.headers {
        initial.add(&k.to_ascii_lowercase(), v.as_bytes());
    }
    initial.add("x-envoy-upstream-service-time", b"0");
    let mut events = vec![GrpcEvent::InitialMetadata(initial)];
    events.extend(
        cluster
            .chunks
            .iter()
            .map(|m| GrpcEvent::Message(m.as_bytes().to_vec())),
    );
    let status_text = status.to_string();
    let mut trailing = pairs([("grpc-status", status_text.as_str())]);
    if !cluster.grpc_message.is_empty() {
        trailing.add("grpc-message", cluster.grpc_message.as_bytes());
    }
    events.push(GrpcEvent::TrailingMetadata(trailing));
    events.push(close);
    events
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
