import type { Engine, AuthorizeOptions, Decision, Request } from './index.js';

/** Express/Connect middleware: replies as the filter would, or rewrites `req` and sets `req.switchyard`. */
export function switchyard(
  engine: Engine,
  options?: { authorize?: AuthorizeOptions; explain?: boolean },
): (req: any, res: any, next: (err?: unknown) => void) => void;
/** A Node IncomingMessage as the engine's request (repeated headers kept apart). */
export function fromNode(req: any): Request;
/** Rewrites a Node request into the one the upstream would receive. */
export function applyToNode(req: any, decision: Decision): void;

declare global {
  namespace Express {
    interface Request {
      switchyard?: Decision;
    }
  }
}
