// `npm run eval:base`: how good is the built-in model, in numbers.
//   (a) a small CNN classifier (the concept lab's judge, native/src/concept.h: class-balanced batches,
//       noise augmentation so sampler noise is not a class), trained here on the real training split's
//       top-level categories that have enough images, labels generated samples for each category
//       prompt: accuracy per category and overall, against chance;
//   (b) the Fréchet distance in that classifier's pooled features between generated samples and the
//       held-out real images, beside the same distance for a same-size subset of real training images
//       (the floor a perfect generator would reach at this sample size);
//   (c) speckle: the mean absolute Laplacian of generated images against the training images' (issue 23:
//       v2's samples were covered in per-pixel noise no training image has), and prompt sensitivity: how
//       far apart images of different prompts at one seed are against images of one prompt at different
//       seeds — both per sampler and step count;
//   (d) where speckle comes from: the share of the noise that the denoiser passes into x̂_0 at the finest
//       scale on noised held-out images, per timestep (0 removes it all, 1 removes none).
// Everything is seeded; the same weights give the same numbers on the same machine.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { concatImages, ConceptLab, type Scored } from '../src/main/core/concept/lab';
import type { JudgeTrainReply } from '../src/main/core/worker/protocol';
import { parseModelConfig } from '../src/main/core/ort/model';
import { alphasCumprod, torchRandn, vScales } from '../src/main/core/ort/sampler';
import { readSafetensors, writeSafetensors, type TensorData } from '../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';

export interface Pack {
  images: Uint8Array;
  n: number;
  size: number;
  categories: string[];
  captions: string[];
}

export function loadPack(file: string): Pack {
  const f = readSafetensors(file);
  const t = f.tensors.get('images')!;
  const list = (key: string) => JSON.parse(f.metadata[key] ?? '[]') as string[];
  return { images: t.data, n: t.shape[0]!, size: t.shape[1]!, categories: list('categories'), captions: list('captions') };
}

/** The 4-neighbour Laplacian 4x − Σ neighbours of n images at every interior pixel and channel, pixel (i, y, x, k) by `px`. */
function laplacian(n: number, h: number, w: number, c: number, px: (i: number, y: number, x: number, k: number) => number): Float64Array {
  if (h < 3 || w < 3) throw new Error(`the Laplacian needs images of at least 3×3, got ${h}×${w}`);
  const out = new Float64Array(n * (h - 2) * (w - 2) * c);
  let j = 0;
  for (let i = 0; i < n; i++)
    for (let y = 1; y < h - 1; y++)
      for (let x = 1; x < w - 1; x++) for (let k = 0; k < c; k++) out[j++] = 4 * px(i, y, x, k) - px(i, y - 1, x, k) - px(i, y + 1, x, k) - px(i, y, x - 1, k) - px(i, y, x + 1, k);
  return out;
}

/**
 * Speckle: the mean absolute 4-neighbour Laplacian of U8 [n, H, W, C] images, in [0, 1] intensity units.
 * Clipart's edges give real images a floor (≈ 0.13 at 64×64); per-pixel noise adds to it everywhere,
 * flat areas included.
 */
export function meanAbsLaplacian(t: TensorData): number {
  const [n, h, w, c] = t.shape as [number, number, number, number];
  const lap = laplacian(n, h, w, c, (i, y, x, k) => t.data[((i * h + y) * w + x) * c + k]!);
  return lap.reduce((a, v) => a + Math.abs(v), 0) / (255 * lap.length);
}

/**
 * Prompt sensitivity of P prompts × S seeds images (prompt-major: image p·S + s), as RMS distances in
 * [0, 1] units between images box-averaged to `cells`×`cells` (the composition, not the per-pixel noise
 * that a different seed always changes): `prompts` averages every pair of prompts at one seed, `seeds`
 * every pair of seeds at one prompt. A model that follows its prompt has ratio = prompts / seeds ≥ 1:
 * changing what is asked for changes the picture at least as much as changing the noise.
 */
