// The fetch API (workers, Deno, Bun, Node's own fetch): a handler wrapped so
// the filter's decision comes first. A reply becomes the Response; a
// forwarded request reaches the handler rewritten as the upstream would
// receive it, with the decision; response headers are added on the way out.

/** A fetch `Request` as the engine's request. */
export function fromFetch(request) {
  const url = new URL(request.url);
  const headers = {};
  for (const [name, value] of request.headers) {
    if (name === 'host') continue;
    headers[name] = value;
  }
  return {
    method: request.method,
    path: url.pathname + url.search,
    authority: request.headers.get('host') ?? url.host,
    scheme: url.protocol.replace(/:$/, ''),
    headers,
  };
}

/** The fetch `Request` the upstream would receive. */
export function toFetch(request, decision) {
  const url = new URL(request.url);
  const upstream = new URL(decision.upstream.path || '/', url.origin);
  const headers = new Headers();
  for (const [name, value] of decision.upstream.headers) headers.append(name, value);
  return new Request(upstream, {
    method: request.method,
    headers,
    body: ['GET', 'HEAD'].includes(request.method) ? undefined : request.body,
    duplex: 'half',
    redirect: request.redirect,
    signal: request.signal,
  });
}

/** The decision's local reply as a fetch `Response`. */
export function replyOf(decision) {
  const { status, headers, body } = decision.reply;
  return new Response(body, { status, headers: new Headers(headers) });
}

/**
 * @param {import('./index.js').Engine} engine
 * @param {(request: Request, decision: import('./index.js').Decision, ...rest: any[]) => Response | Promise<Response>} handler
 * @param {import('./index.js').AuthorizeOptions} [options]
 */
export function withSwitchyard(engine, handler, options = {}) {
  return async function switchyardHandler(request, ...rest) {
    const decision = await engine.authorize(fromFetch(request), options);
    if (decision.reply) return replyOf(decision);
    const response = await handler(toFetch(request, decision), decision, ...rest);
    if (decision.responseHeaders.length === 0) return response;
    const out = new Response(response.body, response);
    for (const [name, value] of decision.responseHeaders) out.headers.set(name, value);
    return out;
  };
}
