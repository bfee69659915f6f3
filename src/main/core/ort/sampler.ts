// The worker's samplers in TypeScript, over any model function, so the ORT runtime draws the same image as the
// worker for the same noise, prompt and mix. Scalars are computed in fp64 like the C++; every tensor op rounds to
// fp32 with the scalar first rounded to fp32, as ATen does for `double * float tensor`.
//
// A copy kept on purpose (ONNX deployment). It mirrors the native runtime: noise_schedule_init and v_scales
// (runtime/schedule), sample_images' timesteps, noise and guidance (runtime/sampler), sample_ddim and sample_euler
// (one file each beside it), images_from_model (model_io/images.h). A change on either side is made on both;
// tests/unit/ort.test.ts (the same image from both engines, max difference printed) is the guard.
//
// DDIM η = 0 and Euler, "leading" spacing t_i = i·⌊T/steps⌋ + 1, classifier-free guidance out_u + w (out_c − out_u)
// on one batched call over [x; x] with context [uncond; cond], v-prediction with σ_d, x̂_0 clipped to [−1, 1].
import type { DiffusionConfig } from './model';

const f = Math.fround;

/** ᾱ_t = Π_{s≤t} (1 − β_s) in fp64. Mirrors native noise_schedule_init. */
export function alphasCumprod(d: DiffusionConfig): Float64Array {
  const T = d.numTrainTimesteps;
  const lin = (a: number, b: number) => {
    // torch.linspace: start + step·i for the first half, end − step·(T−1−i) for the rest
    const step = (b - a) / (T - 1);
    return Float64Array.from({ length: T }, (_, i) => (i < Math.floor(T / 2) ? a + step * i : b - step * (T - 1 - i)));
  };
  const betas = d.betaSchedule === 'scaled_linear' ? lin(Math.sqrt(d.betaStart), Math.sqrt(d.betaEnd)).map((x) => x * x) : lin(d.betaStart, d.betaEnd);
  const out = new Float64Array(T);
  let acc = 1;
  for (let i = 0; i < T; i++) out[i] = acc *= 1 - betas[i]!;
  return out;
}

/** UNet input scale and x̂_0 = skip·x_t − out·v̂ at ᾱ with σ_d. Mirrors native v_scales. */
export function vScales(a: number, d: number): { in: number; skip: number; out: number } {
  if (d === 1) return { in: 1, skip: Math.sqrt(a), out: Math.sqrt(1 - a) };
  const D = 1 - a + a * d * d;
  const sD = Math.sqrt(D);
  return { in: 1 / sD, skip: (d * d * Math.sqrt(a)) / D, out: (Math.sqrt(1 - a) * d) / sD };
}

/** One UNet evaluation on [2B, C, H, W] at timestep t with the [uncond; cond] context already bound. */
export type ModelFn = (x2: Float32Array, t: number) => Promise<Float32Array>;

export interface SampleOptions {
  sampler: 'ddim' | 'euler';
  steps: number;
  guidance: number;
  /** x_T ~ N(0, I), [B, C, H, W] (scaled by σ_max inside for Euler, like the worker). */
  noise: Float32Array;
  diffusion: DiffusionConfig;
  /** Polled once per step; a true stops with an error naming the cancel. */
  shouldStop?: () => boolean;
  onStep?: (done: number, total: number) => void;
}

