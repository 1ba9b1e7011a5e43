//! The request headers of the stream being handled, read from the host once
//! per callback (one `get_header_map_pairs`) and shared by every policy of
//! the chain; writes go to the host and to this copy, so a later policy sees
//! what an earlier one wrote (the router's version header, auth's identity).
//!
//! Why: each single-header read is a host call and, when the header is
//! there, a second VM entry to allocate its value (measured in Envoy 1.40:
//! four single reads cost about 15k instructions more than one read of the
//! whole map). The copy is the host's own buffer indexed in place, so a
//! request costs two allocations however many headers it has (with a
//! `String` and a `Vec` per header, the router cost 222.6k instructions a
//! request; on this view, with the plain-path shortcut, 210.9k).
//! A removal of a header the request lacks is not sent at all.
//!
//! The copy lives for one host callback and one effective context:
//! [`crate::vm`] drops it when a callback ends and [`host::set_effective_context`]
//! when a root callback turns to another stream, so it never outlives what
//! the host would answer.

use crate::host::{self, Headers, Status};
use std::cell::{Cell, RefCell};
use switchyard_core::bytes::same;
use switchyard_core::RequestHeaders;

type Pairs = Vec<(String, Vec<u8>)>;

/// A header map in the ABI's encoding (a count, each pair's sizes, then
/// NUL-terminated names and values), each pair found in place.
pub struct View {
    buf: Vec<u8>,
    /// (name start, name end, value start, value end) per pair, in order.
    at: Vec<[u32; 4]>,
    /// A bit per [`name_bit`] of every name ever in the map: a lookup whose
    /// bit is clear is answered without a scan. Most lookups are of names a
    /// request lacks (client-sent identity, version, router controls), and
    /// the scans were the chain's largest cost inside the module.
    names: u64,
    /// The [`name_bit`]s of names added by [`set_last`] this callback,
    /// which this copy does not hold: such a name is never added twice.
    added_unseen: u64,
    /// Where the first `:path`'s value before any `?` is in `buf`, found
    /// at the first [`RequestHeaders::path`]: every policy matches on the
    /// path (four lookups and query scans a request in the chain). Found
    /// while indexing instead, it cost `router.wasm` more than it saved.
    path: Cell<KeptPath>,
}

#[derive(Clone, Copy)]
enum KeptPath {
    NotLooked,
    Absent,
    At(u32, u32),
}

const PATH: &[u8] = b":path";

/// One of 64 bits for a header name, from its length, last and middle
/// bytes. Names that policies look up share long prefixes and often a
/// length and last byte (`x-envoy-…-ms`): the middle byte tells most apart
/// (without it, five of the ten router controls timeouts strips shared a
/// bit with a header the benchmark's request carries). 128 bits cost more
/// in V8 than the scans they save.
#[inline]
fn name_bit(name: &[u8]) -> u64 {
    let last = u32::from(name.last().copied().unwrap_or(0));
    let middle = u32::from(name.get(name.len() / 2).copied().unwrap_or(0));
    let mixed = (name.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(last.wrapping_mul(7))
        .wrapping_add(middle.wrapping_mul(3));
    1u64 << (mixed & 63)
}

/// The [`name_bit`]s of `names` together: a request whose headers share
/// none of them has none of the names (see [`may_have_any`]).
pub(crate) fn name_bits<'n>(names: impl IntoIterator<Item = &'n str>) -> u64 {
    names
        .into_iter()
        .fold(0, |bits, n| bits | name_bit(n.as_bytes()))
}

