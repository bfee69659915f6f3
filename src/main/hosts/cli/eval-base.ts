// `npm run eval:base`: how good is the built-in model, in numbers.
//   (a) a small classifier (MLP on 16×16 RGB thumbnails), trained here on the real training
//       split's top-level categories that have enough images, labels generated samples for each
//       category prompt: accuracy per category and overall, against chance;
//   (b) the Fréchet distance in that classifier's hidden features between generated samples and
//       the held-out real images, beside the same distance for a same-size subset of real training
//       images (the floor a perfect generator would reach at this sample size).
// Everything is seeded; the same weights give the same numbers.
import { readSafetensors } from '../../core/worker/safetensors';
import { WorkerSupervisor } from '../../core/worker/supervisor';

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

export const FEATURE_SIDE = 16;
export const FEATURES = FEATURE_SIDE * FEATURE_SIDE * 3;

/** Box-filtered 16×16 RGB in [0,1]: [n, 768]. */
export function thumbnails(images: Uint8Array, n: number, size: number): Float32Array {
  const f = size / FEATURE_SIDE;
  const out = new Float32Array(n * FEATURES);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++)
        for (let c = 0; c < 3; c++) {
          const o = i * FEATURES + (Math.floor(y / f) * FEATURE_SIDE + Math.floor(x / f)) * 3 + c;
          out[o]! += images[((i * size + y) * size + x) * 3 + c]! / (255 * f * f);
        }
  return out;
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x9e3779b9) >>> 0) / 2 ** 32);
}

/** 768 → H (ReLU) → C, softmax cross-entropy, Adam; small enough to train in seconds in JS. */
export class Mlp {
  readonly w1: Float32Array;
  readonly b1: Float32Array;
  readonly w2: Float32Array;
  readonly b2: Float32Array;
  constructor(
    readonly inputs: number,
    readonly hidden: number,
    readonly classes: number,
    seed = 1,
  ) {
    const r = rng(seed);
    const gauss = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
    this.w1 = Float32Array.from({ length: inputs * hidden }, () => gauss() * Math.sqrt(2 / inputs));
    this.b1 = new Float32Array(hidden);
    this.w2 = Float32Array.from({ length: hidden * classes }, () => gauss() * Math.sqrt(1 / hidden));
    this.b2 = new Float32Array(classes);
  }

  hiddenOf(x: Float32Array, i: number, out: Float32Array): void {
    const { inputs, hidden, w1, b1 } = this;
    for (let h = 0; h < hidden; h++) {
      let s = b1[h]!;
      for (let k = 0; k < inputs; k++) s += x[i * inputs + k]! * w1[k * hidden + h]!;
      out[h] = s > 0 ? s : 0;
    }
  }

  logitsOf(hid: Float32Array, out: Float32Array): void {
    const { hidden, classes, w2, b2 } = this;
    for (let c = 0; c < classes; c++) {
      let s = b2[c]!;
      for (let h = 0; h < hidden; h++) s += hid[h]! * w2[h * classes + c]!;
      out[c] = s;
    }
  }

  predict(x: Float32Array, n: number): { labels: number[]; hidden: Float32Array } {
    const hid = new Float32Array(this.hidden);
    const logits = new Float32Array(this.classes);
    const feats = new Float32Array(n * this.hidden);
    const labels: number[] = [];
    for (let i = 0; i < n; i++) {
      this.hiddenOf(x, i, hid);
      feats.set(hid, i * this.hidden);
      this.logitsOf(hid, logits);
      labels.push(logits.indexOf(Math.max(...logits)));
    }
    return { labels, hidden: feats };
  }

  train(x: Float32Array, y: number[], epochs: number, lr = 2e-3, batch = 32, seed = 2): void {
    const { inputs, hidden, classes } = this;
    const params = [this.w1, this.b1, this.w2, this.b2];
    const grads = params.map((p) => new Float32Array(p.length));
    const m = params.map((p) => new Float32Array(p.length));
    const v = params.map((p) => new Float32Array(p.length));
    const order = y.map((_, i) => i);
    const r = rng(seed);
    const hid = new Float32Array(hidden);
    const logits = new Float32Array(classes);
    const dh = new Float32Array(hidden);
    let t = 0;
    for (let e = 0; e < epochs; e++) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (let start = 0; start < order.length; start += batch) {
        for (const g of grads) g.fill(0);
        const ids = order.slice(start, start + batch);
        for (const i of ids) {
          this.hiddenOf(x, i, hid);
          this.logitsOf(hid, logits);
          const max = Math.max(...logits);
          let sum = 0;
          for (let c = 0; c < classes; c++) sum += (logits[c] = Math.exp(logits[c]! - max));
          dh.fill(0);
          for (let c = 0; c < classes; c++) {
            const d = logits[c]! / sum - (c === y[i] ? 1 : 0);
            grads[3]![c]! += d;
            for (let h = 0; h < hidden; h++) {
              grads[2]![h * classes + c]! += d * hid[h]!;
              dh[h]! += d * this.w2[h * classes + c]!;
            }
          }
          for (let h = 0; h < hidden; h++) {
            if (hid[h]! <= 0) continue;
            grads[1]![h]! += dh[h]!;
            for (let k = 0; k < inputs; k++) grads[0]![k * hidden + h]! += dh[h]! * x[i * inputs + k]!;
          }
        }
        t++;
        for (let p = 0; p < params.length; p++) {
          const P = params[p]!;
          const G = grads[p]!;
          for (let k = 0; k < P.length; k++) {
            const g = G[k]! / ids.length;
            m[p]![k] = 0.9 * m[p]![k]! + 0.1 * g;
            v[p]![k] = 0.999 * v[p]![k]! + 0.001 * g * g;
            P[k]! -= (lr * (m[p]![k]! / (1 - 0.9 ** t))) / (Math.sqrt(v[p]![k]! / (1 - 0.999 ** t)) + 1e-8);
          }
        }
      }
    }
  }
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

