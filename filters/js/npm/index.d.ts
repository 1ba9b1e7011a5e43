// @switchyard/policy: the Switchyard policy core for JavaScript hosts.
// Every decision is the one the Switchyard Envoy filter makes for the same
// configuration and request (checked by shared test vectors).

/** The configuration the Envoy filter takes: the chain's sections, or one filter's (with `{policy}`). */
export type Config = ChainConfig | RouterConfig | AuthConfig | TimeoutsConfig | ShadowConfig | string;

export interface ChainConfig {
  auth?: AuthConfig | null;
  router?: RouterConfig | null;
  timeouts?: TimeoutsConfig | null;
  shadow?: ShadowConfig | null;
  path_normalization?: PathNormalization;
}

export interface PathNormalization {
  /** `reject` (400, the default) or `normalize`: what to do with a path normal form cannot settle. */
  ambiguous?: 'reject' | 'normalize';
}

/** One comparison: exactly one key. */
export type StringMatch =
  | { exact: string }
  | { prefix: string }
  | { suffix: string }
  | { regex: string }
  | { present: boolean };

export type ClaimMatch = StringMatch | { contains: string };

export interface Match {
  path?: StringMatch;
  authority?: StringMatch;
  method?: string[];
  headers?: Record<string, StringMatch>;
  cookies?: Record<string, StringMatch>;
  query?: Record<string, StringMatch>;
  /** Conditions on the claims of the verified credential. */
  claims?: Record<string, ClaimMatch>;
}

export interface RouterConfig {
  version_header?: string;
  default_version: string;
  versions?: string[];
  routes?: Array<{
    name?: string;
    match?: Match;
    version?: string;
    split?: Array<{ version: string; weight: number }>;
    sticky?: { header: string } | { cookie: string } | { claim: string };
  }>;
  override?: { header: string; allow: string[] };
  served_version_header?: string | null;
  path_normalization?: PathNormalization;
}

/** See the README's auth section for every key. */
export interface AuthConfig {
  providers: Array<{ name: string; jwt?: object; api_key?: object; basic?: object; ext_auth?: object }>;
  rules: Array<{
    match?: Match;
    allow?: 'anonymous';
    require?: string[];
    require_any?: string[];
    claims?: Record<string, ClaimMatch>;
  }>;
  identity?: { header: string; from_claim?: string; claims_to_headers?: Record<string, string> };
  dry_run?: boolean;
  /** In Envoy: write verified claims to the `switchyard.claims` property for later filters (default: no). */
  claims_property?: boolean;
  [key: string]: unknown;
}

/** See the README's timeouts section for every key. */
export interface TimeoutsConfig {
  rules?: Array<{ name: string; match?: Match; timeout_ms: number; per_try_timeout_ms?: number; retries?: { attempts: number; on: string[]; status_codes?: number[] } }>;
  deadline?: { inbound: string[]; propagate?: string; min_remaining_ms?: number; max_ms?: number };
  faults?: Array<{ name: string; match?: Match; delay?: { fixed_ms: number; percent?: number }; abort?: { status: number; grpc_status?: number; percent?: number } }>;
  sample_by?: string;
  budget_from?: 'switchyard' | 'envoy_arrival';
  path_normalization?: PathNormalization;
}

/** See the README's shadow section for every key. */
export interface ShadowConfig {
  rules: Array<{ name: string; match?: Match; percent: number; target_cluster: string; mode?: 'mirror' | 'compare' }>;
  sample_by?: string;
  cluster_header?: string;
  tag_header?: string;
  safe?: { methods?: string[]; strip_headers?: string[] };
  compare?: CompareOptions;
  receiver?: { answer_unsafe?: number };
  path_normalization?: PathNormalization;
  [key: string]: unknown;
}

export interface CompareOptions {
  ignore_headers?: string[];
  /** JSON pointers removed from both bodies before comparing (`/timestamp`). */
  ignore_json_paths?: string[];
  max_body_bytes?: number;
  [key: string]: unknown;
}

/** A request as the filter sees it. Header names are case-insensitive; a list is a repeated header. */
export interface Request {
  method?: string;
  path?: string;
  authority?: string;
  scheme?: string;
  headers?: Record<string, string | string[]>;
  cookies?: Record<string, string>;
  /** Claims you verified yourself (`decide`); `authorize` verifies the credential instead. */
  claims?: Record<string, unknown>;
}

export interface DecideOptions {
  /** The clock, ms since the epoch; default `Date.now()`. */
  nowMs?: number;
  /** When the request arrived, if earlier (counts against its timeout budget). */
  arrivedMs?: number;
  /** Add `trace`: every rule tried and why it matched or not. */
  explain?: boolean;
  /** A draw in [0, 1) for random splits and sampling, for reproducible tests. */
  random?: number;
}