impl View {
    /// Indexes `buf`; `None` when the host's encoding does not add up.
    fn parse(buf: Vec<u8>) -> Option<Self> {
        let word = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize)
        };
        let mut at = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        at.clear();
        if buf.is_empty() {
            return Some(Self {
                buf,
                at,
                names: 0,
                added_unseen: 0,
                path: Cell::new(KeptPath::NotLooked),
            });
        }
        let n = word(0)?;
        let mut next = 4usize.checked_add(n.checked_mul(8)?)?;
        // Room for the chain's own writes (identity, version, timeouts).
        at.reserve(n.min(256) + 8);
        let mut names = 0u64;
        for i in 0..n {
            let (k, v) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
            let name = next;
            let value = name.checked_add(k)?.checked_add(1)?;
            next = value.checked_add(v)?.checked_add(1)?;
            if next > buf.len() || u32::try_from(next).is_err() {
                return None;
            }
            at.push([name, name + k, value, value + v].map(|x| x as u32));
            names |= name_bit(buf.get(name..name + k)?);
        }
        Some(Self {
            buf,
            at,
            names,
            added_unseen: 0,
            path: Cell::new(KeptPath::NotLooked),
        })
    }

    #[inline]
    fn name(&self, e: &[u32; 4]) -> &[u8] {
        self.buf
            .get(e[0] as usize..e[1] as usize)
            .unwrap_or_default()
    }

    #[inline]
    fn value(&self, e: &[u32; 4]) -> &[u8] {
        self.buf
            .get(e[2] as usize..e[3] as usize)
            .unwrap_or_default()
    }

    /// Every (name, value), repeated headers included, in the request's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at.iter().map(|e| (self.name(e), self.value(e)))
    }

    /// True when pair `e` is named `name`. The length is compared first:
    /// most names differ in it, and every policy looks up several names
    /// that most requests lack (client-sent identity, version, shadow tags).
    #[inline]
    fn is(&self, e: &[u32; 4], name: &[u8]) -> bool {
        e[1].wrapping_sub(e[0]) as usize == name.len() && same(self.name(e), name)
    }

    /// Whether the request may have a header `name` (false: it has none).
    #[inline]
    fn may_have(&self, name: &[u8]) -> bool {
        self.names & name_bit(name) != 0
    }

    /// The first pair named `name`.
    fn find(&self, name: &str) -> Option<&[u32; 4]> {
        self.find_bytes(name.as_bytes())
    }

    fn find_bytes(&self, name: &[u8]) -> Option<&[u32; 4]> {
        if !self.may_have(name) {
            return None;
        }
        self.at.iter().find(|e| self.is(e, name))
    }

    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn remove(&mut self, name: &str) {
        if !self.contains(name) {
            return;
        }
        let buf = &self.buf;
        self.at.retain(|e| {
            e[1].wrapping_sub(e[0]) as usize != name.len()
                || buf.get(e[0] as usize..e[1] as usize) != Some(name.as_bytes())
        });
        if name.as_bytes() == PATH {
            self.path.set(KeptPath::NotLooked);
        }
    }

    /// Replaces every value of `name` (the bytes are appended to the buffer);
    /// `absent`: the caller knows the copy has none to remove.
    fn replace(&mut self, name: &str, value: &[u8], absent: bool) {
        if !absent {
            self.remove(name);
        }
        let start = self.buf.len();
        let (name_end, value_start) = (start + name.len(), start + name.len() + 1);
        let end = value_start + value.len();
        let Ok(end32) = u32::try_from(end) else {
            return; // Past 4 GiB: the copy stays without it, the host has it.
        };
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(value);
        self.buf.push(0);
        self.names |= name_bit(name.as_bytes());
        self.at
            .push([start as u32, name_end as u32, value_start as u32, end32]);
        if name.as_bytes() == PATH {
            self.path.set(KeptPath::NotLooked);
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let at = std::mem::take(&mut self.at);
        // Kept only while small: a hostile request's index is let go.
        if at.capacity() <= 256 {
            SPARE.with(|s| *s.borrow_mut() = at);
        }
    }
}

thread_local! {
    /// The pair index of the last view, kept for the next: one allocation
    /// fewer per request.
    static SPARE: RefCell<Vec<[u32; 4]>> = const { RefCell::new(Vec::new()) };
}

impl RequestHeaders for View {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.find(name).map(|e| self.value(e))
    }

    fn each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        if !self.may_have(name.as_bytes()) {
            return;
        }
        for e in self.at.iter().filter(|e| self.is(e, name.as_bytes())) {
            f(self.value(e));
        }
    }

    fn path(&self) -> Option<&[u8]> {
        let (start, end) = match self.path.get() {
            KeptPath::At(start, end) => (start, end),
            KeptPath::Absent => return None,
            KeptPath::NotLooked => {
                let Some(e) = self.find_bytes(PATH) else {
                    self.path.set(KeptPath::Absent);
                    return None;
                };
                let value = self.value(e);
                let len = switchyard_core::matcher::path_without_query(value).len() as u32;
                self.path.set(KeptPath::At(e[2], e[2] + len));
                (e[2], e[2] + len)
            }
        };
        self.buf.get(start as usize..end as usize)
    }
}

thread_local! {
    static COPY: RefCell<Option<View>> = const { RefCell::new(None) };
}

/// Runs `read` over the request's headers, reading them from the host first
/// if this callback has not; `Err` if the host refused the map.
pub fn with_headers<T>(read: impl FnOnce(&View) -> T) -> Result<T, Status> {
    COPY.with(|copy| {
        let mut copy = copy.borrow_mut();
        if copy.is_none() {
            let raw = host::header_map_bytes(Headers::Request)?;
            *copy = Some(View::parse(raw).ok_or(Status(2))?);
        }
        copy.as_ref().map(read).ok_or(Status(2))
    })
}

