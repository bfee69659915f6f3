import { describe, expect, it } from 'vitest';
import { categoryAccuracy, frechetDistance, symmetricEigen } from '../../tools/eval-base';

function gaussian(seed: number) {
  let s = seed;
  const u = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) || 1e-9;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

describe('eval:base maths', () => {
  it('decomposes a symmetric matrix: A v = λ v', () => {
    const a = new Float64Array([4, 1, 2, 1, 3, 0, 2, 0, 5]);
    const { values, vectors } = symmetricEigen(a, 3);
    for (let k = 0; k < 3; k++) {
      for (let i = 0; i < 3; i++) {
        let av = 0;
        for (let j = 0; j < 3; j++) av += a[i * 3 + j]! * vectors[j * 3 + k]!;
        expect(av).toBeCloseTo(values[k]! * vectors[i * 3 + k]!, 9);
      }
    }
    expect([...values].reduce((x, y) => x + y)).toBeCloseTo(12, 9); // trace
  });

  it('gives the closed-form Fréchet distance for Gaussians, and ~0 for the same distribution', () => {
    const g = gaussian(3);
    const n = 4000;
    const d = 2;
    const a = new Float32Array(n * d);
    const b = new Float32Array(n * d);
    const c = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      a[i * 2] = g();
      a[i * 2 + 1] = g();
      b[i * 2] = g();
      b[i * 2 + 1] = g();
      c[i * 2] = 3 + 2 * g(); // N((3,0), diag(4,1)): distance to N(0,I) is 9 + (1 + 4 − 2·2) = 10
      c[i * 2 + 1] = g();
    }
    expect(frechetDistance(a, n, b, n, d)).toBeLessThan(0.02);
    expect(frechetDistance(a, n, c, n, d)).toBeCloseTo(10, 0);
  });

  it('scores generated samples per category against the prompt, so chance is 1/C whatever the classifier favours', () => {
    // 3 categories, 2 images each; rows are softmax outputs. The classifier calls almost everything class 0.
    const probs = Float32Array.from([0.8, 0.1, 0.1, 0.6, 0.3, 0.1, 0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.5, 0.2, 0.3, 0.5, 0.4, 0.1]);
    const r = categoryAccuracy({ probs, n: 6 }, 3, [0, 0, 1, 1, 2, 2]);
    expect(r.perCategory).toEqual([1, 0.5, 0]);
    expect(r.overall).toBeCloseTo(0.5, 12);
    expect(r.confusion).toEqual([
      [2, 0, 0],
      [1, 1, 0],
      [2, 0, 0],
    ]);
    expect(() => categoryAccuracy({ probs, n: 6 }, 3, [0, 1])).toThrow(/2 labels for 6/);
  });
});
