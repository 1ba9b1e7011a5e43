// The package's API over the wasm-bindgen bindings, shared by the Node
// (node.js) and web (web.js) entry points, which load the one .wasm and
// call bind(). Every call into the module passes JSON text and gets
// {"ok": …} or {"error": …} back, so a bad input becomes a typed error
// here and never an exception thrown half-way through the module.

let wasm = null;

/** @internal Called once by the entry point with the initialised bindings. */
export function bind(bindings) {
  wasm = bindings;
}

/** Every error this package throws: `kind`, and `field` naming where. */
export class SwitchyardError extends Error {
  constructor(e) {
    super(e.field ? `${e.field}: ${e.message}` : e.message);
    this.name = new.target.name;
    this.kind = e.kind;
    this.field = e.field ?? '';
    this.section = e.section ?? null;
    this.detail = e.message;
  }
}
/** A configuration the filter would reject, with the same field and message. */
export class ConfigError extends SwitchyardError {}
/** A request that is not a request (a header that is not a string…). */
export class RequestError extends SwitchyardError {}
/** A bad option to a call (`nowMs: "soon"`). */
export class OptionsError extends SwitchyardError {}
/** A call the engine cannot take now (used after free(), unknown authorize id…). */
export class StateError extends SwitchyardError {}

const ERRORS = { config: ConfigError, request: RequestError, options: OptionsError, state: StateError };

function toError(e) {
  const Kind = ERRORS[e.kind] ?? SwitchyardError;
  return new Kind(e);
}

function unwrap(text) {
  const answer = JSON.parse(text);
  if (answer.error) throw toError(answer.error);
  return answer.ok;
}

// JSON text for the module; what cannot be JSON (a cycle, a BigInt) is the caller's error.
function json(value, kind, field) {
  if (kind === 'config' && typeof value === 'string') return value;
  let text;
  try {
    text = JSON.stringify(value ?? {});
  } catch (err) {
    throw toError({ kind, field, message: `not JSON-serialisable: ${err.message}` });
  }
  if (text === undefined) throw toError({ kind, field, message: 'not JSON-serialisable' });
  return text;
}

const POLICIES = ['auth', 'router', 'timeouts', 'shadow'];

function policyOf(options, kind) {
  const policy = options?.policy ?? undefined;
  if (policy !== undefined && !POLICIES.includes(policy)) {
    throw toError({ kind, field: 'policy', message: `unknown policy ${JSON.stringify(policy)}; expected one of ${POLICIES.join(', ')}` });
  }
  return policy;
}

function decideOptions(o = {}) {
  if (o === null || typeof o !== 'object') throw new OptionsError({ kind: 'options', field: 'options', message: 'expected an object' });
  const out = { nowMs: o.nowMs ?? Date.now(), explain: Boolean(o.explain) };
  if (o.arrivedMs !== undefined) out.arrivedMs = o.arrivedMs;
  if (o.random !== undefined) out.random = o.random;
  return out;
}

function ready() {
  if (!wasm) throw new StateError({ kind: 'state', field: '', message: 'the module is not initialised' });
  return wasm;
}

/**
 * A compiled configuration: the chain's `{auth, router, timeouts, shadow}`
 * or one filter's (`{policy: 'router'}`). Compile once, decide many times.
 */
export class Engine {
  #w;
  #jwks = new Map();
  // route()'s answers by index, fetched from the module once.
  #outcomes = null;

  constructor(inner) {
    if (!inner) throw new StateError({ kind: 'state', field: '', message: 'use Engine.compile(config)' });
    this.#w = inner;
  }

  /** Compiles, or throws a ConfigError naming the field. */
  static compile(config, options = {}) {
    const w = ready();
    const policy = policyOf(options, 'options');
    const text = json(config, 'config', '');
    const seed = Math.floor(Math.random() * Number.MAX_SAFE_INTEGER);
    try {
      return new Engine(w.WasmEngine.compile(text, policy, seed));
    } catch (e) {
      if (typeof e === 'string') unwrap(e);
      throw e;
    }
  }

