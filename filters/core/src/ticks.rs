//! Several policies' tick wishes folded onto a root's one host timer.
//!
//! A proxy-wasm root has a single tick period, but the chain's policies
//! each want their own (auth's key-set refresh, a timeouts fault delay).
//! This is the bookkeeping, without the host: the adapter asks [`Ticks::plan`]
//! what period to set and reports back with [`Ticks::armed`] once the host
//! took it, so a refused period leaves nothing changed and is tried again.

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    period: u64,
    due: Option<u64>,
}

/// What the host timer should be set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    /// The period to set, in milliseconds (0 stops the timer).
    pub period_ms: u32,
    /// When it will fire next, if it runs.
    next: Option<u64>,
}

/// One root's tick wishes, a slot per policy.
#[derive(Debug, Default)]
pub struct Ticks {
    slots: Vec<Slot>,
    in_tick: bool,
    /// The period the host timer runs with, and when it fires next.
    host_period: u64,
    host_due: Option<u64>,
}

impl Ticks {
    pub fn new(policies: usize) -> Self {
        Self {
            slots: vec![Slot::default(); policies],
            ..Self::default()
        }
    }

    /// Policy `slot` wants a tick every `period_ms` from `now`; 0 stops it.
    pub fn ask(&mut self, slot: usize, period_ms: u64, now: u64) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.period = period_ms;
            s.due = (period_ms > 0).then(|| now.saturating_add(period_ms));
        }
    }

    /// True between [`fire`](Self::fire) and [`end_tick`](Self::end_tick):
    /// wishes made then are armed once, when the tick ends.
    pub fn in_tick(&self) -> bool {
        self.in_tick
    }

    /// The slots due at `now`, each rescheduled a period on; a tick begins.
    pub fn fire(&mut self, now: u64) -> Vec<usize> {
        self.in_tick = true;
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.due.is_some_and(|d| d <= now) {
                s.due = (s.period > 0).then(|| now.saturating_add(s.period));
                due.push(i);
            }
        }
        due
    }

    /// The tick's policies have run. After a tick the host repeats its
    /// period from now, which [`plan`](Self::plan) then takes into account.
    pub fn end_tick(&mut self, now: u64) {
        self.in_tick = false;
        self.host_due = (self.host_period > 0).then(|| now.saturating_add(self.host_period));
    }

    /// The host timer setting that fires for the earliest due policy (or
    /// stops), if the timer as it runs does not already.
    pub fn plan(&self, now: u64) -> Option<Arm> {
        let next = self.slots.iter().filter_map(|s| s.due).min();
        if next == self.host_due {
            return None;
        }
        let period = next.map_or(0, |n| n.saturating_sub(now).clamp(1, u64::from(u32::MAX)));
        Some(Arm {
            period_ms: u32::try_from(period).unwrap_or(u32::MAX),
            next,
        })
    }

    /// The host took `arm`.
    pub fn armed(&mut self, arm: Arm) {
        self.host_period = u64::from(arm.period_ms);
        self.host_due = arm.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans and, as a host that always accepts, arms.
    fn settle(t: &mut Ticks, now: u64) -> Option<u32> {
        let arm = t.plan(now)?;
        t.armed(arm);
        Some(arm.period_ms)
    }

    #[test]
    fn the_timer_runs_at_the_earliest_wish_and_stops_with_none() {
        let mut t = Ticks::new(2);
        assert_eq!(t.plan(0), None, "nobody asked: nothing to set");
        t.ask(0, 100, 0);
        assert_eq!(settle(&mut t, 0), Some(100));
        t.ask(1, 30, 10);
        assert_eq!(settle(&mut t, 10), Some(30), "due at 40, before 100");
        t.ask(1, 0, 20);
        assert_eq!(settle(&mut t, 20), Some(80), "back to slot 0, due at 100");
        t.ask(0, 0, 25);
        assert_eq!(settle(&mut t, 25), Some(0), "no wish left: stopped");
        assert_eq!(t.plan(26), None);
    }

    #[test]
    fn a_tick_fires_the_due_policies_and_keeps_a_period_that_fits() {
        let mut t = Ticks::new(2);
        t.ask(0, 100, 0);
        t.ask(1, 100, 0);
        assert_eq!(settle(&mut t, 0), Some(100));
        assert_eq!(t.fire(100), vec![0, 1]);
        assert!(t.in_tick());
        t.end_tick(100);
        // Both due at 200, which the host's repeated period already hits.
        assert_eq!(t.plan(100), None);
    }

    #[test]
    fn wishes_made_during_a_tick_are_armed_when_it_ends() {
        let mut t = Ticks::new(2);
        t.ask(0, 100, 0);
        assert_eq!(settle(&mut t, 0), Some(100));
        assert_eq!(t.fire(100), vec![0]);
        t.ask(1, 5, 100); // e.g. a fault delay armed by a request in this tick
        assert!(t.in_tick());
        t.end_tick(100);
        assert_eq!(settle(&mut t, 100), Some(5));
        assert_eq!(t.fire(105), vec![1]);
        t.end_tick(105);
        t.ask(1, 0, 105);
        assert_eq!(settle(&mut t, 105), Some(95), "slot 0 is due at 200");
    }

    #[test]
    fn a_refused_setting_is_planned_again() {
        let mut t = Ticks::new(1);
        t.ask(0, 50, 0);
        let first = t.plan(0);
        assert!(first.is_some());
        // The host refused: not armed. The next plan still wants it.
        assert_eq!(t.plan(1).map(|a| a.period_ms), Some(49));
    }

    #[test]
    fn periods_past_u32_are_clamped_not_wrapped() {
        let mut t = Ticks::new(1);
        t.ask(0, u64::MAX, 7);
        assert_eq!(t.plan(7).map(|a| a.period_ms), Some(u32::MAX));
    }
}
