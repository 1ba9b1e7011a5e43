//! One direction of a stream (request or response) as Envoy's filter
//! manager moves it through the chain: headers filter by filter, then each
//! body chunk through every filter that has let the headers pass, then
//! trailers.
//!
//! What a filter's answer does, as in Envoy's proxy-wasm host:
//! - Pause from a headers callback is `StopAllIterationAndWatermark`: this
//!   filter and the ones after it see no data until it resumes; chunks that
//!   arrive meanwhile wait at it and reach it as one buffer.
//! - Pause from a body callback is `StopIterationAndBuffer`: the chunk stays
//!   with the filter, whose next body callback sees everything buffered so
//!   far; at the end of the stream it waits for a resume.
//! - Continue passes the filter's whole buffer on as one chunk.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Headers,
    Body,
    Trailers,
}

/// What waits at a filter that has not let the headers pass yet.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub data: Vec<u8>,
    pub end_of_stream: bool,
    pub trailers: bool,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && !self.end_of_stream && !self.trailers
    }
}

#[derive(Debug)]
pub(crate) struct Flow {
    /// Filter indices in the order this direction visits them.
    pub order: Vec<usize>,
    /// The first position whose headers callback has not returned Continue.
    pub headers_next: usize,
    /// Whether the headers end the stream (no body, no trailers).
    pub headers_end_stream: bool,
    /// Chunks from the client (or upstream) not yet delivered.
    pub source: VecDeque<Vec<u8>>,
    pub source_trailers: bool,
    /// Where the stream waits for a resume, and in which callback.
    pub paused: Option<(usize, Stage)>,
    /// Per position: data the filter kept (`StopIterationAndBuffer`).
    pub buffered: Vec<Vec<u8>>,
    /// Per position: what arrived while the filter held the headers.
    pub held: Vec<Held>,
    /// What passed the last filter.
    pub out: Vec<u8>,
    pub complete: bool,
}

impl Flow {
    pub fn new(order: Vec<usize>, chunks: Vec<Vec<u8>>, trailers: bool) -> Self {
        let n = order.len();
        Self {
            headers_end_stream: chunks.is_empty() && !trailers,
            order,
            headers_next: 0,
            source: chunks.into(),
            source_trailers: trailers,
            paused: None,
            buffered: vec![Vec::new(); n],
            held: (0..n).map(|_| Held::default()).collect(),
            out: Vec::new(),
            complete: false,
        }
    }

    /// Positions from here on see nothing yet: their headers are held, or
    /// the stream waits there.
    pub fn gate(&self) -> usize {
        let paused = self.paused.map_or(usize::MAX, |(p, _)| p);
        self.headers_next.min(paused)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The body callbacks an HTTP/1.1 body arrives in: one per chunk (one
    /// for a body sent whole), then an empty end-of-stream one, as Envoy's
    /// HTTP/1 codec ends every message with an empty data frame. No body:
    /// the headers end the stream. Trailers end it instead of that frame,
    /// and so does HTTP/2's last DATA frame (`empty_end` false).
    pub fn arrivals(body: &[u8], chunk_sizes: &[usize], empty_end: bool) -> Vec<Vec<u8>> {
        let mut chunks = Self::chunks(body, chunk_sizes);
        if !chunks.is_empty() && empty_end {
            chunks.push(Vec::new());
        }
        chunks
    }

    /// Splits `body` at the given chunk sizes (the rest is one last chunk).
    pub fn chunks(body: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = body;
        for &size in sizes {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            out.push(chunk.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            out.push(rest.to_vec());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_sizes_and_keep_every_byte() {
        assert_eq!(
            Flow::chunks(b"abcdef", &[2, 3]),
            vec![b"ab".to_vec(), b"cde".to_vec(), b"f".to_vec()]
        );
        assert_eq!(Flow::chunks(b"abc", &[]), vec![b"abc".to_vec()]);
        assert_eq!(Flow::chunks(b"ab", &[5, 1]), vec![b"ab".to_vec()]);
        assert!(Flow::chunks(b"", &[1]).is_empty());
        assert_eq!(
            Flow::arrivals(b"ab", &[], true),
            vec![b"ab".to_vec(), Vec::new()]
        );
        assert!(Flow::arrivals(b"", &[], true).is_empty());
        assert_eq!(
            Flow::arrivals(b"ab", &[1, 1], true),
            vec![b"a".to_vec(), b"b".to_vec(), Vec::new()]
        );
        assert_eq!(
            Flow::arrivals(b"ab", &[1, 1], false),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
    }

    #[test]
    fn the_gate_is_the_first_filter_holding_headers_or_the_stream() {
        let mut f = Flow::new(vec![0, 1, 2], vec![b"x".to_vec()], false);
        assert_eq!(f.gate(), 0);
        assert!(!f.headers_end_stream);
        f.headers_next = 2;
        assert_eq!(f.gate(), 2);
        f.paused = Some((1, Stage::Body));
        assert_eq!(f.gate(), 1);
    }
}