/** Runs the sampler and returns the final x_0 estimate in model space ([-1, 1], fp32, [B, C, H, W]). Mirrors native sample_ddim / sample_euler. */
export async function sample(model: ModelFn, o: SampleOptions): Promise<Float32Array> {
  const s = alphasCumprod(o.diffusion);
  const T = o.diffusion.numTrainTimesteps;
  if (!Number.isInteger(o.steps) || o.steps < 1 || o.steps > T) throw new Error(`sample: steps must be in 1..${T}`);
  const n = o.noise.length;
  const ratio = Math.floor(T / o.steps);
  const timestep = (i: number) => Math.min(i * ratio + 1, T - 1);
  const g = f(o.guidance);
  const vPred = o.diffusion.predictionType === 'v_prediction';
  const x2 = new Float32Array(2 * n);
  const guided = async (xIn: Float32Array, t: number): Promise<Float32Array> => {
    x2.set(xIn, 0);
    x2.set(xIn, n);
    const out = await model(x2, t);
    if (out.length !== 2 * n) throw new Error(`sample: the model returned ${out.length} values for ${2 * n}`);
    const r = new Float32Array(n);
    for (let k = 0; k < n; k++) r[k] = f(out[k]! + f(g * f(out[n + k]! - out[k]!)));
    return r;
  };
  let x = Float32Array.from(o.noise);
  const stop = () => {
    if (o.shouldStop?.()) throw new Error('sample cancelled');
  };

  if (o.sampler === 'euler') {
    const sigmaOf = (t: number) => Math.sqrt((1 - s[t]!) / s[t]!);
    const s0 = f(sigmaOf(timestep(o.steps - 1)));
    for (let k = 0; k < n; k++) x[k] = f(x[k]! * s0);
    const sd = vPred ? o.diffusion.sigmaData : 1;
    for (let i = o.steps - 1; i >= 0; i--) {
      stop();
      const t = timestep(i);
      const sigma = sigmaOf(t);
      const sigmaNext = i > 0 ? sigmaOf(timestep(i - 1)) : 0;
      const cIn = 1 / Math.sqrt(sigma * sigma + sd * sd);
      const fcIn = f(cIn);
      const out = await guided(
        x.map((v) => f(v * fcIn)),
        t,
      );
      const a1 = f(sd * sd * cIn * cIn);
      const a2 = f(sigma * sd * cIn);
      const fs = f(sigma);
      const fd = f(sigmaNext - sigma);
      for (let k = 0; k < n; k++) {
        let den = vPred ? f(f(x[k]! * a1) - f(out[k]! * a2)) : f(x[k]! - f(fs * out[k]!));
        den = Math.min(1, Math.max(-1, den));
        x[k] = f(x[k]! + f(f(f(x[k]! - den) / fs) * fd));
      }
      o.onStep?.(o.steps - i, o.steps);
    }
    return x;
  }

  for (let i = o.steps - 1; i >= 0; i--) {
    stop();
    const t = timestep(i);
    const tPrev = t - ratio;
    const aT = s[t]!;
    const aPrev = tPrev >= 0 ? s[tPrev]! : 1;
    const bT = 1 - aT;
    const vs = vScales(aT, vPred ? o.diffusion.sigmaData : 1);
    const fin = f(vs.in);
    const out = await guided(vs.in === 1 ? x : x.map((v) => f(v * fin)), t);
    const skip = f(vs.skip);
    const outS = f(vs.out);
    const sqrtB = f(Math.sqrt(bT));
    const sqrtA = f(Math.sqrt(aT));
    const sqrtAPrev = f(Math.sqrt(aPrev));
    const sqrtBPrev = f(Math.sqrt(1 - aPrev));
    const next = new Float32Array(n);
    for (let k = 0; k < n; k++) {
      let x0 = vPred ? f(f(skip * x[k]!) - f(outS * out[k]!)) : f(f(x[k]! - f(sqrtB * out[k]!)) / sqrtA);
      x0 = Math.min(1, Math.max(-1, x0));
      const eps = f(f(x[k]! - f(sqrtA * x0)) / sqrtB);
      next[k] = f(f(sqrtAPrev * x0) + f(sqrtBPrev * eps));
    }
    x = next;
    o.onStep?.(o.steps - i, o.steps);
  }
  return x;
}

/** fp32 [B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C]: round half to even, clamp. Mirrors native images_from_model. */
export function imagesFromModel(x: Float32Array, shape: readonly [number, number, number, number]): Uint8Array {
  const [B, C, H, W] = shape;
  const out = new Uint8Array(B * H * W * C);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let y = 0; y < H; y++)
        for (let xx = 0; xx < W; xx++) {
          const v = f(f(x[((b * C + c) * H + y) * W + xx]! + 1) * 127.5);
          const r = Math.round(v);
          const even = r - v === 0.5 && r % 2 !== 0 ? r - 1 : r; // nearbyint: ties to even
          out[((b * H + y) * W + xx) * C + c] = Math.min(255, Math.max(0, even));
        }
  return out;
}

/**
 * torch.randn(n) from a CPU generator seeded with `seed` (at::mt19937 + normal_fill's Box–Muller on blocks of 16),
 * so a seed gives the worker's x_T. The worker's AVX2 build uses vectorised log/sin/cos approximations, so values
 * agree to a few fp32 ulps, not bit for bit.
 */
export function torchRandn(seed: number | bigint, count: number): Float32Array {
  const mt = new Uint32Array(624);
  mt[0] = Number(BigInt(seed) & 0xffffffffn);
  for (let i = 1; i < 624; i++) {
    const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
    mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
  }
  let idx = 624;
  const next = (): number => {
    if (idx >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      idx = 0;
    }
    let y = mt[idx++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  };
  const uniform = () => f((next() & 0xffffff) * 2 ** -24);
  const data = new Float32Array(count);
  const fill16 = (o: number) => {
    for (let j = 0; j < 8; j++) {
      const u1 = f(1 - data[o + j]!);
      const u2 = data[o + j + 8]!;
      const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
      const theta = f(2 * Math.PI * u2);
      data[o + j] = f(radius * f(Math.cos(theta)));
      data[o + j + 8] = f(radius * f(Math.sin(theta)));
    }
  };
  if (count < 16) throw new Error('torchRandn: fewer than 16 values take a different path in torch; not supported');
  for (let i = 0; i < count; i++) data[i] = uniform();
  for (let i = 0; i + 16 <= count; i += 16) fill16(i);
  if (count % 16 !== 0) {
    for (let i = count - 16; i < count; i++) data[i] = uniform();
    fill16(count - 16);
  }
  return data;
}
