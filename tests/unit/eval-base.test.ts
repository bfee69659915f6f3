import { describe, expect, it } from 'vitest';
import { FEATURES, frechetDistance, Mlp, symmetricEigen, thumbnails } from '../../src/main/hosts/cli/eval-base';

function gaussian(seed: number) {
  let s = seed;
  const u = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) || 1e-9;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

describe('eval:base maths', () => {
  it('box-filters images to 16×16 thumbnails in [0,1]', () => {
    const img = new Uint8Array(32 * 32 * 3).fill(255);
    img[0] = 0; // one dark pixel in the first 2×2 block's red channel
    const t = thumbnails(img, 1, 32);
    expect(t.length).toBe(FEATURES);
    expect(t[0]).toBeCloseTo(0.75, 6);
    expect(t[1]).toBeCloseTo(1, 6);
  });

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

  it('trains the classifier to separate simple classes, deterministically', () => {
    const g = gaussian(5);
    const n = 300;
    const x = new Float32Array(n * 4);
    const y: number[] = [];
    for (let i = 0; i < n; i++) {
      const label = i % 3;
      y.push(label);
      for (let k = 0; k < 4; k++) x[i * 4 + k] = (k === label ? 2 : 0) + 0.3 * g();
    }
    const m1 = new Mlp(4, 8, 3, 1);
    m1.train(x, y, 20, 1e-2);
    const acc = m1.predict(x, n).labels.filter((l, i) => l === y[i]).length / n;
    expect(acc).toBeGreaterThan(0.95);
    const m2 = new Mlp(4, 8, 3, 1);
    m2.train(x, y, 20, 1e-2);
    expect(m2.predict(x, n).labels).toEqual(m1.predict(x, n).labels);
  });
});
