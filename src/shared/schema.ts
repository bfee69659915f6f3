// A deliberately small input validator: every API method declares its input with these,
// the registry checks before the handler runs, and `Infer` gives the handler its type.
// Errors name the offending path (e.g. `source.paths[2]`) and what was expected.
// Input is hostile until parsed: keys and tags are looked up as own properties only (a key named
// `constructor` or `__proto__` is not a field), values are echoed in messages only in short,
// flat form, and parsing throws nothing but SchemaError for any JSON value.

/** What a schema accepts, for tools that walk the contract (the schema fuzzer, docs). */
export type SchemaInfo =
  | { kind: 'string'; min: number; max: number }
  | { kind: 'number' | 'int'; min: number; max: number }
  | { kind: 'boolean' }
  | { kind: 'literal'; value: string | number | boolean }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'optional' | 'nullable'; inner: Schema<unknown> }
  | { kind: 'array'; item: Schema<unknown>; min: number; max: number }
  | { kind: 'object'; shape: Readonly<Record<string, Schema<unknown>>> }
  | { kind: 'variant'; field: string; options: Readonly<Record<string, Schema<object>>> }
  | { kind: 'empty' };

export interface Schema<T> {
  readonly kind: SchemaInfo['kind'];
  readonly info: SchemaInfo;
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

/** A value as an error message may show it: short strings and numbers quoted, anything else by type. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return value.length <= 40 ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, 40))}… (${value.length} characters)`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return describe(value);
}

const own = (object: object, key: string): boolean => Object.hasOwn(object, key);

function make<T>(info: SchemaInfo, parse: (value: unknown, path: string) => T): Schema<T> {
  return { kind: info.kind, info, parse };
}

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

export interface StringOptions {
  min?: number;
  max?: number;
  trim?: boolean;
}

export const v = {
  string(opts: StringOptions = {}): Schema<string> {
    const { min = 0, max = 10_000, trim = false } = opts;
    return make({ kind: 'string', min, max }, (value, path) => {
      if (typeof value !== 'string') throw new SchemaError(path, `a string, got ${describe(value)}`);
      const s = trim ? value.trim() : value;
      if (s.length < min) throw new SchemaError(path, min === 1 ? 'a non-empty string' : `at least ${min} characters`);
      if (s.length > max) throw new SchemaError(path, `at most ${max} characters, got ${s.length}`);
      if (s.includes('\0')) throw new SchemaError(path, 'a string without NUL characters');
      return s;
    });
  },
  number(opts: { min?: number; max?: number } = {}): Schema<number> {
    const { min = -Number.MAX_VALUE, max = Number.MAX_VALUE } = opts;
    return make({ kind: 'number', min, max }, (value, path) => {
      if (typeof value !== 'number' || !Number.isFinite(value)) throw new SchemaError(path, `a finite number, got ${typeof value === 'number' ? value : describe(value)}`);
      if (value < min || value > max) throw new SchemaError(path, `a number in [${min}, ${max}], got ${value}`);
      return value;
    });
  },
  int(opts: { min?: number; max?: number } = {}): Schema<number> {
    const { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = opts;
    return make({ kind: 'int', min, max }, (value, path) => {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new SchemaError(path, `an integer, got ${shown(value)}`);
      if (value < min || value > max) throw new SchemaError(path, `an integer in [${min}, ${max}], got ${value}`);
      return value;
    });
  },
  boolean(): Schema<boolean> {
    return make({ kind: 'boolean' }, (value, path) => {
      if (typeof value !== 'boolean') throw new SchemaError(path, `a boolean, got ${describe(value)}`);
      return value;
    });
  },
  literal<const L extends string | number | boolean>(lit: L): Schema<L> {
    return make({ kind: 'literal', value: lit }, (value, path) => {
      if (value !== lit) throw new SchemaError(path, `${JSON.stringify(lit)}, got ${shown(value)}`);
      return lit;
    });
  },
  enum<const E extends readonly string[]>(values: E): Schema<E[number]> {
    return make({ kind: 'enum', values }, (value, path) => {
      if (typeof value !== 'string' || !values.includes(value)) {
        throw new SchemaError(path, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${shown(value)}`);
      }
      return value as E[number];
    });
  },
  optional<T>(inner: Schema<T>): Schema<T | undefined> {
    return make({ kind: 'optional', inner }, (value, path) => (value === undefined ? undefined : inner.parse(value, path)));
  },
  nullable<T>(inner: Schema<T>): Schema<T | null> {
    return make({ kind: 'nullable', inner }, (value, path) => (value === null ? null : inner.parse(value, path)));
  },
  array<T>(item: Schema<T>, opts: { min?: number; max?: number } = {}): Schema<T[]> {
    const { min = 0, max = 100_000 } = opts;
    return make({ kind: 'array', item, min, max }, (value, path) => {
      if (!Array.isArray(value)) throw new SchemaError(path, `an array, got ${describe(value)}`);
      if (value.length < min) throw new SchemaError(path, `at least ${min} item(s)`);
      if (value.length > max) throw new SchemaError(path, `at most ${max} items, got ${value.length}`);
      // An index loop, not map(): holes in a sparse array are checked as the undefined they read as.
      const out: T[] = [];
      for (let i = 0; i < value.length; i++) out.push(item.parse(value[i], `${path}[${i}]`));
      return out;
    });
  },
  object<S extends Record<string, Schema<unknown>>>(shape: S): Schema<{ [K in keyof S]: Infer<S[K]> } extends infer O ? OptionalUndefined<O> : never> {
    return make({ kind: 'object', shape }, (value, path) => {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new SchemaError(path, `an object, got ${describe(value)}`);
      }
      const input = value as Record<string, unknown>;
      for (const key of Object.keys(input)) {
        if (!own(shape, key)) throw new SchemaError(join(path, key.length <= 40 ? key : `${key.slice(0, 40)}…`), 'no such field (unknown key)');
      }
      const out: Record<string, unknown> = {};
      for (const [key, schema] of Object.entries(shape)) {
        const parsed = schema.parse(own(input, key) ? input[key] : undefined, join(path, key));
        if (parsed !== undefined) out[key] = parsed;
      }
      return out as never;
    });
  },
  /** Discriminated union on a `kind` field; the error lists the allowed kinds. */
  variant<const S extends Record<string, Schema<object>>>(field: string, options: S): Schema<Infer<S[keyof S]>> {
    return make({ kind: 'variant', field, options }, (value, path) => {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SchemaError(path, `an object, got ${describe(value)}`);
      const tag = own(value, field) ? (value as Record<string, unknown>)[field] : undefined;
      const schema = typeof tag === 'string' && own(options, tag) ? options[tag] : undefined;
      if (!schema) {
        throw new SchemaError(
          join(path, field),
          `one of ${Object.keys(options)
            .map((x) => JSON.stringify(x))
            .join(', ')}, got ${shown(tag)}`,
        );
      }
      return schema.parse(value, path) as Infer<S[keyof S]>;
    });
  },
  empty(): Schema<Record<string, never>> {
    return make({ kind: 'empty' }, (value, path) => {
      if (value === undefined || value === null) return {};
      if (typeof value === 'object' && !Array.isArray(value)) {
        const key = Object.keys(value as object)[0];
        if (key === undefined) return {};
        throw new SchemaError(join(path, key.length <= 40 ? key : `${key.slice(0, 40)}…`), 'no such field (this method takes no input)');
      }
      throw new SchemaError(path, `no input (an empty object), got ${describe(value)}`);
    });
  },
};

type OptionalKeys<O> = { [K in keyof O]: undefined extends O[K] ? K : never }[keyof O];
type OptionalUndefined<O> = { [K in Exclude<keyof O, OptionalKeys<O>>]: O[K] } & { [K in OptionalKeys<O>]?: O[K] } extends infer R ? { [K in keyof R]: R[K] } : never;