export function promptSensitivity(t: TensorData, prompts: number, seeds: number, cells = 16): { prompts: number; seeds: number; ratio: number } {
  const [n, h, w, c] = t.shape as [number, number, number, number];
  if (n !== prompts * seeds) throw new Error(`${n} images for ${prompts} prompts × ${seeds} seeds`);
  if (prompts < 2 || seeds < 2) throw new Error('prompt sensitivity needs at least 2 prompts and 2 seeds');
  if (h % cells || w % cells) throw new Error(`${h}×${w} images do not split into ${cells}×${cells} cells`);
  const fy = h / cells;
  const fx = w / cells;
  const d = cells * cells * c;
  const down = new Float64Array(n * d);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) down[i * d + (Math.floor(y / fy) * cells + Math.floor(x / fx)) * c + k]! += t.data[((i * h + y) * w + x) * c + k]! / (255 * fy * fx);
  const rms = (a: number, b: number) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += (down[a * d + k]! - down[b * d + k]!) ** 2;
    return Math.sqrt(s / d);
  };
  const across: number[] = [];
  const within: number[] = [];
  for (let s = 0; s < seeds; s++) for (let p = 0; p < prompts; p++) for (let q = p + 1; q < prompts; q++) across.push(rms(p * seeds + s, q * seeds + s));
  for (let p = 0; p < prompts; p++) for (let s = 0; s < seeds; s++) for (let r = s + 1; r < seeds; r++) within.push(rms(p * seeds + s, p * seeds + r));
  const m = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return { prompts: m(across), seeds: m(within), ratio: m(across) / m(within) };
}

/** Symmetric eigen-decomposition (cyclic Jacobi): A = V diag(λ) Vᵀ. Row-major d×d. */
export function symmetricEigen(a: Float64Array, d: number): { values: Float64Array; vectors: Float64Array } {
  const A = Float64Array.from(a);
  const V = new Float64Array(d * d);
  for (let i = 0; i < d; i++) V[i * d + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < d; p++) for (let q = p + 1; q < d; q++) off += A[p * d + q]! ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < d; p++)
      for (let q = p + 1; q < d; q++) {
        const apq = A[p * d + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * d + q]! - A[p * d + p]!) / (2 * apq);
        const tt = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(tt * tt + 1);
        const s = tt * c;
        for (let k = 0; k < d; k++) {
          const akp = A[k * d + p]!;
          const akq = A[k * d + q]!;
          A[k * d + p] = c * akp - s * akq;
          A[k * d + q] = s * akp + c * akq;
        }
        for (let k = 0; k < d; k++) {
          const apk = A[p * d + k]!;
          const aqk = A[q * d + k]!;
          A[p * d + k] = c * apk - s * aqk;
          A[q * d + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < d; k++) {
          const vkp = V[k * d + p]!;
          const vkq = V[k * d + q]!;
          V[k * d + p] = c * vkp - s * vkq;
          V[k * d + q] = s * vkp + c * vkq;
        }
      }
  }
  return { values: Float64Array.from({ length: d }, (_, i) => A[i * d + i]!), vectors: V };
}

function matmul(a: Float64Array, b: Float64Array, d: number): Float64Array {
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let k = 0; k < d; k++) for (let j = 0; j < d; j++) out[i * d + j]! += a[i * d + k]! * b[k * d + j]!;
  return out;
}

function sqrtPsd(a: Float64Array, d: number): Float64Array {
  const { values, vectors } = symmetricEigen(a, d);
  const out = new Float64Array(d * d);
  for (let k = 0; k < d; k++) {
    const s = Math.sqrt(Math.max(0, values[k]!));
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) out[i * d + j]! += vectors[i * d + k]! * s * vectors[j * d + k]!;
  }
  return out;
}

export function meanCov(x: Float32Array, n: number, d: number): { mean: Float64Array; cov: Float64Array } {
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) mean[k]! += x[i * d + k]! / n;
  const cov = new Float64Array(d * d);
  for (let i = 0; i < n; i++)
    for (let a = 0; a < d; a++) {
      const da = x[i * d + a]! - mean[a]!;
      for (let b = 0; b < d; b++) cov[a * d + b]! += (da * (x[i * d + b]! - mean[b]!)) / Math.max(1, n - 1);
    }
  return { mean, cov };
}

/** ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½) — symmetric form, so only PSD square roots are needed. */
export function frechetDistance(x1: Float32Array, n1: number, x2: Float32Array, n2: number, d: number): number {
  const a = meanCov(x1, n1, d);
  const b = meanCov(x2, n2, d);
  let dist = 0;
  for (let k = 0; k < d; k++) dist += (a.mean[k]! - b.mean[k]!) ** 2;
  const s1 = sqrtPsd(a.cov, d);
  const inner = sqrtPsd(matmul(matmul(s1, b.cov, d), s1, d), d);
  for (let k = 0; k < d; k++) dist += a.cov[k * d + k]! + b.cov[k * d + k]! - 2 * inner[k * d + k]!;
  return dist;
}

/**
 * Accuracy of argmax(probs) against the prompt's category, per category and overall (the mean over
 * categories, so chance is 1/C whatever the classifier's prior), and the confusion counts
 * [true category][predicted category].
 */
export function categoryAccuracy(s: Pick<Scored, 'probs' | 'n'>, classes: number, labels: readonly number[]): { perCategory: number[]; overall: number; confusion: number[][] } {
  if (labels.length !== s.n) throw new Error(`${labels.length} labels for ${s.n} scored images`);
  const confusion = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < s.n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (s.probs[i * classes + c]! > s.probs[i * classes + best]!) best = c;
    confusion[labels[i]!]![best]!++;
  }
  const perCategory = confusion.map(
    (row, c) =>
      row[c]! /
      Math.max(
        1,
        row.reduce((x, y) => x + y, 0),
      ),
  );
  return { perCategory, overall: perCategory.reduce((x, y) => x + y, 0) / classes, confusion };
}

export interface EvalOptions {
  worker: string;
  threads: number;
  model: string;
  train: string;
  heldout: string;
  perCategory: number;
  minImages: number;
  /**
   * Classifier-free guidance scales of the generated samples; the first (the app's default, 5) gives the
   * per-category numbers and the Fréchet distance, the others an overall accuracy each.
   */
  guidance: number[];
  judgeSteps: number;
  /** Samplers and step counts of the speckle and prompt-sensitivity sweep (at the first guidance scale). */
  samplers: SamplerSetting[];
  /** Seeds of that sweep: every category prompt is drawn at each, one image per call so a seed is one x_T. */
  sweepSeeds: number[];
  /** Timesteps of the denoiser diagnosis (d). */
  denoiseTimesteps: number[];
  log: (line: string) => void;
}

export interface SamplerSetting {
  sampler: 'ddim' | 'euler';
  steps: number;
}

/** "ddim:25,euler:10" → settings; names the bad entry otherwise. */
export function parseSamplers(spec: string): SamplerSetting[] {
  return spec.split(',').map((part) => {
    const [sampler, steps] = part.trim().split(':');
    const n = Number(steps);
    if ((sampler !== 'ddim' && sampler !== 'euler') || !Number.isInteger(n) || n < 1 || n > 1000) throw new Error(`--samplers takes sampler:steps pairs (ddim or euler, 1..1000 steps), got "${part}"`);
    return { sampler, steps: n };
  });
}

export const categoryPrompt = (category: string) => category.replace(/_/g, ' ');

/**
 * One 64×64 image, 25 DDIM steps, classifier-free guidance (two UNet passes a step), warm: the median
 * of 3 on a worker of its own with one thread — on this 2-core VM two threads make one small image
 * slower (1.5–2.2 s against 1.0 s), and an artist's generation is one image at a time.
 */
async function sampleSpeed(o: EvalOptions): Promise<{ sample_ms_64px_25steps_cfg: number; sample_threads: number }> {
  const worker = new WorkerSupervisor({ binary: o.worker, threads: 1 });
  try {
    await worker.start();
    await worker.request('load_model', { path: o.model });
    await worker.request('sample', { prompt: 'bird', seed: 1, steps: 25, guidance: 4 });
    const ms: number[] = [];
    for (const seed of [2, 3, 4]) ms.push(((await worker.request('sample', { prompt: 'bird', seed, steps: 25, guidance: 4 })) as { ms: number }).ms);
    return { sample_ms_64px_25steps_cfg: ms.sort((a, b) => a - b)[1]!, sample_threads: 1 };
  } finally {
    await worker.close();
  }
}