export interface EvalOptions {
  worker: string;
  threads: number;
  model: string;
  train: string;
  heldout: string;
  perCategory: number;
  minImages: number;
  log: (line: string) => void;
}

export const categoryPrompt = (category: string) => category.replace(/_/g, ' ');

export async function evalBase(o: EvalOptions): Promise<Record<string, unknown>> {
  const train = loadPack(o.train);
  const held = loadPack(o.heldout);
  const counts = new Map<string, number>();
  for (const c of train.categories) counts.set(c, (counts.get(c) ?? 0) + 1);
  const classes = [...counts].filter(([, n]) => n >= o.minImages).map(([c]) => c).sort();
  const index = new Map(classes.map((c, i) => [c, i]));
  const pick = (p: Pack) => p.categories.flatMap((c, i) => (index.has(c) ? [i] : []));
  const subset = (p: Pack, ids: number[]) => {
    const frame = p.size * p.size * 3;
    const data = new Uint8Array(ids.length * frame);
    ids.forEach((id, k) => data.set(p.images.subarray(id * frame, (id + 1) * frame), k * frame));
    return { x: thumbnails(data, ids.length, p.size), y: ids.map((id) => index.get(p.categories[id]!)!) };
  };
  const trainIds = pick(train);
  const heldIds = pick(held);
  const tr = subset(train, trainIds);
  const te = subset(held, heldIds);
  o.log(`classifier: ${classes.length} categories with ≥ ${o.minImages} training images, ${trainIds.length} train / ${heldIds.length} held-out images`);
  const mlp = new Mlp(FEATURES, 64, classes.length);
  mlp.train(tr.x, tr.y, 12);
  const realPred = mlp.predict(te.x, heldIds.length);
  const realAccuracy = realPred.labels.filter((l, i) => l === te.y[i]).length / heldIds.length;
  o.log(`classifier accuracy on held-out real images: ${(realAccuracy * 100).toFixed(1)} % (chance ${(100 / classes.length).toFixed(1)} %)`);

  const worker = new WorkerSupervisor({ binary: o.worker, threads: o.threads });
  const generated: Uint8Array[] = [];
  let sampleMs = 0;
  try {
    await worker.start();
    await worker.request('load_model', { path: o.model });
    // Speed: one image, 25 steps, classifier-free guidance (two UNet passes a step); warm.
    await worker.request('sample', { prompt: 'bird', seed: 1, steps: 25, guidance: 4 });
    const timed = (await worker.request('sample', { prompt: 'bird', seed: 2, steps: 25, guidance: 4 })) as { ms: number };
    sampleMs = timed.ms;
    for (const c of classes) {
      const r = (await worker.request('sample', { prompt: categoryPrompt(c), batch: o.perCategory, seed: 100, steps: 25, guidance: 4 })) as { out: string };
      generated.push(readSafetensors(r.out).tensors.get('images')!.data);
      o.log(`sampled ${o.perCategory} × "${categoryPrompt(c)}"`);
    }
  } finally {
    await worker.close();
  }
  const all = new Uint8Array(generated.reduce((a, g) => a + g.length, 0));
  let off = 0;
  for (const g of generated) {
    all.set(g, off);
    off += g.length;
  }
  const nGen = classes.length * o.perCategory;
  const gx = thumbnails(all, nGen, train.size);
  const gen = mlp.predict(gx, nGen);
  const perCategory: Record<string, number> = {};
  classes.forEach((c, ci) => {
    const labels = gen.labels.slice(ci * o.perCategory, (ci + 1) * o.perCategory);
    perCategory[c] = labels.filter((l) => l === ci).length / o.perCategory;
  });
  const overall = Object.values(perCategory).reduce((a, b) => a + b, 0) / classes.length;
  // The floor: real training images, as many as were generated, spread over the same categories.
  const floorIds = trainIds.filter((_, k) => k % Math.max(1, Math.floor(trainIds.length / nGen)) === 0).slice(0, nGen);
  const floor = subset(train, floorIds);
  const floorHidden = mlp.predict(floor.x, floorIds.length).hidden;
  const d = mlp.hidden;
  return {
    model: o.model,
    categories: classes,
    chance: 1 / classes.length,
    classifier_heldout_accuracy: realAccuracy,
    generated_accuracy: { overall, per_category: perCategory, vs_chance: overall * classes.length },
    frechet: {
      generated_vs_heldout: frechetDistance(gen.hidden, nGen, realPred.hidden, heldIds.length, d),
      train_subset_vs_heldout: frechetDistance(floorHidden, floorIds.length, realPred.hidden, heldIds.length, d),
      samples: nGen,
      feature_dim: d,
    },
    sample_ms_64px_25steps_cfg: sampleMs,
  };
}