/// The first value of `name` (lower case); `Ok(None)` when absent.
pub fn header(name: &str) -> Result<Option<Vec<u8>>, Status> {
    with_headers(|h| h.header(name).map(<[u8]>::to_vec))
        .or_else(|_| host::header(Headers::Request, name))
}

/// Every (name, value) of the request, repeated headers included.
pub fn pairs() -> Result<Pairs, Status> {
    with_headers(|h| {
        h.iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
            .collect()
    })
}

/// Every value of each header in `names`, in the request's order.
pub fn values_of(names: &[String]) -> Result<Pairs, Status> {
    with_headers(|h| {
        h.iter()
            .filter_map(|(k, v)| {
                let name = names.iter().find(|n| n.as_bytes() == k)?;
                Some((name.clone(), v.to_vec()))
            })
            .collect()
    })
}

/// Whether the request may have any of the names whose [`name_bits`] are
/// `bits` (false: it has none of them; true also when the map was refused).
pub fn may_have_any(bits: u64) -> bool {
    with_headers(|h| h.names & bits != 0).unwrap_or(true)
}

/// Replaces every value of `name` with `value` (adding it when absent).
pub fn set(name: &str, value: &[u8]) -> Result<(), Status> {
    let add = absent(name);
    write(name, value, add)?;
    COPY.with(|copy| {
        if let Some(view) = copy.borrow_mut().as_mut() {
            view.replace(name, value, add);
        }
    });
    Ok(())
}

/// [`set`] for a policy's last look at the request in this callback: the
/// copy takes the write only if a later policy of the chain will read it
/// (the chain says which, [`read_after`]). A write kept in the copy cost
/// about 0.2k instructions in Envoy's V8 (`make bench`), and a single
/// filter's copy is dropped unread when its callback ends.
pub fn set_last(name: &str, value: &[u8]) -> Result<(), Status> {
    if READ_AFTER.with(Cell::get) {
        return set(name, value);
    }
    let add = absent(name);
    write(name, value, add)?;
    if add {
        COPY.with(|copy| {
            if let Some(view) = copy.borrow_mut().as_mut() {
                view.added_unseen |= name_bit(name.as_bytes());
            }
        });
    }
    Ok(())
}

/// True only when the request surely has no header `name`: this callback
/// read the map and nothing since wrote the name; otherwise it is replaced.
/// Every name written is lower case, as the map's are (a configuration's,
/// refused otherwise by `switchyard_core::config::header_name`, or a
/// constant): Envoy lower-cases a name it is sent, so an `X-A` added
/// beside a client's `x-a` would make two. Not checked here: a byte loop
/// over the names cost the chain 0.6k instructions a request, a word-wise
/// one 0.3k (`make bench`).
fn absent(name: &str) -> bool {
    COPY.with(|copy| {
        copy.borrow().as_ref().is_some_and(|view| {
            view.added_unseen & name_bit(name.as_bytes()) == 0 && !view.contains(name)
        })
    })
}

/// An absent header is added (`proxy_add_header_map_value`): Envoy's
/// replace first searches the map to remove the name, about 0.28k
/// instructions a write (`make bench`, floor modules).
fn write(name: &str, value: &[u8], absent: bool) -> Result<(), Status> {
    if absent {
        host::add_header(Headers::Request, name, value)
    } else {
        host::set_header(Headers::Request, name, value)
    }
}

/// Whether a policy after the running one reads the request in this
/// callback: the chain sets it before each policy; any other callback
/// (a resumption, a root's) keeps the safe default, true.
pub(crate) fn read_after(later: bool) {
    READ_AFTER.with(|r| r.set(later));
}

thread_local! {
    static READ_AFTER: Cell<bool> = const { Cell::new(true) };
}

/// Removes every value of `name`; no host call when the request has none.
pub fn remove(name: &str) -> Result<(), Status> {
    if !with_headers(|h| h.contains(name)).unwrap_or(true) {
        return Ok(());
    }
    host::remove_header(Headers::Request, name)?;
    COPY.with(|copy| {
        if let Some(view) = copy.borrow_mut().as_mut() {
            view.remove(name);
        }
    });
    Ok(())
}

/// Removes every value of each of `names`, with one look at the request:
/// a name the request cannot have (its bit clear) costs a mask test, and
/// only present names are sent to the host. Policies strip several
/// client-sent control headers from every request (identity, router
/// controls, shadow tags) that requests almost never carry. Returns
/// whether every removal the host was asked for succeeded.
pub fn remove_each<'n, I>(names: I) -> bool
where
    I: IntoIterator<Item = &'n str> + Clone,
{
    let present: Vec<&str> = match with_headers(|h| {
        names
            .clone()
            .into_iter()
            .filter(|n| h.may_have(n.as_bytes()) && h.contains(n))
            .collect()
    }) {
        Ok(present) => present,
        // The map was refused: the host removes each name, present or not.
        Err(_) => {
            let mut ok = true;
            for name in names {
                ok &= host::remove_header(Headers::Request, name).is_ok();
            }
            return ok;
        }
    };
    let mut ok = true;
    for name in present {
        ok &= host::remove_header(Headers::Request, name).is_ok();
        COPY.with(|copy| {
            if let Some(view) = copy.borrow_mut().as_mut() {
                view.remove(name);
            }
        });
    }
    ok
}