/**
 * (d) Where the speckle comes from. Held-out images x_0 are noised to x_t = √ᾱ x_0 + √(1−ᾱ) ε and denoised
 * once with their captions: x̂_0 = clamp(skip·x_t − out·v̂) (or (x_t − √(1−ᾱ) ε̂)/√ᾱ for ε-prediction).
 * `kept` is the share of the noise that passes into the estimate, at the finest scale: the regression slope
 * of Lap(x̂_0 − x_0) on Lap(σε), σ = √((1−ᾱ)/ᾱ) the noise of x_t/√ᾱ — a projection on the noise drawn, so
 * detail the estimate lacks (blur, independent of ε) does not count. 1 passes all of it, 0 none.
 * `skip_only` is the same for a UNet that outputs 0 (v-prediction: about c_skip = σ_d²/(σ²+σ_d²)); a
 * denoiser near it has learned nothing at that scale, and what it keeps at the last sampler steps is what
 * the image keeps.
 */
export async function denoiserResidual(
  worker: WorkerSupervisor,
  modelFile: string,
  x0u8: TensorData,
  captions: string[],
  timesteps: readonly number[],
  work: string,
): Promise<{ t: number; sigma: number; kept: number; skip_only: number }[]> {
  const raw = readSafetensors(modelFile).metadata.config;
  if (!raw) throw new Error(`${modelFile} has no config`);
  const d = parseModelConfig(JSON.parse(raw)).diffusion;
  const ac = alphasCumprod(d);
  const [n, h, w, c] = x0u8.shape as [number, number, number, number];
  const size = c * h * w;
  const x0 = new Float32Array(n * size); // [n, C, H, W] in [-1, 1]
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) x0[i * size + (k * h + y) * w + x] = x0u8.data[((i * h + y) * w + x) * c + k]! / 127.5 - 1;
  const lapOf = (v: ArrayLike<number>) => laplacian(n, h, w, c, (i, y, x, k) => v[i * size + (k * h + y) * w + x]!);
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, j) => s + v * b[j]!, 0);
  const rows = [];
  for (const t of timesteps) {
    if (!Number.isInteger(t) || t < 0 || t >= d.numTrainTimesteps) throw new Error(`denoiser timestep ${t} is outside 0..${d.numTrainTimesteps - 1}`);
    const a = ac[t]!;
    const sigma = Math.sqrt((1 - a) / a);
    const eps = torchRandn(1000 + t, n * size);
    const xt = x0.map((v, j) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[j]!);
    const vPred = d.predictionType === 'v_prediction';
    const vs = vScales(a, vPred ? d.sigmaData : 1);
    const inputs = join(work, `denoise-${t}.safetensors`);
    const out = join(work, `denoised-${t}.safetensors`);
    writeSafetensors(
      inputs,
      [
        ['x', { dtype: 'F32', shape: [n, c, h, w], data: new Uint8Array(xt.map((v) => v * (vPred ? vs.in : 1)).buffer) }],
        ['t', { dtype: 'I64', shape: [n], data: new Uint8Array(new BigInt64Array(n).fill(BigInt(t)).buffer) }],
      ],
      { prompts: JSON.stringify(captions) },
    );
    await worker.request('forward', { inputs, out });
    const o = readSafetensors(out).tensors.get('out')!;
    const v = new Float32Array(o.data.slice().buffer);
    const clamp = (z: number) => Math.min(1, Math.max(-1, z));
    const est = xt.map((z, j) => clamp(vPred ? vs.skip * z - vs.out * v[j]! : (z - Math.sqrt(1 - a) * v[j]!) / Math.sqrt(a)));
    const noise = lapOf(eps.map((e) => sigma * e));
    const slope = (estimate: ArrayLike<number>) => dot(lapOf(Float64Array.from(x0, (v, j) => estimate[j]! - v)), noise) / dot(noise, noise);
    rows.push({ t, sigma, kept: slope(est), skip_only: vPred ? slope(xt.map((z) => clamp(vs.skip * z))) : 1 });
  }
  return rows;
}

/**
 * (c) Speckle and prompt sensitivity of one sampler setting: every prompt at every seed, one image per
 * call (a batch draws different noise per row, and "same seed" must mean the same x_T).
 */
