// The one error shape of the control API: {"error": code, "message": ..., "details": {...}}.
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from '@hono/zod-openapi';

export const ERROR_CODES = [
  'invalid_request',
  'not_found',
  'method_not_allowed',
  'unauthorized',
  'forbidden',
  'read_only',
  'payload_too_large',
  'rate_limited',
  'internal_error',
  'service_unavailable',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export const ErrorSchema = z
  .object({
    error: z.enum(ERROR_CODES),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
    request_id: z.string().optional(),
  })
  .openapi('Error');

export type ErrorBody = z.infer<typeof ErrorSchema>;

const STATUS_CODES: Record<number, ErrorCode> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  429: 'rate_limited',
  503: 'service_unavailable',
};

export function codeForStatus(status: number): ErrorCode {
  return STATUS_CODES[status] ?? (status >= 500 ? 'internal_error' : 'invalid_request');
}

export function problem<S extends ContentfulStatusCode>(
  c: Context,
  status: S,
  code: ErrorCode,
  message: string,
  details?: Record<string, unknown>,
  headers?: Record<string, string>,
) {
  const body: ErrorBody = { error: code, message, ...(details ? { details } : {}) };
  const requestId = c.get('requestId') as string | undefined;
  if (requestId) body.request_id = requestId;
  return c.json(body, status, headers);
}

type ErrorResponse = { description: string; content: { 'application/json': { schema: typeof ErrorSchema } } };

/** OpenAPI response entries for the errors a route can return, typed per status code. */
export function errorResponses<const S extends readonly number[]>(...statuses: S): { [K in S[number]]: ErrorResponse } {
  return Object.fromEntries(
    statuses.map((s) => [s, { description: codeForStatus(s), content: { 'application/json': { schema: ErrorSchema } } }]),
  ) as { [K in S[number]]: ErrorResponse };
}