/// Drops the copy (and the callback's clock reading): the callback ended,
/// or the effective context changed.
pub fn forget() {
    COPY.with(|copy| copy.borrow_mut().take());
    read_after(true);
    host::forget_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::host::serialize_pairs as encode;

    #[test]
    fn a_view_finds_first_and_every_value_and_keeps_writes() {
        let raw = encode(&[
            (":path", b"/a"),
            ("x-api-key", b"one"),
            ("x-api-key", b"two\xff"),
        ]);
        let mut v = View::parse(raw).expect("valid encoding");
        assert_eq!(v.header("x-api-key"), Some(&b"one"[..]));
        let mut all = Vec::new();
        v.each_value("x-api-key", &mut |x| all.push(x.to_vec()));
        assert_eq!(all, vec![b"one".to_vec(), b"two\xff".to_vec()]);
        v.replace("x-api-key", b"three", false);
        v.replace("x-version", b"v2", true);
        let pairs: Vec<_> = v.iter().collect();
        assert_eq!(
            pairs,
            vec![
                (&b":path"[..], &b"/a"[..]),
                (&b"x-api-key"[..], &b"three"[..]),
                (&b"x-version"[..], &b"v2"[..])
            ]
        );
        v.remove(":path");
        assert_eq!(v.header(":path"), None);
        assert!(!v.contains(":path") && v.contains("x-version"));
    }

    #[test]
    fn the_kept_path_follows_every_write_of_it() {
        let raw = encode(&[
            (":authority", b"a"),
            (":path", b"/a/b?c=d?e"),
            (":path", b"/2"),
        ]);
        let mut v = View::parse(raw).expect("valid encoding");
        assert_eq!(v.path(), Some(&b"/a/b"[..]));
        v.replace(":path", b"/x", false);
        assert_eq!(v.path(), Some(&b"/x"[..]));
        v.replace("x-other", b"/y?", true);
        assert_eq!(v.path(), Some(&b"/x"[..]));
        v.replace(":path", b"?q", false);
        assert_eq!(v.path(), Some(&b""[..]));
        v.remove(":path");
        assert_eq!(v.path(), None);
        let none = View::parse(encode(&[(":method", b"GET")])).expect("valid encoding");
        assert_eq!(none.path(), None);
        // The trait's own reading agrees with the kept one.
        let plain = View::parse(encode(&[(":path", b"/p?q")])).expect("valid encoding");
        let by_header = plain
            .header(":path")
            .map(switchyard_core::matcher::path_without_query);
        assert_eq!(plain.path(), by_header);
    }

    #[test]
    fn the_name_mask_never_hides_a_header() {
        // Names of every length and last byte, many sharing a bit.
        let names: Vec<String> = (1..40)
            .flat_map(|n| ["a", "z", "-", "0"].map(|c| format!("{}{c}", "x".repeat(n))))
            .collect();
        let present: Vec<(&str, &[u8])> = names
            .iter()
            .step_by(3)
            .map(|n| (n.as_str(), &b"v"[..]))
            .collect();
        let mut v = View::parse(encode(&present)).expect("valid encoding");
        for n in &names {
            let there = present.iter().any(|(p, _)| p == n);
            assert_eq!(v.header(n).is_some(), there, "{n}");
            let mut count = 0;
            v.each_value(n, &mut |_| count += 1);
            assert_eq!(count, usize::from(there), "{n}");
        }
        v.replace("x-late-addition", b"1", false);
        assert_eq!(v.header("x-late-addition"), Some(&b"1"[..]));
        v.remove("x-late-addition");
        assert_eq!(v.header("x-late-addition"), None);
    }

    #[test]
    fn a_short_or_lying_encoding_is_refused_not_read_past() {
        let mut raw = encode(&[("a", b"b")]);
        raw.truncate(raw.len() - 1);
        assert!(View::parse(raw).is_none());
        let mut lying = encode(&[("a", b"b")]);
        lying[0] = 200; // 200 pairs claimed, one there
        assert!(View::parse(lying).is_none());
        assert!(View::parse(vec![1, 0]).is_none());
        assert_eq!(View::parse(Vec::new()).map(|v| v.at.len()), Some(0));
    }
}