async function sweepSampler(worker: WorkerSupervisor, s: SamplerSetting, prompts: string[], seeds: readonly number[], guidance: number, work: string): Promise<TensorData> {
  const parts: TensorData[] = [];
  const out = join(work, `sweep-${s.sampler}-${s.steps}.safetensors`);
  for (const prompt of prompts)
    for (const seed of seeds) {
      await worker.request('sample', { prompt, seed, steps: s.steps, guidance, sampler: s.sampler, out });
      parts.push(readSafetensors(out).tensors.get('images')!);
    }
  return concatImages(parts);
}

export async function evalBase(o: EvalOptions): Promise<Record<string, unknown>> {
  const train = loadPack(o.train);
  const held = loadPack(o.heldout);
  const counts = new Map<string, number>();
  for (const c of train.categories) counts.set(c, (counts.get(c) ?? 0) + 1);
  const classes = [...counts]
    .filter(([, n]) => n >= o.minImages)
    .map(([c]) => c)
    .sort();
  const index = new Map(classes.map((c, i) => [c, i]));
  const frame = train.size * train.size * 3;
  const images = (p: Pack, ids: readonly number[]): TensorData => {
    const data = new Uint8Array(ids.length * frame);
    ids.forEach((id, k) => data.set(p.images.subarray(id * frame, (id + 1) * frame), k * frame));
    return { dtype: 'U8', shape: [ids.length, p.size, p.size, 3], data };
  };
  const ofClass = (p: Pack, c: string) => p.categories.flatMap((x, i) => (x === c ? [i] : []));
  const heldIds = classes.flatMap((c) => ofClass(held, c));
  const heldLabels = heldIds.map((id) => index.get(held.categories[id]!)!);
  o.log(`classifier: ${classes.length} categories with ≥ ${o.minImages} training images, ${classes.reduce((a, c) => a + counts.get(c)!, 0)} train / ${heldIds.length} held-out images`);

  const work = mkdtempSync(join(tmpdir(), 'shira-eval-base-'));
  const worker = new WorkerSupervisor({ binary: o.worker, threads: o.threads });
  try {
    await worker.start();
    const lab = new ConceptLab(worker, join(work, 'judge'), { steps: 25, guidance: 0 });
    // The judge depends on the data and its own seeded recipe only, not on the model under test: it is kept
    // beside the data (half an hour of a loaded 2-core CPU) and reused by the next model's evaluation.
    const judge = join(dirname(o.train), `eval-judge-${o.judgeSteps}.safetensors`);
    const reportFile = judge.replace(/\.safetensors$/, '.json');
    const dataTime = statSync(o.train).mtimeMs;
    const kept = existsSync(judge) && existsSync(reportFile) ? (JSON.parse(readFileSync(reportFile, 'utf8')) as JudgeTrainReply & { data_mtime: number }) : null;
    const report =
      kept?.data_mtime === dataTime
        ? kept
        : await lab.trainJudge(
            classes,
            classes.map((c) => images(train, ofClass(train, c))),
            judge,
            { steps: o.judgeSteps, seed: 1, heldoutFraction: 0.05 },
          );
    writeFileSync(reportFile, JSON.stringify({ ...report, data_mtime: dataTime }));
    const real = await lab.score(judge, images(held, heldIds));
    const realAccuracy = categoryAccuracy(real, classes.length, heldLabels);
    o.log(`classifier (${report.seconds.toFixed(0)} s): ${(realAccuracy.overall * 100).toFixed(1)} % on held-out real images, mean over categories (chance ${(100 / classes.length).toFixed(1)} %)`);

    await worker.request('load_model', { path: o.model });
    const labels = classes.flatMap((_, c) => new Array<number>(o.perCategory).fill(c));
    const runs: { guidance: number; scored: Scored; accuracy: ReturnType<typeof categoryAccuracy> }[] = [];
    for (const guidance of o.guidance) {
      const sampler = new ConceptLab(worker, join(work, `g${guidance}`), { steps: 25, guidance });
      const generated: TensorData[] = [];
      for (const c of classes) generated.push(await sampler.images(new Array<string>(o.perCategory).fill(categoryPrompt(c)), [100], c));
      const scored = await lab.score(judge, concatImages(generated));
      const accuracy = categoryAccuracy(scored, classes.length, labels);
      runs.push({ guidance, scored, accuracy });
      o.log(`guidance ${guidance}: ${o.perCategory} samples × ${classes.length} category prompts, ${(accuracy.overall * 100).toFixed(1)} % classified as their prompt's category`);
    }
    const [primary] = runs;
    if (!primary) throw new Error('eval:base needs at least one guidance scale');
    const gen = primary.scored;
    const prompts = classes.map(categoryPrompt);
    const trainSpeckle = meanAbsLaplacian(
      images(
        train,
        Array.from({ length: train.n }, (_, i) => i),
      ),
    );
    const sweep = [];
    for (const setting of o.samplers) {
      const imgs = await sweepSampler(worker, setting, prompts, o.sweepSeeds, primary.guidance, work);
      const speckle = meanAbsLaplacian(imgs);
      const sens = promptSensitivity(imgs, prompts.length, o.sweepSeeds.length);
      sweep.push({ ...setting, speckle, vs_training: speckle / trainSpeckle, prompt_distance: sens.prompts, seed_distance: sens.seeds, prompt_vs_seed: sens.ratio });
      o.log(
        `${setting.sampler} ${setting.steps} steps: speckle ${speckle.toFixed(3)} (${(speckle / trainSpeckle).toFixed(2)}× the training images'), prompts ${sens.prompts.toFixed(3)} vs seeds ${sens.seeds.toFixed(3)} apart (${sens.ratio.toFixed(2)})`,
      );
    }
    // Two held-out images of each category, with their own captions.
    const denoiseIds = classes.flatMap((c) => ofClass(held, c).slice(0, 2));
    const denoiser = await denoiserResidual(
      worker,
      o.model,
      images(held, denoiseIds),
      denoiseIds.map((i) => held.captions[i] ?? ''),
      o.denoiseTimesteps,
      work,
    );
    for (const r of denoiser)
      o.log(`denoiser at t = ${r.t} (σ ${r.sigma.toFixed(3)}): passes ${(100 * r.kept).toFixed(0)} % of the noise into x̂0 (a UNet that outputs 0: ${(100 * r.skip_only).toFixed(0)} %)`);
    // The floor: real training images, as many as were generated, spread over the same categories.
    const trainIds = classes.flatMap((c) => ofClass(train, c));
    const nGen = gen.n;
    const floorIds = trainIds.filter((_, k) => k % Math.max(1, Math.floor(trainIds.length / nGen)) === 0).slice(0, nGen);
    const floor = await lab.score(judge, images(train, floorIds));
    const perCategory = (xs: number[]) => Object.fromEntries(classes.map((c, i) => [c, xs[i]!]));
    return {
      model: o.model,
      categories: classes,
      chance: 1 / classes.length,
      classifier: { kind: 'CNN judge (native/src/concept.h), class-balanced, noise-augmented', steps: o.judgeSteps, train_images: report.train_count },
      classifier_heldout_accuracy: realAccuracy.overall,
      classifier_heldout_per_category: perCategory(realAccuracy.perCategory),
      guidance: primary.guidance,
      generated_accuracy: { overall: primary.accuracy.overall, per_category: perCategory(primary.accuracy.perCategory), vs_chance: primary.accuracy.overall * classes.length },
      // Row = the prompt's category, column = what the classifier saw, both in `categories` order.
      generated_confusion: primary.accuracy.confusion,
      by_guidance: runs.map((r) => ({ guidance: r.guidance, overall: r.accuracy.overall, vs_chance: r.accuracy.overall * classes.length })),
      speckle: { metric: 'mean |4-neighbour Laplacian|, [0, 1] units', training_images: trainSpeckle, guidance: primary.guidance, seeds: o.sweepSeeds, prompts, by_sampler: sweep },
      denoiser,
      frechet: {
        generated_vs_heldout: frechetDistance(gen.features, nGen, real.features, real.n, gen.f),
        train_subset_vs_heldout: frechetDistance(floor.features, floor.n, real.features, real.n, gen.f),
        samples: nGen,
        feature_dim: gen.f,
      },
      ...(await sampleSpeed(o)),
    };
  } finally {
    await worker.close();
    rmSync(work, { recursive: true, force: true });
  }
}
