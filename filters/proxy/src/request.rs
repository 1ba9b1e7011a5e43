//! The request headers of the stream being handled, read from the host once
//! per callback (one `get_header_map_pairs`) and shared by every policy of
//! the chain; writes go to the host and to this copy, so a later policy sees
//! what an earlier one wrote (the router's version header, auth's identity).
//!
//! Why: each single-header read is a host call and, when the header is
//! there, a second VM entry to allocate its value (measured in Envoy 1.40:
//! four single reads cost about 15k instructions more than one read of the
//! whole map). A removal of a header the request lacks is not sent at all.
//!
//! The copy lives for one host callback and one effective context:
//! [`crate::vm`] drops it when a callback ends and [`host::set_effective_context`]
//! when a root callback turns to another stream, so it never outlives what
//! the host would answer.

use crate::host::{self, Headers, Status};
use std::cell::RefCell;

type Pairs = Vec<(String, Vec<u8>)>;

thread_local! {
    static COPY: RefCell<Option<Pairs>> = const { RefCell::new(None) };
}

/// Runs `read` over the copy, loading it first; `None` if the host refused the map.
fn with_copy<T>(read: impl FnOnce(&Pairs) -> T) -> Option<T> {
    COPY.with(|copy| {
        let mut copy = copy.borrow_mut();
        if copy.is_none() {
            *copy = Some(host::header_pairs(Headers::Request).ok()?);
        }
        copy.as_ref().map(read)
    })
}

/// The first value of `name` (lower case); `Ok(None)` when absent.
pub fn header(name: &str) -> Result<Option<Vec<u8>>, Status> {
    with_copy(|pairs| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .map_or_else(|| host::header(Headers::Request, name), Ok)
}

/// Every (name, value) of the request, repeated headers included.
pub fn pairs() -> Result<Pairs, Status> {
    with_copy(Pairs::clone).map_or_else(|| host::header_pairs(Headers::Request), Ok)
}

/// Every value of each header in `names`, in the request's order.
pub fn values_of(names: &[String]) -> Result<Pairs, Status> {
    let pick = |pairs: &Pairs| -> Pairs {
        pairs
            .iter()
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .cloned()
            .collect()
    };
    with_copy(pick).ok_or(Status(2))
}

/// Replaces every value of `name` with `value` (adding it when absent).
pub fn set(name: &str, value: &[u8]) -> Result<(), Status> {
    host::set_header(Headers::Request, name, value)?;
    COPY.with(|copy| {
        if let Some(pairs) = copy.borrow_mut().as_mut() {
            pairs.retain(|(k, _)| k != name);
            pairs.push((name.to_owned(), value.to_vec()));
        }
    });
    Ok(())
}

/// Removes every value of `name`; no host call when the request has none.
pub fn remove(name: &str) -> Result<(), Status> {
    let present = with_copy(|pairs| pairs.iter().any(|(k, _)| k == name)).unwrap_or(true);
    if !present {
        return Ok(());
    }
    host::remove_header(Headers::Request, name)?;
    COPY.with(|copy| {
        if let Some(pairs) = copy.borrow_mut().as_mut() {
            pairs.retain(|(k, _)| k != name);
        }
    });
    Ok(())
}

/// Drops the copy: the callback ended, or the effective context changed.
pub fn forget() {
    COPY.with(|copy| copy.borrow_mut().take());
}
