//! The stream driver: a request through the chain of filters to its upstream and back.

use super::*;

impl Harness {
    /// Sends a request and runs the clock until it completes (or stays stuck
    /// for five virtual minutes).
    pub fn send(&mut self, request: Request) -> Exchange {
        let id = self.start(request);
        let limit = self.world.borrow().now_ns + STREAM_WAIT_LIMIT_MS * 1_000_000;
        while !self.is_done(id) {
            match self.next_event_time() {
                Some(t) if t <= limit => self.run_until(t),
                _ => break,
            }
        }
        // Posted events (queue notifications) run once this stream's work returns.
        self.deliver_queue_notifications();
        let exchange = self.exchange(id).expect("stream exists");
        // A sent request is over for the caller: keep nothing of it.
        self.runs.remove(&id);
        exchange
    }

    /// Forgets a finished stream started with [`Harness::start`].
    pub fn forget(&mut self, id: StreamId) {
        if self.is_done(id) {
            self.runs.remove(&id);
        }
    }

    /// The client goes away mid-request: the stream ends at once (no
    /// response), its filters get `on_log`/`on_done`/`on_delete`, and its
    /// pending HTTP calls are cancelled, as Envoy does on a downstream reset.
    pub fn abort(&mut self, id: StreamId) {
        if self.is_done(id) {
            return;
        }
        if let Some(run) = self.runs.get_mut(&id) {
            run.reset = true;
        }
        self.finish(id);
        self.after_callback();
    }

