// `npm run eval:base`: how good is the built-in model, in numbers.
//   (a) a small CNN classifier (the concept lab's judge, native/src/concept.h: class-balanced batches,
//       noise augmentation so sampler noise is not a class), trained here on the real training split's
//       top-level categories that have enough images, labels generated samples for each category
//       prompt: accuracy per category and overall, against chance;
//   (b) the Fréchet distance in that classifier's pooled features between generated samples and the
//       held-out real images, beside the same distance for a same-size subset of real training images
//       (the floor a perfect generator would reach at this sample size).
// Everything is seeded; the same weights give the same numbers on the same machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { concatImages, ConceptLab, type Scored } from '../src/main/core/concept/lab';
import { readSafetensors, type TensorData } from '../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';

export interface Pack {
  images: Uint8Array;
  n: number;
  size: number;
  categories: string[];
}

export function loadPack(file: string): Pack {
  const f = readSafetensors(file);
  const t = f.tensors.get('images')!;
  return { images: t.data, n: t.shape[0]!, size: t.shape[1]!, categories: JSON.parse(f.metadata.categories ?? '[]') as string[] };
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
  const perCategory = confusion.map((row, c) => row[c]! / Math.max(1, row.reduce((x, y) => x + y, 0)));
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
  log: (line: string) => void;
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

export async function evalBase(o: EvalOptions): Promise<Record<string, unknown>> {
  const train = loadPack(o.train);
  const held = loadPack(o.heldout);
  const counts = new Map<string, number>();
  for (const c of train.categories) counts.set(c, (counts.get(c) ?? 0) + 1);
  const classes = [...counts].filter(([, n]) => n >= o.minImages).map(([c]) => c).sort();
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
    const judge = join(work, 'judge.safetensors');
    const report = await lab.trainJudge(classes, classes.map((c) => images(train, ofClass(train, c))), judge, { steps: o.judgeSteps, seed: 1, heldoutFraction: 0.05 });
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
