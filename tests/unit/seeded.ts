// Seeded randomness for the fuzzers: a run is reproduced exactly by its seed. The seed is fixed
// unless SHIRA_FUZZ_SEED says otherwise, and every fuzzer prints it with its case count.

export const FUZZ_SEED = process.env.SHIRA_FUZZ_SEED ? Number(process.env.SHIRA_FUZZ_SEED) : 0x5eed_16;

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  int(lo: number, hi: number): number;
  pick<T>(items: readonly T[]): T;
  bool(p?: number): boolean;
  bytes(n: number): Buffer;
}

/** mulberry32: small, fast, and good enough to pick test cases. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return {
    next,
    int,
    pick: (items) => items[int(0, items.length - 1)]!,
    bool: (p = 0.5) => next() < p,
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(0, 255))),
  };
}

/** Names every JS object answers to without owning them: the keys and tags a hostile client tries. */
export const INHERITED_NAMES = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__', 'toLocaleString'] as const;

/** An object whose own key is `key` even for `__proto__` (a literal would set the prototype instead). */
export function withOwnKey<T extends object>(base: T, key: string, value: unknown): T {
  const out = { ...base };
  Object.defineProperty(out, key, { value, enumerable: true, configurable: true, writable: true });
  return out;
}

/** `[[[…]]]` or `{a:{a:…}}`, `depth` levels, built iteratively. */
export function nested(depth: number, kind: 'array' | 'object'): unknown {
  let v: unknown = 0;
  for (let i = 0; i < depth; i++) v = kind === 'array' ? [v] : { a: v };
  return v;
}
