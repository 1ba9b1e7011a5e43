//! HTTP and gRPC calls, and shared-queue notifications: answers handed to the VMs that made them.

use super::*;

impl Harness {
    /// HTTP calls not answered yet.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.world.borrow().open_calls().cloned().collect()
    }

    /// Answers an HTTP call now (`None`: it fails outright, zero headers;
    /// Envoy answers timeouts, resets and refusals itself, see `call_answer`).
    pub fn answer_call(&mut self, token: u32, response: Option<Response>) {
        self.deliver_call(token, response);
        self.after_callback();
    }

    /// Marks an open call of this kind answered and hands it over.
    fn take_call(&self, token: u32, grpc: bool) -> Option<HttpCall> {
        let mut w = self.world.borrow_mut();
        let c = w
            .open_calls_mut()
            .find(|c| c.token == token && (c.kind != CallKind::Http) == grpc)?;
        c.answered = true;
        let c = c.clone();
        w.settle_calls();
        Some(c)
    }

    pub(super) fn deliver_call(&mut self, token: u32, response: Option<Response>) {
        let Some(call) = self.take_call(token, false) else {
            return;
        };
        let Some(f) = self.filters.get_mut(call.vm) else {
            return;
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let (nh, nb, nt, cr) = match response {
            Some(r) => (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.as_ref().map_or(0, |t| t.len()) as i32,
                CallResponse {
                    headers: r.headers,
                    body: r.body,
                    trailers: r.trailers.unwrap_or_default(),
                },
            ),
            // A call that fails outright reaches the filter as zero headers.
            None => (0, 0, 0, CallResponse::default()),
        };
        f.vm.borrow_mut().store.data_mut().call_response = Some(cr);
        let ctx = call.root_context;
        self.world
            .borrow_mut()
            .trace_callback(call.vm, ctx, "on_http_call_response");
        let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
            if let Some(cb) = &ex.on_http_call_response {
                cb.call(&mut *s, (ctx as i32, token as i32, nh, nb, nt))?;
            }
            Ok(())
        });
        f.vm.borrow_mut().store.data_mut().call_response = None;
    }

    /// A gRPC call or stream ends: its callbacks in order, each with what
    /// it may read (message, metadata, `proxy_get_status`).
    /// Runs gRPC callbacks on the root that made the call; `ends`: the
    /// call is over after them, else the stream stays open.
    pub(super) fn deliver_grpc(&mut self, token: u32, events: Vec<GrpcEvent>, ends: bool) {
        let call = if ends {
            self.take_call(token, true)
        } else {
            self.world
                .borrow_mut()
                .open_calls_mut()
                .find(|c| c.token == token && c.kind == CallKind::GrpcStream)
                .map(|c| {
                    c.replied_at_open = true;
                    c.clone()
                })
        };
        let Some(call) = call else {
            return;
        };
        let Some(f) = self.filters.get_mut(call.vm) else {
            return;
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let ctx = call.root_context;
        for event in events {
            let (name, n, cb) = match &event {
                GrpcEvent::InitialMetadata(m) => (
                    "on_grpc_receive_initial_metadata",
                    m.len() as i32,
                    &ex.on_grpc_receive_initial_metadata,
                ),
                GrpcEvent::Message(m) => ("on_grpc_receive", m.len() as i32, &ex.on_grpc_receive),
                GrpcEvent::TrailingMetadata(m) => (
                    "on_grpc_receive_trailing_metadata",
                    m.len() as i32,
                    &ex.on_grpc_receive_trailing_metadata,
                ),
                GrpcEvent::Close { status, .. } => {
                    ("on_grpc_close", *status as i32, &ex.on_grpc_close)
                }
            };
            f.vm.borrow_mut().store.data_mut().grpc_event = Some(event);
            self.world.borrow_mut().trace_callback(call.vm, ctx, name);
            let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cb) = cb {
                    cb.call(&mut *s, (ctx as i32, token as i32, n))?;
                }
                Ok(())
            });
            f.vm.borrow_mut().store.data_mut().grpc_event = None;
        }
    }

    /// Ends a unary gRPC call now (for `manual_http_calls`): a reply, or a
    /// status and its detail.
    pub fn answer_grpc_call(&mut self, token: u32, answer: Result<Vec<u8>, (u32, String)>) {
        let event = match answer {
            Ok(m) => GrpcEvent::Message(m),
            Err((status, detail)) => GrpcEvent::Close { status, detail },
        };
        self.deliver_grpc(token, vec![event], true);
        self.after_callback();
    }

    /// Ends a gRPC stream now (for `manual_http_calls`) with these callbacks.
    pub fn answer_grpc_stream(&mut self, token: u32, events: Vec<GrpcEvent>) {
        self.deliver_grpc(token, events, true);
        self.after_callback();
    }

    /// Runs these callbacks on an open gRPC stream and keeps it open (for
    /// `manual_http_calls`): a service that replies while the filter is
    /// still sending. End it with `answer_grpc_stream`.
    pub fn reply_on_grpc_stream(&mut self, token: u32, events: Vec<GrpcEvent>) {
        self.deliver_grpc(token, events, false);
        self.after_callback();
    }

    pub(super) fn deliver_queue_notifications(&mut self) {
        loop {
            let Some(qid) = self.world.borrow_mut().queue_notifications.pop_front() else {
                break;
            };
            let owner = self
                .world
                .borrow()
                .queues
                .get(qid as usize - 1)
                .map(|q| q.owner);
            let Some((vm, root)) = owner else { continue };
            let Some(f) = self.filters.get_mut(vm) else {
                continue;
            };
            let ex = f.vm.borrow_mut().exports.clone();
            self.world
                .borrow_mut()
                .trace_callback(vm, root, "on_queue_ready");
            let _ = f.vm.borrow_mut().call(root, self.fuel, |s| {
                if let Some(cb) = &ex.on_queue_ready {
                    cb.call(&mut *s, (root as i32, qid as i32))?;
                }
                Ok(())
            });
            self.after_callback();
        }
    }

    /// After any callback: pick up tick-period changes, continues, local replies.
    pub(super) fn after_callback(&mut self) {
        let now = self.world.borrow().now_ns;
        for f in &mut self.filters {
            // Every set re-arms the timer, even with the same period (Envoy).
            let (period, sets) = f.vm.borrow().tick_period_of(f.root);
            if sets != f.tick_sets {
                f.tick_sets = sets;
                f.tick_period_ms = period;
                f.next_tick_ns = (period > 0).then(|| now + period * 1_000_000);
            }
        }
        let ids: Vec<StreamId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.phase != Phase::Done)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let (cont_req, cont_resp, local, reset) = {
                let mut streams = self.streams.borrow_mut();
                let Some(s) = streams.get_mut(&id) else {
                    continue;
                };
                (
                    std::mem::take(&mut s.continue_request),
                    std::mem::take(&mut s.continue_response),
                    s.local_response.take(),
                    std::mem::take(&mut s.reset),
                )
            };
            let run = self.runs.get_mut(&id).expect("run");
            if reset {
                run.reset = true;
                self.finish(id);
                continue;
            }
            if let Some((response, details)) = local {
                let from = run.flow.paused.map_or(0, |(p, _)| run.flow.order[p]);
                self.local_reply(id, from, response, details);
                continue;
            }
            let resume = match run.phase {
                Phase::Request => cont_req,
                Phase::Response => cont_resp,
                _ => false,
            };
            if resume && run.flow.paused.is_some() {
                self.resume(id);
            }
        }
    }
}

/// What Envoy's async client hands the filter: the call goes through a
/// router, so a timeout, reset or refusal arrives as the router's made-up
/// reply (504/503 with headers), never as zero headers.
pub(super) fn call_answer(c: &HttpCall) -> Response {
    let failure = |o| router::failure_response(o, false);
    match c.ending() {
        CallEnding::Refused => failure(router::Outcome::Refused),
        CallEnding::TimedOut => router::timeout_response(),
        CallEnding::Reset => failure(router::Outcome::Reset),
        CallEnding::Answered(cluster) => match cluster.response() {
            Some(r) => r.header("x-envoy-upstream-service-time", "0"),
            None => failure(router::Outcome::Reset),
        },
    }
}