    /// Starts a stream without waiting for it (for interleaved streams).
    pub fn start(&mut self, request: Request) -> StreamId {
        self.deliver_queue_notifications();
        let id = self.next_stream;
        self.next_stream += 1;
        let now = self.world.borrow().now_ns;
        let mut headers = envoy_order(&request.headers);
        // What Envoy's connection manager does before any filter runs: a
        // client (external by default since Envoy 1.3x) cannot steer the router.
        for name in router::INTERNAL_ONLY_HEADERS {
            headers.remove(name);
        }
        if !headers.contains("x-forwarded-proto") {
            headers.add("x-forwarded-proto", b"http");
        }
        if !headers.contains("x-request-id") {
            let mut r = [0u8; 16];
            self.world.borrow_mut().fill_random(&mut r);
            headers.add("x-request-id", uuid(&r).as_bytes());
        }
        self.streams.borrow_mut().insert(
            id,
            StreamMaps {
                request_headers: Some(headers),
                request_trailers: request.trailers.clone(),
                started_at_ns: now,
                connection: request.connection.clone(),
                connection_id: id,
                http2: request.http2,
                ..StreamMaps::default()
            },
        );
        let marks = {
            let w = self.world.borrow();
            (w.logs.len(), w.http_calls.len(), w.trace.len())
        };
        let mut contexts = Vec::with_capacity(self.filters.len());
        for f in &mut self.filters {
            if f.spec.service.is_some() || f.vm.borrow_mut().failed.is_some() {
                contexts.push(None);
                continue;
            }
            let ctx = f.vm.borrow_mut().new_context(Ctx::Stream(id), Some(f.root));
            let (root, ex) = (f.root, f.vm.borrow_mut().exports.clone());
            let created = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cc) = &ex.on_context_create {
                    cc.call(&mut *s, (ctx as i32, root as i32))?;
                }
                Ok(())
            });
            contexts.push(created.ok().map(|()| ctx));
        }
        self.runs.insert(
            id,
            StreamRun {
                contexts,
                phase: Phase::Request,
                flow: Flow::new(
                    (0..self.filters.len()).collect(),
                    Flow::arrivals(
                        request.body.as_deref().unwrap_or_default(),
                        &request.chunk_sizes,
                        !request.http2 && request.trailers.is_none(),
                    ),
                    request.trailers.is_some(),
                ),
                upstream: None,
                router: None,
                pending_response: None,
                response: None,
                local_reply: None,
                reset: false,
                started_ns: now,
                finished_ns: None,
                marks,
            },
        );
        self.drive(id);
        // A stream's callbacks may have set the root's tick period.
        self.after_callback();
        id
    }

    pub fn is_done(&self, id: StreamId) -> bool {
        self.runs.get(&id).is_none_or(|r| r.phase == Phase::Done)
    }

    /// What has been observed for a stream so far.
    pub fn exchange(&self, id: StreamId) -> Option<Exchange> {
        let run = self.runs.get(&id)?;
        let w = self.world.borrow();
        let end = run.finished_ns.unwrap_or(w.now_ns);
        Some(Exchange {
            stream: id,
            upstream: run.upstream.clone(),
            response: run.response.clone(),
            local_reply: run.local_reply.clone(),
            completed: run.phase == Phase::Done,
            started_ms: (run.started_ns - w.start_ns) / 1_000_000,
            duration_ms: (end - run.started_ns) / 1_000_000,
            logs: w.logs[run.marks.0..].to_vec(),
            http_calls: w.http_calls[run.marks.1..].to_vec(),
            trace: w.trace[run.marks.2..].to_vec(),
        })
    }

    /// Runs a stream's callbacks until it pauses, waits for the upstream or
    /// ends: headers filter by filter, then what waited at a filter that let
    /// them pass, then the client's (or upstream's) body and trailers.
    fn drive(&mut self, id: StreamId) {
        loop {
            let Some(run) = self.runs.get(&id) else {
                return;
            };
            if !matches!(run.phase, Phase::Request | Phase::Response) {
                return;
            }
            let f = &run.flow;
            if f.paused.is_some() || f.headers_next >= f.len() {
                break;
            }
            let (p, end_of_stream) = (f.headers_next, f.headers_end_stream);
            match self.run_callback(id, p, Stage::Headers, 0, end_of_stream) {
                Step::Go => self.headers_passed(id, p),
                Step::Pause => {
                    self.flow_mut(id).paused = Some((p, Stage::Headers));
                    // Filters before this one still see the body.
                    break;
                }
                Step::Stop => return,
            }
        }
        if !self.release_held(id) {
            return;
        }
        while let Some(chunk) = self.flow_mut(id).source.pop_front() {
            let f = self.flow_mut(id);
            let end_of_stream = f.source.is_empty() && !f.source_trailers;
            if !self.deliver(id, 0, chunk, end_of_stream) {
                return;
            }
        }
        if std::mem::take(&mut self.flow_mut(id).source_trailers) && !self.deliver_trailers(id, 0) {
            return;
        }
        let run = &self.runs[&id];
        if run.flow.complete {
            match run.phase {
                Phase::Request => self.send_upstream(id),
                Phase::Response => self.finish(id),
                _ => {}
            }
        }
    }

    fn flow_mut(&mut self, id: StreamId) -> &mut Flow {
        &mut self.runs.get_mut(&id).expect("run").flow
    }

    fn headers_passed(&mut self, id: StreamId, p: usize) {
        let f = self.flow_mut(id);
        f.headers_next = p + 1;
        if f.headers_next >= f.len() && f.headers_end_stream {
            f.complete = true;
        }
    }

    /// Delivers what waited at filters that have now let the headers pass;
    /// false when the stream stopped.
    fn release_held(&mut self, id: StreamId) -> bool {
        let mut p = 0;
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let f = &mut run.flow;
            if p >= f.gate() {
                return true;
            }
            if !f.held[p].is_empty() {
                let held = std::mem::take(&mut f.held[p]);
                let end_of_stream = held.end_of_stream;
                if (!held.data.is_empty() || end_of_stream)
                    && !self.deliver(id, p, held.data, end_of_stream)
                {
                    return false;
                }
                if held.trailers && !self.deliver_trailers(id, p) {
                    return false;
                }
            }
            p += 1;
        }
    }

    /// A chunk reaches position `p` and goes as far as the filters let it;
    /// false when the stream stopped.
    fn deliver(
        &mut self,
        id: StreamId,
        mut p: usize,
        mut data: Vec<u8>,
        end_of_stream: bool,
    ) -> bool {
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let request = run.phase == Phase::Request;
            let f = &mut run.flow;
            if p >= f.len() {
                f.out.extend_from_slice(&data);
                f.complete |= end_of_stream;
                return true;
            }
            if p >= f.gate() {
                let held = &mut f.held[p];
                held.data.extend_from_slice(&data);
                held.end_of_stream |= end_of_stream;
                return true;
            }
            let mut buffer = std::mem::take(&mut f.buffered[p]);
            buffer.extend_from_slice(&data);
            let size = buffer.len();
            self.set_body(id, request, buffer);
            let step = self.run_callback(id, p, Stage::Body, size, end_of_stream);
            // The callback may have rewritten the buffer.
            let buffer = self.take_body(id, request);
            match step {
                Step::Stop => return false,
                Step::Pause => {
                    let f = self.flow_mut(id);
                    f.buffered[p] = buffer;
                    if end_of_stream {
                        f.paused = Some((p, Stage::Body));
                    }
                    return true;
                }
                Step::Go => {
                    data = buffer;
                    p += 1;
                }
            }
        }
    }

    /// Trailers reach position `p`; a filter that lets them pass first
    /// passes on what it buffered. False when the stream stopped.
    fn deliver_trailers(&mut self, id: StreamId, mut p: usize) -> bool {
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let f = &mut run.flow;
            if p >= f.len() {
                f.complete = true;
                return true;
            }
            if p >= f.gate() {
                f.held[p].trailers = true;
                return true;
            }
            match self.run_callback(id, p, Stage::Trailers, 0, false) {
                Step::Stop => return false,
                Step::Pause => {
                    self.flow_mut(id).paused = Some((p, Stage::Trailers));
                    return true;
                }
                Step::Go => {
                    let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                    if !buffered.is_empty() && !self.deliver(id, p + 1, buffered, false) {
                        return false;
                    }
                    p += 1;
                }
            }
        }
    }

    /// A filter that paused the stream continues it.
    pub(super) fn resume(&mut self, id: StreamId) {
        let Some((p, stage)) = self.flow_mut(id).paused.take() else {
            return;
        };
        match stage {
            Stage::Headers => self.headers_passed(id, p),
            Stage::Body => {
                let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                if !self.deliver(id, p + 1, buffered, true) {
                    return;
                }
            }
            Stage::Trailers => {
                let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                if !buffered.is_empty() && !self.deliver(id, p + 1, buffered, false) {
                    return;
                }
                if !self.deliver_trailers(id, p + 1) {
                    return;
                }
            }
        }
        self.drive(id);
    }

    fn set_body(&mut self, id: StreamId, request: bool, body: Vec<u8>) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&id) {
            *if request {
                &mut s.request_body
            } else {
                &mut s.response_body
            } = body;
        }
    }

    fn take_body(&mut self, id: StreamId, request: bool) -> Vec<u8> {
        self.streams
            .borrow_mut()
            .get_mut(&id)
            .map(|s| {
                std::mem::take(if request {
                    &mut s.request_body
                } else {
                    &mut s.response_body
                })
            })
            .unwrap_or_default()
    }

    /// Runs the callback of the filter at position `p` of the stream's
    /// current direction and says what it means for the stream.
    fn run_callback(
        &mut self,
        id: StreamId,
        p: usize,
        stage: Stage,
        body_size: usize,
        end_of_stream: bool,
    ) -> Step {
        let run = &self.runs[&id];
        let (filter, request) = (run.flow.order[p], run.phase == Phase::Request);
        let action = self.callback(id, filter, request, stage, body_size, end_of_stream);
        self.handle_action(id, filter, action)
    }

    /// Handles a callback's outcome.
    fn handle_action(
        &mut self,
        id: StreamId,
        filter: usize,
        action: Result<Option<i32>, String>,
    ) -> Step {
        let (local, reset) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("stream maps");
            // A continue inside the callback that paused means nothing yet.
            s.continue_request = false;
            s.continue_response = false;
            (s.local_response.take(), std::mem::take(&mut s.reset))
        };
        match action {
            Err(_trap) => match self.filters[filter].spec.failure_policy {
                FailurePolicy::FailClosed => {
                    self.local_reply(id, filter, Response::new(503), "wasm_fail_stream".into());
                    Step::Stop
                }
                FailurePolicy::FailOpen => Step::Go,
            },
            Ok(action) => {
                if reset {
                    self.runs.get_mut(&id).expect("run").reset = true;
                    self.finish(id);
                    return Step::Stop;
                }
                if let Some((response, details)) = local {
                    // Takes effect after the callback returns, then runs this filter's response callbacks.
                    self.local_reply(id, filter, response, details);
                    return Step::Stop;
                }
                if action == Some(1) {
                    Step::Pause
                } else {
                    Step::Go
                }
            }
        }
    }

    /// Calls filter `i`'s callback for `stage`; `Ok(None)` when skipped.
    fn callback(
        &mut self,
        id: StreamId,
        i: usize,
        request: bool,
        stage: Stage,
        body_size: usize,
        end_of_stream: bool,
    ) -> Result<Option<i32>, String> {
        let run = &self.runs[&id];
        let f = &mut self.filters[i];
        if f.spec.service.is_some() {
            return Ok(None); // Services never see a stream.
        }
        if f.vm.borrow_mut().failed.is_some() {
            // A dead VM answers nothing: fail-open skips it, fail-closed stops
            // the request (its 503 then passes the filters before it only).
            return match (f.spec.failure_policy, request) {
                (FailurePolicy::FailClosed, true) => {
                    Err(f.vm.borrow_mut().failed.clone().unwrap_or_default())
                }
                _ => Ok(None),
            };
        }
        let Some(ctx) = run.contexts[i] else {
            return Ok(None);
        };
        let (nh, nt) = {
            let streams = self.streams.borrow();
            let s = &streams[&id];
            let (h, t) = if request {
                (&s.request_headers, &s.request_trailers)
            } else {
                (&s.response_headers, &s.response_trailers)
            };
            (
                h.as_ref().map_or(0, Headers::len) as i32,
                t.as_ref().map_or(0, Headers::len) as i32,
            )
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let (c, size, end) = (ctx as i32, body_size as i32, i32::from(end_of_stream));
        let name = match (request, stage) {
            (true, Stage::Headers) => "on_request_headers",
            (true, Stage::Body) => "on_request_body",
            (true, Stage::Trailers) => "on_request_trailers",
            (false, Stage::Headers) => "on_response_headers",
            (false, Stage::Body) => "on_response_body",
            (false, Stage::Trailers) => "on_response_trailers",
        };
        self.world.borrow_mut().trace_callback(i, ctx, name);
        f.vm.borrow_mut().call(ctx, self.fuel, |s| {
            let r = match (request, stage) {
                (true, Stage::Headers) => ex
                    .on_request_headers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nh, end))),
                (true, Stage::Body) => ex
                    .on_request_body
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, size, end))),
                (true, Stage::Trailers) => ex
                    .on_request_trailers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nt))),
                (false, Stage::Headers) => ex
                    .on_response_headers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nh, end))),
                (false, Stage::Body) => ex
                    .on_response_body
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, size, end))),
                (false, Stage::Trailers) => ex
                    .on_response_trailers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nt))),
            };
            r.transpose()
        })
    }

    fn send_upstream(&mut self, id: StreamId) {
        let body = std::mem::take(&mut self.flow_mut(id).out);
        let (headers, trailers) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            // What passed every filter; `request.size` reads it from now on.
            s.request_body = body.clone();
            (
                s.request_headers.clone().unwrap_or_default(),
                s.request_trailers.clone(),
            )
        };
        let (cluster_name, cluster) = self
            .routes
            .iter()
            .find(|(h, v, _)| headers.get(h) == Some(v.as_bytes()))
            .and_then(|(_, _, c)| Some((c.clone(), self.world.borrow().clusters.get(c)?.clone())))
            .unwrap_or_else(|| ("upstream".into(), self.upstream.clone()));
        let mut upstream_headers = headers;
        let router_headers = Headers(
            upstream_headers
                .0
                .iter()
                .filter(|(k, _)| router::CONSUMED.contains(&k.as_str()))
                .cloned()
                .collect(),
        );
        let policy = router::Policy::take_from(&mut upstream_headers);
        let now = self.world.borrow().now_ns;
        let run = self.runs.get_mut(&id).expect("run");
        run.upstream = Some(UpstreamRequest {
            cluster: cluster_name.clone(),
            headers: upstream_headers,
            body,
            trailers,
            attempts: 0,
            router_headers,
        });
        run.router = Some(RouterRun {
            global_at_ns: (policy.global_ms > 0).then(|| now + policy.global_ms * 1_000_000),
            policy,
            cluster_name,
            cluster,
            retries: 0,
            attempt: Attempt::Backoff { until_ns: now },
        });
        self.upstream_due(id);
    }

    /// The router's next event for a stream: an attempt starts, answers,
    /// times out, or the whole budget runs out.
    pub(super) fn upstream_due(&mut self, id: StreamId) {
        let now = self.world.borrow().now_ns;
        let run = self.runs.get_mut(&id).expect("run");
        let Some(rr) = run.router.as_mut() else {
            return;
        };
        let final_response = if rr.global_at_ns.is_some_and(|g| g <= now) {
            Some(router::timeout_response())
        } else {
            match &rr.attempt {
                Attempt::Backoff { until_ns } if *until_ns <= now => {
                    let answer = self
                        .world
                        .borrow_mut()
                        .next_answer(&rr.cluster_name, &rr.cluster);
                    // A refused connection never delivers the request.
                    if let (Some(u), false) = (run.upstream.as_mut(), answer.refused) {
                        u.attempts += 1;
                    }
                    rr.attempt = Attempt::Waiting {
                        answer_at_ns: now + answer.answer_delay_ms() * 1_000_000,
                        per_try_at_ns: (rr.policy.per_try_ms > 0)
                            .then(|| now + rr.policy.per_try_ms * 1_000_000),
                        answer: answer.response(),
                        refused: answer.refused,
                    };
                    None
                }
                Attempt::Waiting {
                    answer_at_ns,
                    per_try_at_ns,
                    answer,
                    refused,
                } => {
                    let outcome = match per_try_at_ns {
                        Some(p) if *p <= now && *p < *answer_at_ns => {
                            Some(router::Outcome::PerTryTimeout)
                        }
                        _ if *answer_at_ns <= now && *refused => Some(router::Outcome::Refused),
                        _ if *answer_at_ns <= now => Some(
                            answer
                                .as_ref()
                                .map_or(router::Outcome::Reset, router::Outcome::Answered),
                        ),
                        _ => None,
                    };
                    match outcome {
                        None => None,
                        Some(o) if rr.retries < rr.policy.max_retries && rr.policy.retries(o) => {
                            rr.retries += 1;
                            rr.attempt = Attempt::Backoff {
                                until_ns: now + router::RETRY_BACKOFF_MS * 1_000_000,
                            };
                            None
                        }
                        Some(router::Outcome::PerTryTimeout) => Some(router::timeout_response()),
                        Some(o @ (router::Outcome::Reset | router::Outcome::Refused)) => {
                            Some(router::failure_response(o, rr.retries > 0))
                        }
                        // Only an upstream's own answer says how long it took.
                        Some(router::Outcome::Answered(r)) => {
                            Some(r.clone().header("x-envoy-upstream-service-time", "0"))
                        }
                    }
                }
                Attempt::Backoff { .. } => None,
            }
        };
        if let Some(response) = final_response {
            run.router = None;
            if run.upstream.as_ref().is_some_and(|u| u.attempts == 0) {
                run.upstream = None;
            }
            run.pending_response = Some(Some(response));
            self.upstream_answered(id);
            return;
        }
        let next = match &rr.attempt {
            Attempt::Backoff { until_ns } => *until_ns,
            Attempt::Waiting {
                answer_at_ns,
                per_try_at_ns,
                ..
            } => per_try_at_ns.map_or(*answer_at_ns, |p| p.min(*answer_at_ns)),
        };
        let at_ns = rr.global_at_ns.map_or(next, |g| g.min(next));
        run.phase = Phase::Upstream { at_ns };
        if at_ns <= now {
            self.upstream_due(id);
        }
    }

    fn upstream_answered(&mut self, id: StreamId) {
        let run = self.runs.get_mut(&id).expect("run");
        let response = run
            .pending_response
            .take()
            .flatten()
            .unwrap_or_else(|| Response::new(503));
        let chunks = Flow::arrivals(
            &response.body,
            &response.chunk_sizes,
            response.trailers.is_none(),
        );
        let Response {
            headers, trailers, ..
        } = response;
        let has_trailers = trailers.is_some();
        {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            s.response_headers = Some(headers);
            s.response_body = Vec::new();
            s.response_trailers = trailers;
            s.request_done = true;
        }
        let run = self.runs.get_mut(&id).expect("run");
        run.phase = Phase::Response;
        run.flow = Flow::new(
            (0..self.filters.len()).rev().collect(),
            chunks,
            has_trailers,
        );
        self.drive(id);
    }

    pub(super) fn local_reply(
        &mut self,
        id: StreamId,
        filter: usize,
        response: Response,
        details: String,
    ) {
        let mut headers = response.headers.clone();
        if !response.body.is_empty() {
            // Envoy's local reply: content-length, then content-type.
            headers.replace("content-length", response.body.len().to_string().as_bytes());
            if !headers.contains("content-type") {
                headers.add("content-type", b"text/plain");
            }
        }
        {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            s.response_headers = Some(headers);
            s.response_body = Vec::new();
            s.response_trailers = None;
            s.request_done = true;
        }
        let run = self.runs.get_mut(&id).expect("run");
        run.local_reply = Some((filter, details));
        run.phase = Phase::Response;
        // From the filter that replied back to the first, the body in one chunk.
        let body = (!response.body.is_empty()).then_some(response.body);
        run.flow = Flow::new(
            (0..=filter).rev().collect(),
            body.into_iter().collect(),
            false,
        );
        self.drive(id);
    }

    pub(super) fn finish(&mut self, id: StreamId) {
        let now = self.world.borrow().now_ns;
        let (response, reset) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            let run = self.runs.get_mut(&id).expect("run");
            // What passed every filter; `response.size` reads it in `on_log`.
            let body = if run.phase == Phase::Response {
                std::mem::take(&mut run.flow.out)
            } else {
                Vec::new()
            };
            s.response_body = body.clone();
            let r = s.response_headers.as_ref().map(|h| Response {
                status: h
                    .get(":status")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0),
                headers: h.clone(),
                body,
                trailers: s.response_trailers.clone(),
                chunk_sizes: Vec::new(),
            });
            (r, run.reset)
        };
        {
            let run = self.runs.get_mut(&id).expect("run");
            run.response = if reset { None } else { response };
            run.phase = Phase::Done;
            run.flow.paused = None;
            run.finished_ns = Some(now);
        }
        let contexts = self.runs[&id].contexts.clone();
        // Envoy cancels the HTTP calls a stream's contexts still wait for,
        // without a callback.
        {
            let mut w = self.world.borrow_mut();
            for call in w.open_calls_mut() {
                if contexts.get(call.vm) == Some(&Some(call.root_context)) {
                    call.answered = true;
                }
            }
            w.settle_calls();
        }
        for (i, ctx) in contexts.iter().enumerate() {
            let Some(ctx) = *ctx else { continue };
            let f = &mut self.filters[i];
            let ex = f.vm.borrow_mut().exports.clone();
            let c = ctx as i32;
            // Envoy: on_log (access log) before on_done and on_delete.
            self.world.borrow_mut().trace_callback(i, ctx, "on_log");
            let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cb) = &ex.on_log {
                    cb.call(&mut *s, c)?;
                }
                if let Some(cb) = &ex.on_done {
                    cb.call(&mut *s, c)?;
                }
                if let Some(cb) = &ex.on_delete {
                    cb.call(&mut *s, c)?;
                }
                Ok(())
            });
            f.vm.borrow_mut().forget_context(ctx);
        }
        // Header maps are gone once the stream is.
        self.streams.borrow_mut().remove(&id);
    }
}

/// Envoy's HTTP/1 codec hands filters `:authority`, `:path`, `:method`,
/// `:scheme` first, in that order, whatever order the client used.
fn envoy_order(h: &Headers) -> Headers {
    const PSEUDO: [&str; 4] = [":authority", ":path", ":method", ":scheme"];
    let mut out = Headers(Vec::with_capacity(h.len() + 2));
    for p in PSEUDO {
        if let Some(v) = h.get(p) {
            out.0.push((p.to_owned(), v.to_vec()));
        }
    }
    out.0.extend(
        h.0.iter()
            .filter(|(k, _)| !PSEUDO.contains(&k.as_str()))
            .cloned(),
    );
    out
}

fn uuid(r: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = String::with_capacity(32);
    for b in r {
        h.push(HEX[usize::from(b >> 4)] as char);
        h.push(HEX[usize::from(b & 15)] as char);
    }
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
