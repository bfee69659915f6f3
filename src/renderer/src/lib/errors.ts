import { ApiCallError } from '../../../shared/errors';

/** Plain words for any failure. Never a stack: artists can act on the core's message, not on a trace. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiCallError) return error.message;
  if (error instanceof Error && error.message) return error.message;
  return 'Something went wrong, and the app could not say what.';
}

export function isCancelled(error: unknown): boolean {
  return error instanceof ApiCallError && error.type === 'cancelled';
}

/**
 * Which input field a `bad_input` error is about, so the form can show it beside that field.
 * The core's schema errors read "`source.path`: expected …"; a `details.path` or `details.field`
 * string is preferred when the core sends one.
 */
export function fieldOf(error: unknown): string | null {
  if (!(error instanceof ApiCallError) || error.type !== 'bad_input') return null;
  const details = error.details as { path?: unknown; field?: unknown } | undefined;
  if (typeof details?.path === 'string') return details.path;
  if (typeof details?.field === 'string') return details.field;
  const match = /^([A-Za-z_][\w.[\]]*): /.exec(error.message);
  return match ? match[1] : null;
}

/**
 * The message to show beside the field a `bad_input` error is about. The core's schema message
 * names the method and the input path ("datasets.update: name: expected …"), which is noise once
 * the error sits under the field it concerns.
 */
export function fieldErrorMessage(error: unknown): string {
  const expected = error instanceof ApiCallError ? (error.details as { expected?: unknown } | undefined)?.expected : undefined;
  if (typeof expected !== 'string') return errorMessage(error);
  if (expected === 'a non-empty string') return 'This cannot be empty.';
  const most = /^at most (\d+) characters$/.exec(expected);
  if (most) return `Keep this to ${most[1]} characters or fewer.`;
  return `Expected ${expected}.`;
}
