//! The virtual clock: timers, due calls and upstream answers as time advances.

use super::calls::call_answer;
use super::*;

impl Harness {
    /// Virtual milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        self.world.borrow().now_ms()
    }

    /// Starts the virtual clock at `start` instead of 2026-01-01T00:00:00Z
    /// (e.g. [`ClockStart::Now`] for tokens minted today by a real identity
    /// provider). Only before the first filter is added: a filter may read
    /// the time as it starts, and time never runs backwards.
    pub fn start_clock(&mut self, start: crate::world::ClockStart) -> Result<(), HarnessError> {
        if !self.filters.is_empty() || !self.runs.is_empty() {
            return Err(HarnessError::Load(
                "the clock start must be set before any filter is added".into(),
            ));
        }
        let mut w = self.world.borrow_mut();
        w.start_ns = start.unix_ns();
        w.now_ns = w.start_ns;
        Ok(())
    }

    /// Advances the virtual clock, running every timer, call and upstream due.
    pub fn advance(&mut self, ms: u64) {
        let target = self.world.borrow().now_ns + ms * 1_000_000;
        self.run_until(target);
    }

    pub(super) fn run_until(&mut self, target_ns: u64) {
        loop {
            self.deliver_queue_notifications();
            match self.next_event_time() {
                Some(t) if t <= target_ns => {
                    let mut w = self.world.borrow_mut();
                    w.now_ns = t.max(w.now_ns);
                    drop(w);
                    self.fire_due();
                }
                _ => break,
            }
        }
        let mut w = self.world.borrow_mut();
        w.now_ns = w.now_ns.max(target_ns);
    }

    pub(super) fn next_event_time(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for f in &self.filters {
            if let (Some(t), None) = (f.next_tick_ns, f.vm.borrow().failed.as_ref()) {
                consider(t);
            }
        }
        for run in self.runs.values() {
            if let Phase::Upstream { at_ns } = run.phase {
                consider(at_ns);
            }
        }
        if !self.manual_calls {
            let w = self.world.borrow();
            for c in w.open_calls() {
                if let Some(t) = call_due_ns(&w, c) {
                    consider(t);
                }
            }
        }
        next
    }

    fn fire_due(&mut self) {
        let now = self.world.borrow().now_ns;
        // Upstream answers.
        let due: Vec<StreamId> = self
            .runs
            .iter()
            .filter(|(_, r)| matches!(r.phase, Phase::Upstream { at_ns } if at_ns <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.upstream_due(id);
        }
        // HTTP calls.
        if !self.manual_calls {
            let due: Vec<(u32, Due)> = {
                let w = self.world.borrow();
                w.open_calls()
                    .filter(|c| call_due_ns(&w, c).is_some_and(|t| t <= now))
                    .map(|c| {
                        let answer = match c.kind {
                            CallKind::Http => Due::Http(call_answer(c)),
                            _ if grpc::replies_at_open(c) => Due::Opening(
                                c.answer
                                    .as_ref()
                                    .map(|a| grpc::opening(a, c.client_done_at_ms.is_some()))
                                    .unwrap_or_default(),
                            ),
                            _ => Due::Grpc(grpc::exchange(c)),
                        };
                        (c.token, answer)
                    })
                    .collect()
            };
            for (token, answer) in due {
                match answer {
                    Due::Http(response) => self.deliver_call(token, Some(response)),
                    Due::Grpc(events) => self.deliver_grpc(token, events, true),
                    Due::Opening(events) => self.deliver_grpc(token, events, false),
                }
            }
        }
        // Ticks.
        for i in 0..self.filters.len() {
            let f = &mut self.filters[i];
            if f.next_tick_ns.is_some_and(|t| t <= now) && f.vm.borrow_mut().failed.is_none() {
                f.next_tick_ns = Some(now + f.tick_period_ms * 1_000_000);
                let (root, ex) = (f.root, f.vm.borrow_mut().exports.clone());
                self.world.borrow_mut().trace_callback(i, root, "on_tick");
                let _ = f.vm.borrow_mut().call(root, self.fuel, |s| {
                    if let Some(t) = &ex.on_tick {
                        t.call(&mut *s, root as i32)?;
                    }
                    Ok(())
                });
            }
        }
        self.after_callback();
    }
}

/// What a due call gets.
enum Due {
    Http(Response),
    /// Callbacks that end a gRPC call or stream.
    Grpc(Vec<GrpcEvent>),
    /// A stream's first callbacks from a service that replies at open.
    Opening(Vec<GrpcEvent>),
}

/// When a call's answer is due: its delay (cut by its timeout) after the
/// caller finished sending; a refusal at once; a gRPC stream still being
/// sent on, never yet — unless its service replies at open, after its
/// delay, and sends its status once the caller is done.
fn call_due_ns(w: &World, c: &HttpCall) -> Option<u64> {
    let refused = c.answer.as_ref().is_none_or(|a| a.refused);
    let delay = c.answer.as_ref().map_or(0, Cluster::answer_delay_ms);
    let wait = if c.timeout_ms > 0 {
        delay.min(c.timeout_ms)
    } else {
        delay
    };
    let opened = c.dispatched_at_ms + wait;
    let at_ms = if refused {
        c.dispatched_at_ms
    } else if grpc::replies_at_open(c) {
        opened
    } else if c.replied_at_open {
        c.client_done_at_ms?.max(opened)
    } else {
        c.client_done_at_ms? + wait
    };
    Some(w.start_ns + at_ms * 1_000_000)
}
