// The schema fuzzer: for every method of src/shared/api.ts it builds a valid input from the
// method's own schema, then breaks it at every field (wrong types, inherited property names as keys
// and variant tags, missing fields, huge and non-finite numbers, deep nesting, long strings, NUL,
// holes in arrays) and sends each case through the real registry. Every answer must be `bad_input`
// whose path names the broken field; none may be `internal`, none may throw, no handler may run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type MethodName } from '../../src/shared/api';
import type { CallOutcome } from '../../src/shared/bridge';
import type { Schema } from '../../src/shared/schema';
import { makeCore } from './helpers';
import { FUZZ_SEED, INHERITED_NAMES, nested, rng, withOwnKey } from './seeded';

type AnySchema = Schema<unknown>;
type Key = string | number;

interface Case {
  method: MethodName;
  input: unknown;
  /** The error's path must be this field or lie inside it. */
  expectPath: string;
  what: string;
}

const LONG = 'x'.repeat(1_000_000);
const DEEP_ARRAY = nested(100_000, 'array');
const DEEP_OBJECT = nested(100_000, 'object');
const WRONG_TYPES: [string, unknown][] = [
  ['a string', 'x'],
  ['a number', 7],
  ['a boolean', true],
  ['null', null],
  ['an array', []],
  ['an object', {}],
  ['a deeply nested array', DEEP_ARRAY],
  ['a deeply nested object', DEEP_OBJECT],
];

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** A value the schema accepts, with every optional field present so that every field can be broken. */
function valid(s: AnySchema): unknown {
  const i = s.info;
  switch (i.kind) {
    case 'string':
      return 'a'.repeat(Math.min(Math.max(i.min, 1), i.max));
    case 'number':
      return clamp(0.5, i.min, i.max);
    case 'int':
      return clamp(1, i.min, i.max);
    case 'boolean':
      return true;
    case 'literal':
      return i.value;
    case 'enum':
      return i.values[0];
    case 'optional':
    case 'nullable':
      return valid(i.inner);
    case 'array':
      return Array.from({ length: Math.max(i.min, Math.min(1, i.max)) }, () => valid(i.item));
    case 'object':
      return Object.fromEntries(Object.entries(i.shape).map(([k, v]) => [k, valid(v)]));
    case 'variant':
      return valid(Object.values(i.options)[0]! as AnySchema);
    case 'empty':
      return {};
  }
}

function showPath(keys: readonly Key[]): string {
  return keys.reduce<string>((p, k) => (typeof k === 'number' ? `${p}[${k}]` : p ? `${p}.${k}` : k), '');
}

function setAt(root: unknown, keys: readonly Key[], value: unknown): unknown {
  if (keys.length === 0) return value;
  const [head, ...rest] = keys;
  if (Array.isArray(root)) return root.map((x, i) => (i === head ? setAt(x, rest, value) : x));
  return { ...(root as object), [head!]: setAt((root as Record<string, unknown>)[head as string], rest, value) };
}

