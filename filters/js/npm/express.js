// Express/Connect middleware: the filter's decision for each request, made
// by an Engine you compiled once. A reply is sent as the filter would send
// it; a forwarded request goes on to your handlers as the upstream would
// receive it (path and headers rewritten), with the decision on
// `req.switchyard` and the served-version header on the response.

/**
 * @param {import('./index.js').Engine} engine
 * @param {{ authorize?: import('./index.js').AuthorizeOptions, explain?: boolean }} [options]
 */
export function switchyard(engine, options = {}) {
  return function switchyardMiddleware(req, res, next) {
    let request;
    try {
      request = fromNode(req);
    } catch (err) {
      res.status(400).type('text/plain').send('bad request\n');
      return;
    }
    engine
      .authorize(request, { ...options.authorize, explain: options.explain ?? false })
      .then((decision) => {
        req.switchyard = decision;
        if (decision.reply) {
          const { status, headers, body } = decision.reply;
          // Node's own setHeader: Express's res.set would add a charset.
          const grouped = new Map();
          for (const [name, value] of headers) grouped.set(name, [...(grouped.get(name) ?? []), value]);
          res.statusCode = status;
          for (const [name, values] of grouped) res.setHeader(name, values.length === 1 ? values[0] : values);
          res.end(body);
          return;
        }
        applyToNode(req, decision);
        for (const [name, value] of decision.responseHeaders) res.setHeader(name, value);
        next();
      }, next);
  };
}

/** A Node `IncomingMessage` as the engine's request. */
export function fromNode(req) {
  const headers = {};
  // rawHeaders keeps repeated headers apart (Node joins most of them).
  const raw = req.rawHeaders ?? [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name === 'host') continue;
    const prev = headers[name];
    headers[name] = prev === undefined ? raw[i + 1] : [].concat(prev, raw[i + 1]);
  }
  return {
    method: req.method,
    path: req.originalUrl ?? req.url,
    authority: req.headers.host ?? 'localhost',
    scheme: req.protocol ?? (req.socket?.encrypted ? 'https' : 'http'),
    headers,
  };
}

/** Rewrites `req` into the request the upstream would receive. */
export function applyToNode(req, decision) {
  const host = req.headers.host;
  for (const name of Object.keys(req.headers)) delete req.headers[name];
  if (host !== undefined) req.headers.host = host;
  for (const [name, value] of decision.upstream.headers) {
    const prev = req.headers[name];
    req.headers[name] = prev === undefined ? value : `${prev}, ${value}`;
  }
  if (decision.upstream.path && decision.upstream.path !== (req.originalUrl ?? req.url)) {
    req.url = decision.upstream.path;
  }
}