export interface AuthorizeOptions extends DecideOptions {
  /** Brings remote JWKS and ext-auth answers; default `globalThis.fetch`. */
  fetch?: (url: string, init?: RequestInit) => Promise<Response>;
  /** Envoy cluster name → base URL (default `https://<authority>`). */
  clusters?: Record<string, string>;
}

export type Header = [name: string, value: string];

export interface Decision {
  /** `forward`: on to the upstream as `upstream`; `reply`: answered with `reply`. */
  action: 'forward' | 'reply';
  reply?: {
    status: number;
    policy: 'path' | 'auth' | 'timeouts' | 'shadow';
    /** Envoy's `%RESPONSE_CODE_DETAILS%` (`switchyard_auth_token_expired`). */
    details: string;
    headers: Header[];
    body: string;
  };
  path: { decidedOn: string; normalized: boolean; rejected?: string };
  auth?: {
    verdict: 'allow' | 'deny';
    rule: string | null;
    provider: string | null;
    reason: string | null;
    subject: string | null;
    claims: Record<string, unknown> | null;
    dryRun: boolean;
    failedOpen: boolean;
  };
  router?: {
    version: string;
    rule: string;
    reason: 'override' | 'route' | 'sticky_split' | 'random_split' | 'default';
    header: string;
    servedVersionHeader: string | null;
    overrideRejected: boolean;
    split?: { bucket: number; total: number; stickyBy: string | null; stickyKey: string | null };
  };
  timeouts?: {
    rule: string | null;
    budgetMs: number | null;
    perTryTimeoutMs: number | null;
    propagatedMs: number | null;
    inboundDeadline: 'absent' | 'malformed' | number;
    capped: boolean;
    retries?: { attempts: number; retryOn: string; grpcRetryOn: string; statusCodes: string };
    fault?: { name: string; delayMs: number | null; aborted: boolean };
  };
  shadow?: {
    mirror: ShadowChoice | null;
    compare: ShadowChoice | null;
    received: boolean;
  };
  /** The request the upstream receives (pseudo-headers left out). */
  upstream: { method: string; path: string; headers: Header[] };
  /** What the filter tells Envoy's router (timeouts, retries); the router consumes these. */
  routerControls: Header[];
  /** Headers added to the upstream's response. */
  responseHeaders: Header[];
  trace?: TraceEntry[];
}

export interface ShadowChoice {
  rule: string;
  outcome: 'shadowed' | 'not_sampled' | 'unsafe_method';
  cluster: string;
}

export interface TraceEntry {
  policy: 'auth' | 'router' | 'timeouts' | 'timeouts.faults' | 'shadow';
  rule: string;
  matched: boolean;
  unmet?: { field: string; expected: string; actual: string | null };
  note?: string;
}

export interface CheckError {
  kind: 'config' | 'options';
  /** The chain section (`router`), when the config is the chain's. */
  section?: string;
  /** Where in the configuration: `routes[0].split`. */
  field: string;
  message: string;
}

export interface ResponseCapture {
  status: number;
  headers?: Header[];
  /** Text, or a JSON value. */
  body?: unknown;
}

export interface ResponseDiff {
  match: boolean;
  status: [primary: number, shadow: number] | null;
  headers: string[];
  /** Every body difference: `"/items/0/id: 1 vs 2"`, or `bytes` for non-JSON bodies. */
  body: string[];
  bodySkipped: boolean;
  summary: string;
}

export class SwitchyardError extends Error {
  readonly kind: 'config' | 'request' | 'options' | 'state';
  readonly field: string;
  readonly section: string | null;
  /** The message without the field. */
  readonly detail: string;
}
export class ConfigError extends SwitchyardError {}
export class RequestError extends SwitchyardError {}
export class OptionsError extends SwitchyardError {}
export class StateError extends SwitchyardError {}

export class Engine {
  private constructor();
  /** Compiles or throws a ConfigError with the field and message the filter logs. */
  static compile(config: Config, options?: { policy?: 'auth' | 'router' | 'timeouts' | 'shadow' }): Engine;
  /** Never throws. */
  static check(config: Config, options?: { policy?: 'auth' | 'router' | 'timeouts' | 'shadow' }): { ok: boolean; errors: CheckError[] };
  decide(request: Request, options?: DecideOptions): Decision;
  /** The router's answer alone (hot paths): what `decide(request).router` says, or the path's 400. */
  route(request: Request, options?: { random?: number }): { version: string; rule: string } | { status: number };
  authorize(request: Request, options?: AuthorizeOptions): Promise<Decision>;
  free(): void;
  [Symbol.dispose](): void;
}

export function diffResponses(primary: ResponseCapture, shadow: ResponseCapture, options?: CompareOptions): ResponseDiff;
export function version(): string;
