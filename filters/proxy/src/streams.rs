//! Live streams by context id, found with one comparison.
//!
//! Why not a `HashMap`: every stream callback looks its stream up twice
//! (taken out while its callback runs, put back after), and context create
//! and delete add and remove it, so a request paid six hash-table
//! operations. Envoy numbers contexts in sequence, so the live ones are
//! recent ids: a table indexed by an id's low bits holds each in its own
//! slot. A slot taken by another live stream (one that outlived as many
//! newer ones as the table has slots) doubles the table, up to
//! [`MAX_SLOTS`]; past that, the newcomer waits in a small overflow map.

use crate::vm::ById;

const FIRST_SLOTS: usize = 16;
/// Slots the table may grow to (a few tens of KiB of stream state).
const MAX_SLOTS: usize = 1024;

pub(crate) struct StreamTable<T> {
    /// `slots.len()` is a power of two; a stream lives at `id & (len - 1)`.
    slots: Vec<Option<(u32, T)>>,
    /// Streams whose slot was taken when the table could grow no further.
    overflow: ById<T>,
}

impl<T> Default for StreamTable<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            overflow: ById::default(),
        }
    }
}

impl<T> StreamTable<T> {
    #[inline]
    fn slot(&self, id: u32) -> usize {
        id as usize & self.slots.len().wrapping_sub(1)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let at = self.slot(id);
        match self.slots.get_mut(at) {
            Some(Some((held, value))) if *held == id => Some(value),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get_mut(&id),
        }
    }

    /// Adds stream `id` (replacing one of the same id).
    pub(crate) fn insert(&mut self, id: u32, value: T) {
        if !self.overflow.is_empty() {
            self.overflow.remove(&id);
        }
        if self.slots.is_empty() {
            self.slots.resize_with(FIRST_SLOTS, || None);
        }
        loop {
            let at = self.slot(id);
            let can_grow = self.slots.len() < MAX_SLOTS;
            match self.slots.get_mut(at) {
                Some(slot @ None) => {
                    *slot = Some((id, value));
                    return;
                }
                Some(Some((held, old))) if *held == id => {
                    *old = value;
                    return;
                }
                _ if can_grow => self.grow(),
                _ => {
                    self.overflow.insert(id, value);
                    return;
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let at = self.slot(id);
        if let Some(slot) = self.slots.get_mut(at) {
            if matches!(slot, Some((held, _)) if *held == id) {
                return slot.take().map(|(_, value)| value);
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.remove(&id)
    }

    /// Doubles the table; streams that collide again in it (ids a multiple
    /// of the new size apart) go to the overflow map.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots.resize_with(old.len() * 2, || None);
        for (id, value) in old.into_iter().flatten() {
            let at = self.slot(id);
            match self.slots.get_mut(at) {
                Some(slot @ None) => *slot = Some((id, value)),
                _ => {
                    self.overflow.insert(id, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_in_sequence_are_found_and_removed() {
        let mut t = StreamTable::default();
        for id in 2..10_000u32 {
            t.insert(id, id * 10);
            assert_eq!(t.get_mut(id).copied(), Some(id * 10));
            *t.get_mut(id).unwrap() += 1;
            assert_eq!(t.remove(id), Some(id * 10 + 1));
            assert_eq!(t.get_mut(id), None);
            assert_eq!(t.remove(id), None);
        }
        assert_eq!(t.slots.len(), FIRST_SLOTS);
    }

    #[test]
    fn a_long_lived_stream_stays_found_while_many_newer_ones_pass() {
        let mut t = StreamTable::default();
        t.insert(1, "root's long poll");
        // Overlapping windows of newer streams, far more than the table holds.
        for id in 2..5_000u32 {
            t.insert(id, "short");
            if id >= 40 {
                assert_eq!(t.remove(id - 38), Some("short"));
            }
            assert_eq!(t.get_mut(1).copied(), Some("root's long poll"));
            assert_eq!(t.get_mut(0), None);
        }
        assert!(t.slots.len() <= MAX_SLOTS);
        assert_eq!(t.remove(1), Some("root's long poll"));
        for id in 4_962..5_000u32 {
            assert_eq!(t.remove(id), Some("short"), "{id}");
        }
        assert!(t.overflow.is_empty());
        assert!(t.slots.iter().all(Option::is_none));
    }

    #[test]
    fn many_live_streams_past_the_largest_table_overflow_and_stay_found() {
        let mut t = StreamTable::default();
        let ids: Vec<u32> = (0..3 * MAX_SLOTS as u32).map(|i| i * 7 + 3).collect();
        for &id in &ids {
            t.insert(id, id);
        }
        assert_eq!(t.slots.len(), MAX_SLOTS);
        assert!(!t.overflow.is_empty());
        for &id in &ids {
            assert_eq!(t.get_mut(id).copied(), Some(id), "{id}");
        }
        for &id in ids.iter().rev() {
            assert_eq!(t.remove(id), Some(id), "{id}");
        }
        assert!(t.overflow.is_empty());
    }

    #[test]
    fn inserting_an_id_again_replaces_it() {
        let mut t = StreamTable::default();
        t.insert(5, 'a');
        t.insert(5, 'b');
        assert_eq!(t.remove(5), Some('b'));
        assert_eq!(t.remove(5), None);
    }
}
