import type { Engine, AuthorizeOptions, Decision, Request as PolicyRequest } from './index.js';

export function fromFetch(request: Request): PolicyRequest;
export function toFetch(request: Request, decision: Decision): Request;
export function replyOf(decision: Decision): Response;
/** Wraps a fetch handler: the filter's reply, or the handler called with the upstream's request. */
export function withSwitchyard<Rest extends unknown[]>(
  engine: Engine,
  handler: (request: Request, decision: Decision, ...rest: Rest) => Response | Promise<Response>,
  options?: AuthorizeOptions,
): (request: Request, ...rest: Rest) => Promise<Response>;