  /** Validates without keeping the result; never throws. */
  static check(config, options = {}) {
    try {
      const w = ready();
      const policy = policyOf(options, 'options');
      return unwrap(w.check(json(config, 'config', ''), policy));
    } catch (e) {
      if (e instanceof SwitchyardError) {
        return { ok: false, errors: [{ kind: e.kind, field: e.field, message: e.detail, ...(e.section ? { section: e.section } : {}) }] };
      }
      return { ok: false, errors: [{ kind: 'config', field: '', message: String(e?.message ?? e) }] };
    }
  }

  #inner() {
    if (!this.#w) throw new StateError({ kind: 'state', field: '', message: 'this engine was freed' });
    return this.#w;
  }

  /**
   * The decision for a request whose identity the caller already verified
   * (`request.claims`): path, router, timeouts, shadow.
   */
  decide(request, options = {}) {
    const w = this.#inner();
    return unwrap(w.decide(json(request, 'request', 'request'), JSON.stringify(decideOptions(options))));
  }

  /**
   * The router's version and rule alone — `{version, rule}`, or `{status}`
   * when the path is refused — for hot paths: the same answer as
   * `decide(request).router`, without building the rest of the decision.
   */
  route(request, options = {}) {
    const w = this.#inner();
    const random = options.random ?? Number.NaN;
    const flat = compact(request);
    if (flat !== null) {
      const at = w.route_flat(flat, random);
      if (at >= 0) {
        this.#outcomes ??= JSON.parse(w.route_outcomes());
        const [version, rule] = this.#outcomes[at];
        return { version, rule };
      }
      if (at < -1) return { status: -at };
    }
    return unwrap(w.route(json(request, 'request', 'request'), random));
  }

