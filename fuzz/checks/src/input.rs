//! Turns fuzzer bytes into requests, in a format simple enough to write
//! seeds in ([`encode`]). Header names are mostly ones the policies read (so
//! inputs reach decisions), sometimes arbitrary; values are arbitrary bytes,
//! often after a credential's or a path's usual prefix.
//!
//! Per header: a name byte (an index into [`NAMES`], or beyond it: an
//! arbitrary name follows as a length and bytes), a prefix byte (an index
//! into [`PREFIXES`]), then the value as a length and bytes. A length is one
//! byte, or 255 and two more (little-endian) for longer values.

use switchyard_core::HeaderList;

pub const NAMES: &[&str] = &[
    ":path",
    ":method",
    ":authority",
    "authorization",
    "x-api-key",
    "cookie",
    "end-user",
    "x-version",
    "x-canary",
    "grpc-timeout",
    "x-deadline-ms",
    "content-type",
    "x-request-id",
];

pub const PREFIXES: &[&[u8]] = &[
    b"",
    b"Bearer ",
    b"Basic ",
    b"/public/",
    b"/api/",
    b"/slow/",
    b"session=",
    b"application/grpc",
];

/// The most headers one input makes (Envoy's default limit is 100).
const MAX_HEADERS: usize = 128;

pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = match self.byte() {
            Some(255) => {
                let lo = self.byte().unwrap_or(0);
                let hi = self.byte().unwrap_or(0);
                usize::from(u16::from_le_bytes([lo, hi]))
            }
            Some(n) => usize::from(n),
            None => 0,
        };
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    pub fn headers(&mut self) -> HeaderList {
        let mut list = HeaderList::new();
        while let Some(pick) = self.byte() {
            if list.0.len() == MAX_HEADERS {
                break;
            }
            let name = match NAMES.get(usize::from(pick)) {
                Some(n) => (*n).to_owned(),
                None => String::from_utf8_lossy(self.bytes()).to_ascii_lowercase(),
            };
            let prefix = PREFIXES[usize::from(self.byte().unwrap_or(0)) % PREFIXES.len()];
            let mut value = prefix.to_vec();
            value.extend_from_slice(self.bytes());
            list.0.push((name, value));
        }
        list
    }
}

/// The input that [`Input::headers`] reads back as `headers` (no prefixes used).
pub fn encode(headers: &[(&str, &[u8])]) -> Vec<u8> {
    fn len_and(out: &mut Vec<u8>, b: &[u8]) {
        match u8::try_from(b.len()) {
            Ok(n) if n < 255 => out.push(n),
            _ => {
                out.push(255);
                let n = u16::try_from(b.len()).expect("values under 64 KiB");
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    for (name, value) in headers {
        match NAMES.iter().position(|n| n == name) {
            Some(i) => out.push(i as u8),
            None => {
                out.push(255);
                len_and(&mut out, name.as_bytes());
            }
        }
        out.push(0);
        len_and(&mut out, value);
    }
    out
}
