// Errors cross every process boundary as tagged data, never as thrown class instances:
// structured clone and JSON both drop prototypes, so the `type` tag is the contract.

/** Expected failures a user or caller can act on, kept apart from `internal` (a bug). */
export const EXPECTED_ERROR_TYPES = ['bad_input', 'not_found', 'conflict', 'unsupported', 'unauthorized', 'cancelled'] as const;
export type ExpectedErrorType = (typeof EXPECTED_ERROR_TYPES)[number];
export type ErrorType = ExpectedErrorType | 'internal';

export interface ApiError {
  type: ErrorType;
  message: string;
  details?: unknown;
}

/** Thrown inside the core for expected failures; the registry turns it into an ApiError. */
export class ExpectedError extends Error {
  readonly type: ExpectedErrorType;
  readonly details?: unknown;
  constructor(type: ExpectedErrorType, message: string, details?: unknown) {
    super(message);
    this.name = 'ExpectedError';
    this.type = type;
    this.details = details;
  }
}

export const badInput = (message: string, details?: unknown) => new ExpectedError('bad_input', message, details);
export const notFound = (message: string, details?: unknown) => new ExpectedError('not_found', message, details);
export const conflict = (message: string, details?: unknown) => new ExpectedError('conflict', message, details);
export const unsupported = (message: string, details?: unknown) => new ExpectedError('unsupported', message, details);
export const cancelled = (message: string, details?: unknown) => new ExpectedError('cancelled', message, details);

export function isApiError(value: unknown): value is ApiError {
  return typeof value === 'object' && value !== null && typeof (value as ApiError).type === 'string' && typeof (value as ApiError).message === 'string';
}

/** Client-side view of a failed call: keeps the tag so UI code can branch on `type`. */
export class ApiCallError extends Error {
  readonly type: ErrorType;
  readonly details?: unknown;
  constructor(error: ApiError) {
    super(error.message);
    this.name = 'ApiCallError';
    this.type = error.type;
    this.details = error.details;
  }
}
