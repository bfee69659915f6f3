// The portable inference engine: the base model exported to ONNX, run by onnxruntime-node in a worker_thread, with
// SHiRA mixes applied in place on the weight inputs (paper §3.2: a fused sparse adapter changes only the weights,
// never the engine). Same samplers and the same arithmetic for a mix as the native worker (tests/unit/ort.test.ts
// measures how close): applyMix and clear mirror native mix_apply / mix_clear through patch.ts, sample mirrors the
// worker's `sample` op (sample_images) through sampler.ts, the graphs come from export.ts.
//
// Memory: the main thread keeps W0 of the targeted weights (to restore from and to add to); the thread keeps the live
// copies it feeds. Everything else lives only inside the ORT sessions.
import { availableParallelism } from 'node:os';
import { exportModel, type ExportedModel } from './export';
import { loadModelFile, WordTokenizer, type ModelConfig, type Weight } from './model';
import { blendDeltas, type MixItem } from './patch';
import { imagesFromModel, sample, torchRandn } from './sampler';
import { OrtThread, type ScatterUpdate } from './thread';

export interface OrtEngineOptions {
  /** intra-op threads of each session; default all cores but one. */
  threads?: number;
  targets?: readonly string[];
}

export interface OrtSampleRequest {
  prompts: string[];
  negativePrompt?: string;
  steps: number;
  guidance: number;
  sampler?: 'ddim' | 'euler';
  /** x_T [B, C, S, S]; default torch.randn from `seed` (the worker's draw for that seed). */
  noise?: Float32Array;
  seed?: number;
  shouldStop?: () => boolean;
  onStep?: (done: number, total: number) => void;
}

export interface MixTiming {
  /** Whole switch on the main thread: blending, restoring and the thread's scatter. */
  ms: number;
  /** The scatter alone, inside the ORT thread. */
  scatterMs: number;
  tensors: number;
  values: number;
}

type Graph = 'text_encoder' | 'unet';

export class OrtEngine {
  private readonly tokenizer_: WordTokenizer;
  /** W0 per weight input (fp32 copies), and which graph holds it. */
  private readonly base_ = new Map<string, { graph: Graph; data: Float32Array }>();
  /** What is applied now: tensor -> indices written (restore target). */
  private applied_ = new Map<string, Int32Array>();

  private constructor(
    readonly config: ModelConfig,
    readonly exported: ExportedModel,
    private readonly thread_: OrtThread,
  ) {
    this.tokenizer_ = new WordTokenizer(config.text.vocab, config.text.spareBuckets);
  }

  /** Exports `modelPath` (a shira-studio model file) and opens both sessions; about a second for the built-in model. */
  static async open(modelPath: string, options: OrtEngineOptions = {}): Promise<OrtEngine> {
    const { config, weights } = loadModelFile(modelPath);
    return OrtEngine.fromWeights(config, weights, options);
  }

  static async fromWeights(config: ModelConfig, weights: Map<string, Weight>, options: OrtEngineOptions = {}): Promise<OrtEngine> {
    const exported = exportModel(config, weights, { targets: options.targets });
    const thread = new OrtThread();
    const engine = new OrtEngine(config, exported, thread);
    const threads = options.threads ?? Math.max(1, availableParallelism() - 1);
    try {
      for (const [graph, g] of [
        ['text_encoder', exported.textEncoder],
        ['unet', exported.unet],
      ] as const) {
        const live = g.weightInputs.map((w) => {
          const data = weights.get(w.name)!.data;
          engine.base_.set(w.name, { graph, data: Float32Array.from(data) });
          return { name: w.name, shape: w.shape, data: Float32Array.from(data) };
        });
        await thread.load(graph, g.bytes, live, threads);
      }
    } catch (error) {
      await thread.close();
      throw error;
    }
    return engine;
  }

  /** W0 of a weight input (the engine's own copy: do not modify). */
  baseWeight(name: string): Float32Array | undefined {
    return this.base_.get(name)?.data;
  }

  /** The weight inputs a patch may touch, with their shapes. */
  weightShape(name: string): number[] | undefined {
    const b = this.base_.get(name);
    if (!b) return undefined;
    return (b.graph === 'unet' ? this.exported.unet : this.exported.textEncoder).weightInputs.find((w) => w.name === name)!.shape;
  }

