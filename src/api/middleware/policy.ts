// The request policy every route answers behind: the edge (who is asking, request id, headers;
// metrics and audit of the outcome) around the layers that apply to this request, in order.
//
// It wraps each route handler (and the not-found handler) instead of sitting in app.use('*'):
// with any middleware matched, Hono runs the chain through its async compose and
// @hono/node-server writes the response only after a few microtask hops, with a close listener
// per request. A request no layer has to act on (a probe on a public path) is answered
// synchronously, as by a bare handler: 1.3x the /healthz throughput on our machines
// (docs/benchmarks.md). A request that needs a layer runs them through hono/combine.
import type { Context, MiddlewareHandler, Next } from 'hono';
import { every } from 'hono/combine';
import type { AppEnv } from '../types.js';
import type { Edge } from './edge.js';

type Answer = Response | Promise<Response | void> | void;
/** A route handler, a route middleware (validator) or the not-found handler. */
export type AnyHandler = (c: Context<AppEnv>, next: Next) => Answer;

export interface PolicyOptions {
  edge: Edge;
  /** The layers this request must pass, in order; empty when none has anything to do. */
  layers(c: Context<AppEnv>): MiddlewareHandler<AppEnv>[];
  /** Turns a thrown error into the response (the app's error handler). */
  onError(err: unknown, c: Context<AppEnv>): Response;
}

export type Wrap = (handler: AnyHandler) => (c: Context<AppEnv>, next: Next) => Response | Promise<Response>;

/**
 * The Response a wrapped handler produced. A validator returns what its next() returned, which
 * is Hono's Context itself (compose has already put the handler's Response in c.res); a handler
 * that wrote to c.res returns nothing.
 */
function answerOf(c: Context<AppEnv>, res: unknown): Response {
  return res === undefined || res === c ? c.res : (res as Response);
}

export function policy(opts: PolicyOptions): Wrap {
  const { edge, onError } = opts;
  const finish = (c: Context<AppEnv>, res: unknown, start: number): Response => {
    const out = answerOf(c, res);
    edge.end(c, out.status, start);
    return out;
  };
  const fail = (c: Context<AppEnv>, err: unknown, start: number): Response => finish(c, onError(err, c), start);

  return (handler) => (c, next) => {
    // A route's validators and handler are all wrapped; the policy runs once, at the first.
    if (edge.began(c)) return handler(c, next) as Response | Promise<Response>;
    const start = edge.begin(c);
    let answer: Answer;
    try {
      const layers = opts.layers(c);
      answer =
        layers.length === 0
          ? handler(c, next)
          : (every(...(layers as MiddlewareHandler[]))(c, async () => {
              const res: unknown = await handler(c, next);
              if (res !== undefined && res !== c) c.res = res as Response;
            }).then(() => c.res) as Promise<Response>);
    } catch (err) {
      return fail(c, err, start);
    }
    return answer instanceof Promise
      ? answer.then(
          (res) => finish(c, res, start),
          (err: unknown) => fail(c, err, start),
        )
      : finish(c, answer, start);
  };
}
