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

  async dispatch(method: string, input: unknown, ctx: CallContext): Promise<CallOutcome> {
    if (typeof method !== 'string' || !Object.hasOwn(api, method)) {
      return fail({ type: 'bad_input', message: `Unknown API method ${JSON.stringify(method)}.`, details: { method } });
    }
    const name = method as MethodName;
    let parsed: unknown;
    try {
      parsed = api[name].input.parse(input, '');
    } catch (error) {
      if (error instanceof SchemaError) {
        return fail({ type: 'bad_input', message: `${name}: ${error.message}`, details: { path: error.path, expected: error.expected } });
      }
      throw error;
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
    this.onInternalError_(method, error);
    const message = error instanceof Error ? error.message : String(error);
    return { type: 'internal', message: `Something went wrong in ${method}: ${message}. Details are in the log.` };
  }
}

function fail(error: ApiError): CallOutcome {
  return { ok: false, error };
}
