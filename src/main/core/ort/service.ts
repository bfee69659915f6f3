// What the app needs from the ORT engine: one engine per base model, sparse patches for library adapters (the
// worker's `adapter_export` gives explicit indices for any stored encoding; the patch is cached by the adapter file's
// SHA-256), generation with a mix applied in place, the deployment export, and the "which engine is faster here"
// measurement, taken once and remembered in <data>/ort-engine.json.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerSupervisor } from '../worker/supervisor';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { OrtEngine } from './engine';
import { patchFromPeft, readPatch, writePatch, type SparsePatch } from './patch';

export type EngineName = 'worker' | 'ort';

export interface AdapterFile {
  /** A library cache file (format v2) or any file the worker's adapter_export reads. */
  path: string;
  sha256: string;
}

export interface OrtGenerateRequest {
  modelPath: string;
  mix: { adapter: AdapterFile; alpha: number }[];
  prompt: string;
  negativePrompt?: string;
  seed: number;
  steps: number;
  guidance: number;
  sampler?: 'ddim' | 'euler';
}

export interface EngineChoice {
  engine: EngineName;
  workerMs: number;
  ortMs: number;
  steps: number;
  measuredAt: string;
}

export class OrtService {
  private engines_ = new Map<string, Promise<OrtEngine>>();
  private lane_: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly o: {
      dataDir: string;
      /** The mixing worker (for adapter_export); null when none is built. */
      worker: () => WorkerSupervisor | null;
      threads?: number;
    },
  ) {}

  /** One engine per model file, opened on first use (export + two sessions: about a second for clipart-64). */
  engine(modelPath: string): Promise<OrtEngine> {
    let e = this.engines_.get(modelPath);
    if (!e) {
      e = OrtEngine.open(modelPath, { threads: this.o.threads });
      e.catch(() => this.engines_.delete(modelPath));
      this.engines_.set(modelPath, e);
    }
    return e;
  }

  /** The adapter as a sparse patch: from the cache, else through the worker's PEFT export (once per file hash). */
  async patchFor(adapter: AdapterFile, engine: OrtEngine): Promise<SparsePatch> {
    const dir = join(this.o.dataDir, 'cache', 'patches');
    const file = join(dir, `${adapter.sha256}.shira-patch.safetensors`);
    if (existsSync(file)) return readPatch(file);
    const w = this.o.worker();
    if (!w) throw new Error('Converting an adapter for the ONNX engine needs the native worker (adapter_export), and none is built.');
    const tmp = join(this.o.dataDir, 'tmp', `peft-${process.pid}-${Date.now()}`);
    mkdirSync(tmp, { recursive: true });
    try {
      await w.request('adapter_export', { path: adapter.path, out: tmp, format: 'peft' });
      const patch = patchFromPeft(tmp, (p) => engine.weightShape(p), { source_sha256: adapter.sha256 });
      mkdirSync(dir, { recursive: true });
      writePatch(file, patch);
      return patch;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** Generates one image (uint8 [1, S, S, C]) with the mix applied in place; calls are serialised. */
  generate(req: OrtGenerateRequest): Promise<{ images: Uint8Array; shape: [number, number, number, number]; switchMs: number; ms: number }> {
    const run = async () => {
      const t0 = performance.now();
      const engine = await this.engine(req.modelPath);
      const mix = [];
      for (const m of req.mix) mix.push({ patch: await this.patchFor(m.adapter, engine), alpha: m.alpha });
      const switched = await engine.applyMix(mix);
      const r = await engine.sample({ prompts: [req.prompt], negativePrompt: req.negativePrompt, seed: req.seed, steps: req.steps, guidance: req.guidance, sampler: req.sampler });
      return { images: r.images, shape: r.shape, switchMs: switched.ms, ms: performance.now() - t0 };
    };
    const p = this.lane_.then(run, run);
    this.lane_ = p.catch(() => undefined);
    return p;
  }

  /**
   * The faster engine on this machine, measured once (one warm image each, same seed, prompt and steps) and kept in
   * <data>/ort-engine.json; `remeasure` forces a new measurement.
   */
  async chooseEngine(modelPath: string, remeasure = false): Promise<EngineChoice> {
    const file = join(this.o.dataDir, 'ort-engine.json');
    if (!remeasure && existsSync(file)) {
      try {
        const saved = JSON.parse(readFileSync(file, 'utf8')) as EngineChoice;
        if (saved.engine === 'worker' || saved.engine === 'ort') return saved;
      } catch {
        // a damaged file is measured again
      }
    }
    const steps = 10;
    const req = { prompt: 'bird, birds, animals', seed: 1, steps, guidance: 5 };
    const engine = await this.engine(modelPath);
    await engine.applyMix([]);
    await engine.sample({ prompts: [req.prompt], ...req, steps: 1 }); // warm-up
    let t0 = performance.now();
    await engine.sample({ prompts: [req.prompt], ...req });
    const ortMs = performance.now() - t0;
    let workerMs = Infinity;
    const w = this.o.worker();
    if (w) {
      const out = join(this.o.dataDir, 'tmp', `engine-probe-${process.pid}.safetensors`);
      mkdirSync(join(this.o.dataDir, 'tmp'), { recursive: true });
      await w.request('sample', { ...req, steps: 1, out });
      t0 = performance.now();
      await w.request('sample', { ...req, out });
      workerMs = performance.now() - t0;
      rmSync(out, { force: true });
    }
    const choice: EngineChoice = { engine: ortMs < workerMs ? 'ort' : 'worker', workerMs: Number.isFinite(workerMs) ? workerMs : -1, ortMs, steps, measuredAt: new Date().toISOString() };
    writeFileSync(file, `${JSON.stringify(choice, null, 1)}\n`);
    return choice;
  }

  async close(): Promise<void> {
    const engines = [...this.engines_.values()];
    this.engines_.clear();
    await Promise.allSettled(engines.map(async (e) => (await e).close()));
  }
}

/**
 * The deployment bundle: text_encoder.onnx and unet.onnx (opset 18; targeted weights are inputs), base-weights.
 * safetensors (W0 of those inputs, F32, by input name), config.json (the model config with the vocab), and each
 * patch as patches/<name>.shira-patch.safetensors. docs/deploy.md shows how to run it with nothing but onnxruntime.
 */
export function writeDeployment(outDir: string, engine: OrtEngine, rawConfig: string, patches: Map<string, SparsePatch>): { files: string[] } {
  mkdirSync(join(outDir, 'patches'), { recursive: true });
  const files: string[] = [];
  const put = (name: string, bytes: Uint8Array | string) => {
    writeFileSync(join(outDir, name), bytes);
    files.push(name);
  };
  put('text_encoder.onnx', engine.exported.textEncoder.bytes);
  put('unet.onnx', engine.exported.unet.bytes);
  const inputs = [...engine.exported.textEncoder.weightInputs, ...engine.exported.unet.weightInputs];
  writeSafetensors(
    join(outDir, 'base-weights.safetensors'),
    inputs.map((w) => {
      const data = engine.baseWeight(w.name)!;
      return [w.name, { dtype: 'F32', shape: w.shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }] as const;
    }),
    { format: 'shira-studio-onnx-weights', targets: JSON.stringify(engine.exported.targets) },
  );
  files.push('base-weights.safetensors');
  put('config.json', `${rawConfig}\n`);
  for (const [name, p] of patches) {
    const rel = join('patches', `${name}.shira-patch.safetensors`);
    writePatch(join(outDir, rel), p);
    files.push(rel);
  }
  return { files };
}

/** Reads base-weights.safetensors back (deployments and tests). */
export function readDeploymentWeights(path: string): Map<string, { shape: number[]; data: Float32Array }> {
  const st = readSafetensors(path);
  return new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: new Float32Array(t.data.slice().buffer) }]));
}
