// A deliberately small input validator: every API method declares its input with these,
// the registry checks before the handler runs, and `Infer` gives the handler its type.
// Errors name the offending path (e.g. `source.paths[2]`) and what was expected.

export interface Schema<T> {
  readonly kind: string;
  parse(value: unknown, path: string): T;
}
export type Infer<S> = S extends Schema<infer T> ? T : never;

export class SchemaError extends Error {
  constructor(
    readonly path: string,
    readonly expected: string,
  ) {
    super(`${path || 'input'}: expected ${expected}`);
    this.name = 'SchemaError';
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function make<T>(kind: string, parse: (value: unknown, path: string) => T): Schema<T> {
  return { kind, parse };
}

export interface StringOptions {
  min?: number;
  max?: number;
  trim?: boolean;
}

export const v = {
  string(opts: StringOptions = {}): Schema<string> {
    const { min = 0, max = 10_000, trim = false } = opts;
    return make('string', (value, path) => {
      if (typeof value !== 'string') throw new SchemaError(path, `a string, got ${describe(value)}`);
      const s = trim ? value.trim() : value;
      if (s.length < min) throw new SchemaError(path, min === 1 ? 'a non-empty string' : `at least ${min} characters`);
      if (s.length > max) throw new SchemaError(path, `at most ${max} characters`);
      if (s.includes('\0')) throw new SchemaError(path, 'a string without NUL characters');
      return s;
    });
  },
  number(opts: { min?: number; max?: number } = {}): Schema<number> {
    const { min = -Number.MAX_VALUE, max = Number.MAX_VALUE } = opts;
    return make('number', (value, path) => {
      if (typeof value !== 'number' || !Number.isFinite(value)) throw new SchemaError(path, `a finite number, got ${describe(value)}`);
      if (value < min || value > max) throw new SchemaError(path, `a number in [${min}, ${max}], got ${value}`);
      return value;
    });
  },
  int(opts: { min?: number; max?: number } = {}): Schema<number> {
    const { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = opts;
    return make('int', (value, path) => {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new SchemaError(path, `an integer, got ${describe(value)}`);
      if (value < min || value > max) throw new SchemaError(path, `an integer in [${min}, ${max}], got ${value}`);
      return value;
    });
  },
  boolean(): Schema<boolean> {
    return make('boolean', (value, path) => {
      if (typeof value !== 'boolean') throw new SchemaError(path, `a boolean, got ${describe(value)}`);
      return value;
    });
  },
  literal<const L extends string | number | boolean>(lit: L): Schema<L> {
    return make('literal', (value, path) => {
      if (value !== lit) throw new SchemaError(path, JSON.stringify(lit));
      return lit;
    });
  },
  enum<const E extends readonly string[]>(values: E): Schema<E[number]> {
    return make('enum', (value, path) => {
      if (typeof value !== 'string' || !values.includes(value)) {
        throw new SchemaError(path, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${JSON.stringify(value)}`);
      }
      return value as E[number];
    });
  },
  optional<T>(inner: Schema<T>): Schema<T | undefined> {
    return make('optional', (value, path) => (value === undefined ? undefined : inner.parse(value, path)));
  },
  nullable<T>(inner: Schema<T>): Schema<T | null> {
    return make('nullable', (value, path) => (value === null ? null : inner.parse(value, path)));
  },
  array<T>(item: Schema<T>, opts: { min?: number; max?: number } = {}): Schema<T[]> {
    const { min = 0, max = 100_000 } = opts;
    return make('array', (value, path) => {
      if (!Array.isArray(value)) throw new SchemaError(path, `an array, got ${describe(value)}`);
      if (value.length < min) throw new SchemaError(path, `at least ${min} item(s)`);
      if (value.length > max) throw new SchemaError(path, `at most ${max} items`);
      return value.map((x, i) => item.parse(x, `${path}[${i}]`));
    });
  },
  object<S extends Record<string, Schema<unknown>>>(shape: S): Schema<{ [K in keyof S]: Infer<S[K]> } extends infer O ? OptionalUndefined<O> : never> {
    return make('object', (value, path) => {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new SchemaError(path, `an object, got ${describe(value)}`);
      }
      const input = value as Record<string, unknown>;
      for (const key of Object.keys(input)) {
        if (!(key in shape)) throw new SchemaError(path ? `${path}.${key}` : key, 'no such field (unknown key)');
      }
      const out: Record<string, unknown> = {};
      for (const [key, schema] of Object.entries(shape)) {
        const parsed = schema.parse(input[key], path ? `${path}.${key}` : key);
        if (parsed !== undefined) out[key] = parsed;
      }
      return out as never;
    });
  },
  /** Discriminated union on a `kind` field; the error lists the allowed kinds. */
  variant<const S extends Record<string, Schema<object>>>(field: string, options: S): Schema<Infer<S[keyof S]>> {
    return make('variant', (value, path) => {
      if (typeof value !== 'object' || value === null) throw new SchemaError(path, `an object, got ${describe(value)}`);
      const tag = (value as Record<string, unknown>)[field];
      const schema = typeof tag === 'string' ? options[tag] : undefined;
      if (!schema) {
        const p = path ? `${path}.${field}` : field;
        throw new SchemaError(p, `one of ${Object.keys(options).map((x) => JSON.stringify(x)).join(', ')}, got ${JSON.stringify(tag)}`);
      }
      return schema.parse(value, path) as Infer<S[keyof S]>;
    });
  },
  empty(): Schema<Record<string, never>> {
    return make('empty', (value, path) => {
      if (value === undefined || value === null) return {};
      if (typeof value === 'object' && !Array.isArray(value) && Object.keys(value as object).length === 0) return {};
      throw new SchemaError(path, 'no input (an empty object)');
    });
  },
};

type OptionalKeys<O> = { [K in keyof O]: undefined extends O[K] ? K : never }[keyof O];
type OptionalUndefined<O> = { [K in Exclude<keyof O, OptionalKeys<O>>]: O[K] } & { [K in OptionalKeys<O>]?: O[K] } extends infer R
  ? { [K in keyof R]: R[K] }
  : never;
