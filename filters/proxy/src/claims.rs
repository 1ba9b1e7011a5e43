//! Verified claims handed from the auth policy to the later sections of
//! `switchyard.wasm` in memory, per stream.
//!
//! Why: the `switchyard.claims` property round trip (a set by auth, a get
//! and a JSON parse by each reader) is for filters outside this VM; inside
//! one chain the sections share the parsed claims. Kept per stream, not per
//! callback, since auth may verify in one callback (a key set arriving) and
//! the later sections run after it.

use crate::vm::ById;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    /// The stream host calls act on now (the callback's, or the effective context).
    static CURRENT: Cell<u32> = const { Cell::new(0) };
    /// (stream, claims) for live streams whose credential was verified.
    static VERIFIED: RefCell<ById<Rc<Value>>> = RefCell::default();
    /// An auth section runs in this VM, ahead of the sections that read claims.
    static AUTH_HERE: Cell<bool> = const { Cell::new(false) };
}

/// An auth section was configured in this VM: it hands its claims over here.
pub(crate) fn auth_is_here() {
    AUTH_HERE.with(|a| a.set(true));
}

/// Whether claims may come from an auth section of this VM.
pub(crate) fn from_this_vm() -> bool {
    AUTH_HERE.with(Cell::get)
}

/// Host calls now act on stream `context_id`.
pub(crate) fn enter(context_id: u32) {
    CURRENT.with(|c| c.set(context_id));
}

/// The current stream's credential was verified with `claims`.
pub(crate) fn hand_over(claims: Rc<Value>) {
    let id = CURRENT.with(Cell::get);
    VERIFIED.with(|v| v.borrow_mut().insert(id, claims));
}

/// The claims verified for the current stream in this VM, if any.
pub(crate) fn of_current() -> Option<Value> {
    let id = CURRENT.with(Cell::get);
    VERIFIED.with(|v| v.borrow().get(&id).map(|c| Value::clone(c)))
}

/// Stream `context_id` is gone.
pub(crate) fn forget_stream(context_id: u32) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if !v.is_empty() {
            v.remove(&context_id);
        }
    });
}
