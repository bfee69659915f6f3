// Measuring styles with the worker's judge (its judge_train / judge_score ops): sample → score → style score,
// drift and weight-space overlap. Shared by the `eval:concept` protocol and the app's Compare view.
// Images travel as safetensors files in `workDir`, never as JSON.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type TensorData } from '../io/safetensors';
import type { JudgeTrainReply, OverlapSummary } from '../worker/protocol';
import type { WorkerSupervisor } from '../worker/supervisor';

/** Content prompts for style scores (a trigger word is prepended) and unrelated prompts for drift. */
export const CONTENT_PROMPTS = ['bird, birds, animals', 'house, buildings', 'car, transportation', 'flower, plants'];
export const UNRELATED_PROMPTS = ['man, people', 'star, stars, shapes', 'red apple, fruit, food', 'computer, hardware'];
export const SCORE_SEEDS = [101, 202];

export interface Scored {
  classes: string[];
  /** Softmax [n, classes.length], row-major. */
  probs: Float32Array;
  /** Pooled penultimate judge features [n, f]. */
  features: Float32Array;
  n: number;
  f: number;
}

export const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
export const std = (xs: readonly number[]) => {
  const m = mean(xs);
  return Math.sqrt(mean(xs.map((x) => (x - m) ** 2)));
};

const floats = (t: TensorData) => new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));

export class ConceptLab {
  private n_ = 0;

  constructor(
    private readonly worker: WorkerSupervisor,
    readonly workDir: string,
    readonly sampling: { steps: number; guidance: number },
  ) {
    mkdirSync(workDir, { recursive: true });
  }

  private file(tag: string): string {
    return join(this.workDir, `${tag.replace(/[^\w.+-]/g, '_')}-${++this.n_}.safetensors`);
  }

  /** One batch of images from the worker's current weights (whatever mix is applied): U8 [n, H, W, 3]. */
  async sample(prompts: string[], seed: number, tag: string): Promise<string> {
    const out = this.file(tag);
    await this.worker.request('sample', { prompt: prompts, batch: prompts.length, seed, steps: this.sampling.steps, guidance: this.sampling.guidance, out });
    return out;
  }

  /** prompts × seeds images, concatenated seed-major, so two calls with equal arguments pair image for image. */
  async images(prompts: string[], seeds: readonly number[], tag: string): Promise<TensorData> {
    const parts: TensorData[] = [];
    for (const seed of seeds) parts.push(readSafetensors(await this.sample(prompts, seed, tag)).tensors.get('images')!);
    return concatImages(parts);
  }

  /** heldoutFraction: the share of each class the judge keeps back to report its own accuracy (0.2). */
  async trainJudge(classes: string[], perClass: TensorData[], out: string, o: { steps?: number; seed?: number; heldoutFraction?: number } = {}): Promise<JudgeTrainReply> {
    const all = concatImages(perClass);
    const labels = perClass.flatMap((t, c) => Array<bigint>(t.shape[0]!).fill(BigInt(c)));
    const data = this.file('judge-data');
    writeSafetensors(
      data,
      [
        ['images', all],
        ['labels', { dtype: 'I64', shape: [labels.length], data: new Uint8Array(BigInt64Array.from(labels).buffer) }],
      ],
      { classes: JSON.stringify(classes) },
    );
    return this.worker.request('judge_train', { data, out, steps: o.steps ?? 400, seed: o.seed ?? 0, heldoutFraction: o.heldoutFraction ?? 0.2 });
  }

  async score(judge: string, images: TensorData): Promise<Scored> {
    const input = this.file('score-in');
    writeSafetensors(input, [['images', images]]);
    const out = this.file('score-out');
    await this.worker.request('judge_score', { judge, images: input, out });
    const st = readSafetensors(out);
    const p = st.tensors.get('probs')!;
    const f = st.tensors.get('features')!;
    return { classes: JSON.parse(st.metadata.classes ?? '[]') as string[], probs: floats(p), features: floats(f), n: p.shape[0]!, f: f.shape[1]! };
  }

  async overlap(a: string, b: string, alphaA = 1, alphaB = 1): Promise<OverlapSummary> {
    return (await this.worker.request('adapter_overlap', { a, b, alphaA, alphaB })).summary;
  }
}

export function concatImages(parts: readonly TensorData[]): TensorData {
  if (parts.length === 0) throw new Error('no images');
  const [, h, w, c] = parts[0]!.shape;
  for (const p of parts) if (p.dtype !== 'U8' || p.shape[1] !== h || p.shape[2] !== w || p.shape[3] !== c) throw new Error('images differ in size or type');
  const n = parts.reduce((a, p) => a + p.shape[0]!, 0);
  return { dtype: 'U8', shape: [n, h!, w!, c!], data: Buffer.concat(parts.map((p) => Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength))) };
}

/** Mean judge probability of class `style` over the scored images. */
export function styleScore(s: Scored, style: string): number {
  const c = s.classes.indexOf(style);
  if (c < 0) throw new Error(`the judge has no class "${style}"`);
  const xs: number[] = [];
  for (let i = 0; i < s.n; i++) xs.push(s.probs[i * s.classes.length + c]!);
  return mean(xs);
}

/** 1 − cosine similarity of judge features, image i against base image i (same prompt and seed). */
export function drift(a: Scored, base: Scored): number {
  if (a.n !== base.n || a.f !== base.f) throw new Error('drift needs the same prompts and seeds on both sides');
  const xs: number[] = [];
  for (let i = 0; i < a.n; i++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let k = 0; k < a.f; k++) {
      const x = a.features[i * a.f + k]!;
      const y = base.features[i * a.f + k]!;
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    xs.push(1 - dot / (Math.sqrt(na * nb) || 1));
  }
  return mean(xs);
}
