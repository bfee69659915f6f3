import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { categoryAccuracy, denoiserResidual, frechetDistance, meanAbsLaplacian, parseSamplers, promptSensitivity, symmetricEigen } from '../../tools/eval-base';
import { alphasCumprod, vScales } from '../../src/main/core/ort/sampler';
import { readSafetensors, writeSafetensors, type TensorData } from '../../src/main/core/io/safetensors';
import type { WorkerSupervisor } from '../../src/main/core/worker/supervisor';
import { tempDir } from '../unit/helpers';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** n images of h×w×3 from pixel(i, y, x, k) in 0..255. */
function imgs(n: number, h: number, w: number, pixel: (i: number, y: number, x: number, k: number) => number): TensorData {
  const data = new Uint8Array(n * h * w * 3);
  for (let i = 0; i < n; i++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < 3; k++) data[((i * h + y) * w + x) * 3 + k] = pixel(i, y, x, k);
  return { dtype: 'U8', shape: [n, h, w, 3], data };
}

function gaussian(seed: number) {
  let s = seed;
  const u = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32 || 1e-9;
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

  it('measures speckle as the mean absolute Laplacian: 0 on flat colour and smooth ramps, 4 on a full-range checkerboard', () => {
    expect(meanAbsLaplacian(imgs(2, 8, 8, () => 200))).toBe(0);
    expect(meanAbsLaplacian(imgs(1, 8, 8, (_, y, x) => 10 * x + 5 * y))).toBe(0); // linear: no curvature
    expect(meanAbsLaplacian(imgs(1, 8, 8, (_, y, x) => ((x + y) % 2) * 255))).toBeCloseTo(4, 12);
    // Per-pixel noise on a flat image raises it; one bright pixel in the interior of a 5×5 image: |4·255| at it,
    // 255 at its 4 neighbours, over 3×3 interior pixels × 3 channels (all channels equal).
    expect(meanAbsLaplacian(imgs(1, 5, 5, (_, y, x) => (y === 2 && x === 2 ? 255 : 0)))).toBeCloseTo((4 + 4 * 1) / 9, 12);
    expect(() => meanAbsLaplacian(imgs(1, 2, 8, () => 0))).toThrow(/at least 3×3/);
  });

  it('measures prompt sensitivity as the distance across prompts at one seed against across seeds at one prompt', () => {
    // Image (p, s) is flat grey 40·p + 10·s: prompts 40/255 apart (per step of p), seeds 10/255 apart.
    const t = imgs(3 * 2, 16, 16, (i) => 40 * Math.floor(i / 2) + 10 * (i % 2));
    const r = promptSensitivity(t, 3, 2);
    expect(r.prompts).toBeCloseTo((40 + 80 + 40) / 3 / 255, 12);
    expect(r.seeds).toBeCloseTo(10 / 255, 12);
    expect(r.ratio).toBeCloseTo(16 / 3, 9);
    // A model that ignores its prompt: the seed decides the picture.
    const deaf = promptSensitivity(
      imgs(3 * 2, 16, 16, (i) => 100 * (i % 2) + Math.floor(i / 2)),
      3,
      2,
    );
    expect(deaf.ratio).toBeLessThan(0.05);
    // Per-pixel noise averages out in the 16×16 cells: a ±1 checkerboard on a 64×64 image moves no cell.
    const noisy = imgs(2 * 2, 64, 64, (i, y, x) => 100 + 50 * Math.floor(i / 2) + ((x + y) % 2 ? 1 : -1) * (i % 2));
    expect(promptSensitivity(noisy, 2, 2).seeds).toBe(0);
    expect(() => promptSensitivity(t, 2, 2)).toThrow(/6 images for 2 prompts × 2 seeds/);
  });

  it('parses sampler sweeps and names a bad entry', () => {
    expect(parseSamplers('ddim:25, euler:10')).toEqual([
      { sampler: 'ddim', steps: 25 },
      { sampler: 'euler', steps: 10 },
    ]);
    expect(() => parseSamplers('ddim:25,heun:10')).toThrow(/"heun:10"/);
    expect(() => parseSamplers('ddim')).toThrow(/sampler:steps/);
  });

  it('measures the share of the noise a denoiser passes into x̂0: the skip term alone keeps c_skip, a perfect one none', async () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const sigmaData = 0.3;
    const diffusion = { beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, prediction_type: 'v_prediction', sigma_data: sigmaData, num_train_timesteps: 1000 };
    const model = join(dir.path, 'model.safetensors');
    writeSafetensors(model, [], { config: JSON.stringify({ diffusion }) });
    // Mid-grey images with a soft gradient: x̂0 never reaches the clamp.
    const x0u8 = imgs(2, 16, 16, (i, y) => 100 + 2 * y + 10 * i);
    const x0 = (j: number) => x0u8.data[j]! / 127.5 - 1;
    const ac = alphasCumprod({ numTrainTimesteps: 1000, betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', predictionType: 'v_prediction', sigmaData });
    // A fake worker: `forward` answers with v̂ = 0 (the skip term alone) or with the v̂ that gives x̂0 = x0 exactly.
    const fake = (perfect: boolean) =>
      ({
        request: async (_op: string, a: { inputs: string; out: string }) => {
          const inp = readSafetensors(a.inputs).tensors;
          const x = new Float32Array(inp.get('x')!.data.slice().buffer);
          const t = Number(new BigInt64Array(inp.get('t')!.data.slice().buffer)[0]);
          const vs = vScales(ac[t]!, sigmaData);
          const [n, c, h, w] = inp.get('x')!.shape as [number, number, number, number];
          const v = new Float32Array(x.length);
          if (perfect)
            for (let i = 0; i < n; i++)
              for (let k = 0; k < c; k++)
                for (let y = 0; y < h; y++)
                  for (let xx = 0; xx < w; xx++) {
                    const j = ((i * c + k) * h + y) * w + xx;
                    v[j] = (vs.skip * (x[j]! / vs.in) - x0(((i * h + y) * w + xx) * c + k)) / vs.out;
                  }
          writeSafetensors(a.out, [['out', { dtype: 'F32', shape: [n, c, h, w], data: new Uint8Array(v.buffer) }]]);
          return {};
        },
      }) as unknown as WorkerSupervisor;
    const zero = await denoiserResidual(fake(false), model, x0u8, ['', ''], [41, 161], dir.path);
    for (const r of zero) {
      const a = ac[r.t]!;
      const cSkip = sigmaData ** 2 / (r.sigma ** 2 + sigmaData ** 2);
      expect(r.sigma).toBeCloseTo(Math.sqrt((1 - a) / a), 9);
      expect(r.kept).toBeCloseTo(r.skip_only, 12);
      expect(Math.abs(r.kept - cSkip)).toBeLessThan(0.02);
    }
    const perfect = await denoiserResidual(fake(true), model, x0u8, ['', ''], [41, 161], dir.path);
    for (const r of perfect) expect(Math.abs(r.kept)).toBeLessThan(1e-3);
    await expect(denoiserResidual(fake(false), model, x0u8, ['', ''], [1000], dir.path)).rejects.toThrow(/outside 0..999/);
  });
});