/** Values for the position `keys` that break schema `s` there, each with the path its error must name. */
function breakers(s: AnySchema, keys: Key[]): { value: unknown; expectPath: string; what: string }[] {
  const here = showPath(keys);
  const i = s.info;
  const out: { value: unknown; expectPath: string; what: string }[] = [];
  const add = (what: string, value: unknown, at = here) => out.push({ value, expectPath: at, what });
  const wrong = (accepts: (v: unknown) => boolean) => {
    for (const [what, v] of WRONG_TYPES) if (!accepts(v)) add(what, v);
  };
  switch (i.kind) {
    case 'string':
      wrong((v) => typeof v === 'string');
      add('NaN', NaN);
      if (i.max < LONG.length) add('a long string', LONG);
      add(`${i.max + 1} characters`, 'y'.repeat(i.max + 1));
      if (i.max >= 3) add('a NUL character', 'a\0b');
      if (i.min >= 1) add('an empty string', '');
      break;
    case 'number':
    case 'int':
      wrong((v) => typeof v === 'number');
      for (const [what, v] of [
        ['NaN', NaN],
        ['Infinity', Infinity],
        ['-Infinity', -Infinity],
        ['a numeric string', '1'],
        ['a bigint-sized number', 1e308 * 10],
      ] as const)
        add(what, v);
      if (i.max < Number.MAX_SAFE_INTEGER) add('a number above the maximum', i.kind === 'int' ? i.max + 1 : i.max * 2 + 1);
      if (i.min > -Number.MAX_SAFE_INTEGER) add('a number below the minimum', i.kind === 'int' ? i.min - 1 : i.min - Math.abs(i.min) - 1);
      if (i.kind === 'int') {
        add('a fraction', clamp(1, i.min, i.max) + 0.5);
        add('an unsafe integer', 2 ** 53 + 2);
        add('1e300', 1e300);
      }
      break;
    case 'boolean':
      wrong((v) => typeof v === 'boolean');
      add('the string "true"', 'true');
      add('1', 1);
      break;
    case 'literal':
    case 'enum':
      wrong(() => false);
      for (const name of INHERITED_NAMES) add(`"${name}"`, name);
      add('a long string', LONG);
      break;
    case 'optional':
      return breakers(i.inner, keys).filter((b) => b.value !== undefined);
    case 'nullable':
      return breakers(i.inner, keys).filter((b) => b.value !== null);
    case 'array': {
      wrong((v) => Array.isArray(v));
      add('an array-like object', { length: 1, 0: valid(i.item) });
      if (i.max < 200_000)
        add(
          `${i.max + 1} items`,
          Array.from({ length: i.max + 1 }, () => valid(i.item)),
        );
      if (i.min >= 1) add('no items', []);
      // A hole reads as undefined: the item there is missing, and the error says which one.
      if (i.max >= 1) add('a hole', new Array(Math.max(i.min, 1)), `${here}[0]`);
      if (i.max >= 1) {
        const base = valid(s) as unknown[];
        for (const b of breakers(i.item, [...keys, 0])) out.push({ ...b, value: setAt(base, [0], b.value) });
      }
      break;
    }
    case 'object': {
      wrong((v) => typeof v === 'object' && v !== null && !Array.isArray(v));
      const base = valid(s) as Record<string, unknown>;
      for (const name of INHERITED_NAMES) add(`an own key "${name}"`, withOwnKey(base, name, 1), showPath([...keys, name]));
      add('an unknown key', { ...base, sneaky: true }, showPath([...keys, 'sneaky']));
      for (const [k, field] of Object.entries(i.shape)) {
        if (field.info.kind !== 'optional') {
          const { [k]: _gone, ...rest } = base;
          add(`"${k}" missing`, rest, showPath([...keys, k]));
        }
        // A field's breakers are values for the field: placed into an otherwise valid object.
        for (const b of breakers(field, [...keys, k])) out.push({ ...b, value: setAt(base, [k], b.value) });
      }
      break;
    }
    case 'variant': {
      wrong((v) => typeof v === 'object' && v !== null && !Array.isArray(v));
      const base = valid(s) as Record<string, unknown>;
      const tagPath = showPath([...keys, i.field]);
      for (const name of INHERITED_NAMES) add(`tag "${name}"`, withOwnKey(base, i.field, name), tagPath);
      add('tag missing', Object.fromEntries(Object.entries(base).filter(([k]) => k !== i.field)), tagPath);
      add('tag 42', { ...base, [i.field]: 42 }, tagPath);
      // An inherited tag on an object without its own: {} still has a "constructor".
      add('tag only inherited', {}, tagPath);
      for (const option of Object.values(i.options)) {
        for (const b of breakers(option as AnySchema, keys)) if (b.expectPath !== tagPath) out.push(b);
      }
      break;
    }
    case 'empty':
      // No input at all (undefined, null, {}) is what these methods take.
      for (const [what, v] of WRONG_TYPES) if (v !== null && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0)) add(what, v);
      for (const name of INHERITED_NAMES) add(`an own key "${name}"`, withOwnKey({}, name, 1), name);
      break;
  }
  return out;
}

function casesFor(method: MethodName): Case[] {
  return breakers(api[method].input as AnySchema, []).map((b) => ({ method, input: b.value, expectPath: b.expectPath, what: b.what }));
}

const cleanups: (() => Promise<void>)[] = [];
let dispatch: (method: string, input: unknown) => Promise<CallOutcome>;
beforeAll(() => {
  const env = makeCore();
  cleanups.push(env.cleanup);
  dispatch = (method, input) => env.core.registry.dispatch(method, input, { client: 'fuzz' });
});
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** Is `path` the field `expected` or inside it? */
function within(path: string, expected: string): boolean {
  return expected === '' || path === expected || path.startsWith(`${expected}.`) || path.startsWith(`${expected}[`);
}