  /**
   * Auth's full decision (JWT, API key, basic, ext auth), then every other
   * policy on the identity it verified. `fetch` brings remote key sets and
   * ext-auth answers; `clusters` maps an Envoy cluster name to a base URL
   * (default `https://<authority>`).
   */
  async authorize(request, options = {}) {
    const fetchFn = options.fetch ?? globalThis.fetch;
    const clusters = options.clusters ?? {};
    const now = options.nowMs === undefined ? () => Date.now() : () => options.nowMs;
    const opts = decideOptions({ ...options, nowMs: now() });
    let step = unwrap(this.#inner().authorize_begin(json(request, 'request', 'request'), JSON.stringify(opts)));
    while (step.state !== 'done') {
      let answer;
      if (step.state === 'needJwks') {
        for (const p of step.refresh ?? []) this.#loadJwks(p, step, fetchFn, clusters, now).catch(() => {});
        answer = { keys: await this.#loadJwks(step.provider, step, fetchFn, clusters, now) };
      } else {
        answer = await askExtAuth(step, fetchFn, clusters);
      }
      answer.nowMs = now();
      step = unwrap(this.#inner().authorize_resume(step.id, JSON.stringify(answer)));
    }
    return step.decision;
  }

  // One fetch per provider at a time, however many requests wait for it.
  #loadJwks(provider, step, fetchFn, clusters, now) {
    let inFlight = this.#jwks.get(provider);
    if (!inFlight) {
      inFlight = (async () => {
        let status = -1;
        let body = new Uint8Array();
        try {
          const res = await fetchFn(urlFor(step, clusters), {
            headers: { accept: 'application/json' },
            signal: AbortSignal.timeout(Math.max(1, step.timeoutMs)),
          });
          status = res.status;
          body = new Uint8Array(await res.arrayBuffer());
        } catch {
          status = -1;
        }
        const loaded = JSON.parse(this.#inner().provide_keys(provider, status, body, now()));
        return !loaded.error;
      })().finally(() => this.#jwks.delete(provider));
      this.#jwks.set(provider, inFlight);
    }
    return inFlight;
  }

  /** Frees the module memory this engine holds; later calls throw a StateError. */
  free() {
    if (this.#w) {
      this.#w.free();
      this.#w = null;
    }
  }

  [Symbol.dispose]() {
    this.free();
  }
}

// The request as route()'s compact form: NUL-joined strings, the map built as
// the JSON path builds it (header names in sorted order, cookies folded after
// any cookie header). Anything that form cannot carry exactly (claims, a NUL,
// non-ASCII names, a value that is not a string) goes as JSON instead, whose
// parser gives the same answer or the typed error.
const ASCII = /^[\x01-\x7f]*$/;
function compact(r) {
  if (r === null || typeof r !== 'object') return null;
  let method = 'GET', path = '/', authority = 'localhost', scheme = 'http', headers, cookies;
  // Own keys only, as JSON.stringify sees them; a key set to undefined is
  // left out there, and null is an error the JSON path names.
  for (const k of Object.keys(r)) {
    const v = r[k];
    if (v === undefined) continue;
    switch (k) {
      case 'method': method = v; break;
      case 'path': path = v; break;
      case 'authority': authority = v; break;
      case 'scheme': scheme = v; break;
      case 'headers': headers = v; break;
      case 'cookies': cookies = v; break;
      default: return null; // claims, or a key the JSON parser names in its error
    }
  }
  if (!plain(method) || !plain(path) || !plain(authority) || !plain(scheme)) return null;
  let out = `${method}\0${path}\0${authority}\0${scheme}`;
  let cookieAt = -1;
  const pairs = [];
  if (headers !== undefined) {
    if (!record(headers)) return null;
    const names = Object.keys(headers);
    if (names.length > 1) names.sort();
    for (const name of names) {
      if (!ASCII.test(name)) return null;
      const v = headers[name];
      if (Array.isArray(v)) {
        for (const one of v) {
          if (!plain(one)) return null;
          if (cookieAt < 0 && isCookie(name)) cookieAt = pairs.length;
          pairs.push(name, one);
        }
      } else {
        if (!plain(v)) return null;
        if (cookieAt < 0 && isCookie(name)) cookieAt = pairs.length;
        pairs.push(name, v);
      }
    }
  }
  if (cookies !== undefined) {
    if (!record(cookies)) return null;
    const names = Object.keys(cookies);
    if (names.length) {
      if (names.length > 1) names.sort();
      let folded = '';
      for (const n of names) {
        const v = cookies[n];
        if (!ASCII.test(n) || !plain(v)) return null;
        folded += folded ? `; ${n}=${v}` : `${n}=${v}`;
      }
      if (cookieAt >= 0) pairs[cookieAt + 1] += `; ${folded}`;
      else pairs.push('cookie', folded);
    }
  }
  for (let i = 0; i < pairs.length; i++) out += `\0${pairs[i]}`;
  return out;
}

const record = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const plain = (v) => typeof v === 'string' && !v.includes('\0');
const isCookie = (name) => name.length === 6 && name.toLowerCase() === 'cookie';

function urlFor(step, clusters) {
  const base = clusters[step.cluster] ?? `https://${step.authority}`;
  return new URL(step.path, base.endsWith('/') ? base : `${base}/`).toString();
}

async function askExtAuth(step, fetchFn, clusters) {
  const headers = {};
  for (const [k, v] of step.headers) {
    if (!k.startsWith(':')) headers[k] = v;
  }
  try {
    const res = await fetchFn(urlFor(step, clusters), {
      method: 'GET',
      headers,
      signal: AbortSignal.timeout(Math.max(1, step.timeoutMs)),
    });
    return { status: res.status, headers: [...res.headers], body: await res.text() };
  } catch {
    return { status: null };
  }
}

/**
 * The shadow filter's comparison of a primary and a shadow response:
 * status, headers, and every JSON-pointer difference of the bodies.
 * `options` is the shadow configuration's `compare` block.
 */
export function diffResponses(primary, shadow, options = {}) {
  const w = ready();
  return unwrap(w.diff_responses(json(primary, 'request', 'primary'), json(shadow, 'request', 'shadow'), json(options, 'options', 'options')));
}

/** The engine's version (playground share links carry it). */
export function version() {
  return ready().version();
}
