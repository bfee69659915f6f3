// The core's one API: method name → input validation → handler → typed result.
// Every outcome is data; nothing thrown inside a handler escapes as an exception.
import { api, type InputOf, type MethodName, type ResultOf } from '../../shared/api';
import type { CallOutcome } from '../../shared/bridge';
import { ExpectedError, type ApiError } from '../../shared/errors';
import { SchemaError } from '../../shared/schema';

export interface CallContext {
  /** Which connection made the call, for logs. */
  client: string;
}

export type Handler<M extends MethodName> = (input: InputOf<M>, ctx: CallContext) => ResultOf<M> | Promise<ResultOf<M>>;
export type Handlers = { [M in MethodName]: Handler<M> };
/** One domain's handlers: the methods named `<domain>` or `<domain>.<verb>`. core.ts spreads them into Handlers. */
export type HandlersOf<D extends string> = { [M in MethodName as M extends D | `${D}.${string}` ? M : never]: Handler<M> };

export interface InternalErrorSink {
  (method: string, error: unknown): void;
}

export class ApiRegistry {
  private readonly handlers_: Handlers;
  private readonly onInternalError_: InternalErrorSink;

  constructor(handlers: Handlers, onInternalError: InternalErrorSink) {
    const missing = (Object.keys(api) as MethodName[]).filter((m) => typeof handlers[m] !== 'function');
    if (missing.length) throw new Error(`API methods without a handler: ${missing.join(', ')}`);
    this.handlers_ = handlers;
    this.onInternalError_ = onInternalError;
  }

  methods(): MethodName[] {
    return Object.keys(api) as MethodName[];
  }

  /**
   * Never throws and never rejects, whatever `method` and `input` are: hosts relay client
   * messages straight here, and a rejection there would end the process.
   */
  async dispatch(method: string, input: unknown, ctx: CallContext): Promise<CallOutcome> {
    if (typeof method !== 'string' || !Object.hasOwn(api, method)) {
      const shownMethod = typeof method === 'string' ? method.slice(0, 100) : typeof method;
      return fail({ type: 'bad_input', message: `Unknown API method ${JSON.stringify(shownMethod)}.`, details: { method: shownMethod } });
    }
    const name = method as MethodName;
    let parsed: unknown;
    try {
      parsed = api[name].input.parse(input, '');
    } catch (error) {
      if (error instanceof SchemaError) {
        return fail({ type: 'bad_input', message: `${name}: ${error.message}`, details: { path: error.path, expected: error.expected } });
      }
      // Hostile shapes the validator was not written for (a stack overflow on absurd nesting, say)
      // are still the caller's input, not a bug in the method.
      if (error instanceof RangeError) return fail({ type: 'bad_input', message: `${name}: the input could not be checked (${errorText(error)}).` });
      return fail(this.toApiError(name, error));
    }
    try {
      const handler = this.handlers_[name] as (input: unknown, ctx: CallContext) => unknown;
      return { ok: true, value: await handler(parsed, ctx) };
    } catch (error) {
      return fail(this.toApiError(name, error));
    }
  }

  private toApiError(method: string, error: unknown): ApiError {
    if (error instanceof ExpectedError) {
      return error.details === undefined ? { type: error.type, message: error.message } : { type: error.type, message: error.message, details: error.details };
    }
    try {
      this.onInternalError_(method, error);
    } catch {
      // A failing log sink must not turn an answer into a crash.
    }
    return { type: 'internal', message: `Something went wrong in ${method}: ${errorText(error)}. Details are in the log.` };
  }
}

/** A thrown value's message, even when it is not an Error or its toString throws. */
function errorText(error: unknown): string {
  try {
    return error instanceof Error ? error.message : String(error);
  } catch {
    return 'an unprintable error';
  }
}

function fail(error: ApiError): CallOutcome {
  return { ok: false, error };
}