describe('schema fuzzer (every method of src/shared/api.ts)', () => {
  it('answers every broken input with bad_input naming the field; never internal, never a throw', async () => {
    const methods = Object.keys(api) as MethodName[];
    const cases = methods.flatMap(casesFor);
    // A seeded sample of pairs: two fields broken at once must still name one of them.
    const r = rng(FUZZ_SEED);
    const byMethod = new Map(methods.map((m) => [m, cases.filter((c) => c.method === m && c.expectPath !== '')]));
    const pairs: { method: MethodName; input: unknown; paths: string[] }[] = [];
    for (let n = 0; n < 2000; n++) {
      const m = r.pick(methods);
      const own = byMethod.get(m)!;
      if (own.length < 2) continue;
      const a = r.pick(own);
      const b = r.pick(own);
      if (typeof a.input !== 'object' || a.input === null || typeof b.input !== 'object' || b.input === null) continue;
      const topA = a.expectPath.split(/[.[]/)[0]!;
      const topB = b.expectPath.split(/[.[]/)[0]!;
      if (topA === topB) continue;
      const merged = { ...(a.input as object) };
      const bValue = Object.getOwnPropertyDescriptor(b.input, topB);
      if (bValue) Object.defineProperty(merged, topB, bValue);
      else delete (merged as Record<string, unknown>)[topB];
      pairs.push({ method: m, input: merged, paths: [topA, topB] });
    }
    const failures: string[] = [];
    let internal = 0;
    let thrown = 0;
    for (const c of cases) {
      let outcome: CallOutcome;
      try {
        outcome = await dispatch(c.method, c.input);
      } catch (error) {
        thrown++;
        failures.push(`${c.method} with ${c.what} at ${c.expectPath || 'input'}: threw ${String(error)}`);
        continue;
      }
      if (outcome.ok) {
        failures.push(`${c.method} with ${c.what} at ${c.expectPath || 'input'}: accepted`);
        continue;
      }
      if (outcome.error.type === 'internal') internal++;
      const path = (outcome.error.details as { path?: string } | undefined)?.path;
      if (outcome.error.type !== 'bad_input' || path === undefined || !within(path, c.expectPath) || !outcome.error.message.startsWith(`${c.method}: ${path || 'input'}: expected`)) {
        failures.push(`${c.method} with ${c.what} at ${c.expectPath || 'input'}: ${outcome.error.type} ${JSON.stringify(outcome.error.details)} ${outcome.error.message.slice(0, 160)}`);
      }
    }
    for (const p of pairs) {
      const outcome = await dispatch(p.method, p.input);
      const path = outcome.ok ? undefined : (outcome.error.details as { path?: string } | undefined)?.path;
      if (outcome.ok || outcome.error.type !== 'bad_input' || path === undefined || !p.paths.some((e) => within(path, e))) {
        failures.push(`${p.method} with ${p.paths.join(' and ')} broken: ${JSON.stringify(outcome).slice(0, 200)}`);
      }
    }
    console.log(
      `schema fuzzer: seed ${FUZZ_SEED}, ${methods.length} methods, ${cases.length + pairs.length} cases (${cases.length} single-field, ${pairs.length} two-field); crashes ${thrown}, internal answers ${internal}, failures ${failures.length}`,
    );
    expect(failures.slice(0, 20)).toEqual([]);
    expect(internal).toBe(0);
    expect(cases.length).toBeGreaterThan(1000);
  });

  it('refuses method names that are not own entries of the contract', async () => {
    const names: unknown[] = [...INHERITED_NAMES, '', ' app.info', 'app.info\0', 'APP.INFO', 'app.info.x', 'x'.repeat(100_000), 42, null, undefined, {}, ['app.info']];
    for (const name of names) {
      const outcome = await dispatch(name as string, {});
      expect(outcome).toMatchObject({ ok: false, error: { type: 'bad_input', message: expect.stringMatching(/^Unknown API method/) } });
      if (!outcome.ok) expect(outcome.error.message.length).toBeLessThan(200);
    }
  });
});