  /**
   * Makes the live weights W0 + Σ αᵢ·Sᵢ (an empty mix restores W0): first every tensor the previous mix touched is
   * restored at the indices it wrote, then the new values are written, in one scatter per graph.
   */
  async applyMix(mix: readonly MixItem[]): Promise<MixTiming> {
    const t0 = performance.now();
    const deltas = blendDeltas(mix);
    for (const name of deltas.keys()) {
      if (!this.base_.has(name)) throw new Error(`mix: '${name}' is not a weight input of the ONNX export (targets: ${this.exported.targets.join(', ')})`);
    }
    const updates: Record<Graph, ScatterUpdate[]> = { text_encoder: [], unet: [] };
    for (const [name, idx] of this.applied_) {
      const b = this.base_.get(name)!;
      const values = new Float32Array(idx.length);
      for (let k = 0; k < idx.length; k++) values[k] = b.data[idx[k]!]!;
      updates[b.graph].push({ tensor: name, indices: idx, values });
    }
    const applied = new Map<string, Int32Array>();
    let values = 0;
    for (const [name, d] of deltas) {
      const b = this.base_.get(name)!;
      const w = b.data;
      if (d.indices.length && d.indices[d.indices.length - 1]! >= w.length) throw new Error(`mix: an index of '${name}' is outside its ${w.length} elements`);
      // Float32Array stores round to fp32: W = fp32(W0 + add), the worker's scatter_add_keep.
      const next = new Float32Array(d.indices.length);
      for (let k = 0; k < next.length; k++) next[k] = w[d.indices[k]!]! + d.add[k]!;
      updates[b.graph].push({ tensor: name, indices: d.indices, values: next });
      applied.set(name, d.indices);
      values += d.indices.length;
    }
    let scatterMs = 0;
    for (const graph of ['text_encoder', 'unet'] as const) {
      if (updates[graph].length) scatterMs += (await this.thread_.scatter(graph, updates[graph])).ms;
    }
    this.applied_ = applied;
    return { ms: performance.now() - t0, scatterMs, tensors: deltas.size, values };
  }

  /** A live weight input as the sessions see it (tests). */
  readWeight(name: string, indices?: Int32Array): Promise<Float32Array> {
    const b = this.base_.get(name);
    if (!b) return Promise.reject(new Error(`'${name}' is not a weight input`));
    return this.thread_.read(b.graph, name, indices);
  }

  tokenize(prompts: readonly string[]): BigInt64Array {
    return BigInt64Array.from(prompts.flatMap((p) => this.tokenizer_.encode(p, this.config.text.maxLength)).map(BigInt));
  }

  /** Text encoder: prompts -> context [B, L, D]. */
  async encode(prompts: readonly string[]): Promise<Float32Array> {
    const r = await this.thread_.run('text_encoder', { input_ids: { type: 'int64', dims: [prompts.length, this.config.text.maxLength], data: this.tokenize(prompts) } });
    return r.outputs.context!.data;
  }

  /** UNet: x [B, C, S, S], t [B], context [B, L, D] -> prediction [B, C, S, S]. */
  async predict(x: Float32Array, t: readonly number[], context: Float32Array): Promise<{ out: Float32Array; ms: number }> {
    const B = t.length;
    const u = this.config.unet;
    const r = await this.thread_.run('unet', {
      x: { type: 'float32', dims: [B, u.inChannels, u.sampleSize, u.sampleSize], data: x },
      t: { type: 'int64', dims: [B], data: BigInt64Array.from(t.map(BigInt)) },
      context: { type: 'float32', dims: [B, this.config.text.maxLength, this.config.text.width], data: context },
    });
    return { out: r.outputs.out!.data, ms: r.ms };
  }

  /** Draws images with the current mix: x_0 in model space and uint8 [B, S, S, C]. */
  async sample(req: OrtSampleRequest): Promise<{ x0: Float32Array; images: Uint8Array; shape: [number, number, number, number] }> {
    const B = req.prompts.length;
    const u = this.config.unet;
    const shape: [number, number, number, number] = [B, u.outChannels, u.sampleSize, u.sampleSize];
    const n = B * u.outChannels * u.sampleSize * u.sampleSize;
    const noise = req.noise ?? torchRandn(req.seed ?? 0, n);
    if (noise.length !== n) throw new Error(`sample: noise has ${noise.length} values; [${shape.join(', ')}] needs ${n}`);
    // [uncond; cond], as the worker's sample_images
    const neg = await this.encode(Array.from({ length: B }, () => req.negativePrompt ?? ''));
    const cond = await this.encode(req.prompts);
    const context = new Float32Array(neg.length + cond.length);
    context.set(neg, 0);
    context.set(cond, neg.length);
    const x0 = await sample(
      async (x2, t) =>
        (
          await this.predict(
            x2,
            Array.from({ length: 2 * B }, () => t),
            context,
          )
        ).out,
      {
        sampler: req.sampler ?? 'ddim',
        steps: req.steps,
        guidance: req.guidance,
        noise,
        diffusion: this.config.diffusion,
        shouldStop: req.shouldStop,
        onStep: req.onStep,
      },
    );
    return { x0, images: imagesFromModel(x0, shape), shape: [B, u.sampleSize, u.sampleSize, u.outChannels] };
  }

  close(): Promise<void> {
    return this.thread_.close();
  }
}
