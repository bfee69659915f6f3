// `npm run bench:ort` rows (one JSON object per line) and `tools ort-export`:
//   ort_generate  — one image, same seed/prompt/steps: the native worker's `sample` vs the ONNX engine (CPU, N threads)
//   ort_switch    — applying a SHiRA mix on ORT: in-place patch of the weight inputs vs rebuilding the session with
//                   the mix fused into initializers (export + InferenceSession.create), the alternative without inputs
//   ort_parity    — max abs diff of the two engines' images for the same seed (levels of 255)
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { OrtEngine } from '../src/main/core/ort/engine';
import { DEFAULT_TARGETS, layerMatches, loadModelFile, type Weight } from '../src/main/core/ort/model';
import { blendDeltas, patchFromPeft, type SparsePatch } from '../src/main/core/ort/patch';
import { writeDeployment } from '../src/main/core/ort/service';
import { readSafetensors } from '../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number) => Math.round(x * 100) / 100;

/** A SHiRA-like patch: every `every`-th entry (offset by seed) of every targeted UNet weight, values ~±0.05. */
export function syntheticPatch(weights: Map<string, Weight>, seed: number, every = 50): SparsePatch {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const tensors = new Map<string, { shape: number[]; indices: Int32Array; values: Float32Array }>();
  for (const [name, w] of weights) {
    if (!name.startsWith('unet.') || !name.endsWith('.weight') || !layerMatches(name.slice(0, -7), DEFAULT_TARGETS)) continue;
    const idx: number[] = [];
    for (let i = seed % every; i < w.data.length; i += every) idx.push(i);
    tensors.set(name, { shape: w.shape, indices: Int32Array.from(idx), values: Float32Array.from(idx, () => (rnd() - 0.5) * 0.1) });
  }
  return { tensors, metadata: {} };
}

export async function benchOrt(o: {
  worker: string;
  model: string;
  threads: number;
  reps: number;
  steps: number;
  emit: (row: Record<string, unknown>) => void;
  log: (line: string) => void;
}): Promise<void> {
  const { config, weights } = loadModelFile(o.model);
  const engine = await OrtEngine.fromWeights(config, weights, { threads: o.threads });
  const worker = new WorkerSupervisor({ binary: o.worker, threads: o.threads });
  const tmp = join(process.cwd(), '.data', 'bench-ort');
  mkdirSync(tmp, { recursive: true });
  try {
    await worker.request('load_model', { path: o.model });
    const req = { prompt: 'bird, birds, animals', guidance: 5, steps: o.steps };
    // --- generation time, warm (one untimed draw each first)
    const times: Record<'worker' | 'ort', number[]> = { worker: [], ort: [] };
    let lastWorker: Uint8Array | null = null;
    let lastOrt: Uint8Array | null = null;
    for (let r = -1; r < o.reps; r++) {
      const seed = 100 + r;
      let t0 = performance.now();
      const out = join(tmp, 'sample.safetensors');
      await worker.request('sample', { ...req, seed, out });
      const wMs = performance.now() - t0;
      lastWorker = readSafetensors(out).tensors.get('images')!.data;
      t0 = performance.now();
      lastOrt = (await engine.sample({ prompts: [req.prompt], seed, steps: req.steps, guidance: req.guidance })).images;
      const oMs = performance.now() - t0;
      if (r >= 0) {
        times.worker.push(wMs);
        times.ort.push(oMs);
      }
      o.log(`generate rep ${r}: worker ${wMs.toFixed(0)} ms, ort ${oMs.toFixed(0)} ms`);
    }
    for (const e of ['worker', 'ort'] as const) {
      o.emit({ name: 'ort_generate', engine: e, model: config.name, steps: o.steps, threads: o.threads, reps: o.reps, ms_median: round(median(times[e])), ms_min: round(Math.min(...times[e])) });
    }
    let d = 0;
    for (let i = 0; i < lastWorker!.length; i++) d = Math.max(d, Math.abs(lastWorker![i]! - lastOrt![i]!));
    o.emit({ name: 'ort_parity', model: config.name, steps: o.steps, image_maxdiff_levels: d });

    // --- switching: in place (alternate between two patches, so every switch restores and writes)
    const patches = [syntheticPatch(weights, 1), syntheticPatch(weights, 2)];
    const values = [...patches[0]!.tensors.values()].reduce((a, t) => a + t.indices.length, 0);
    const inPlace: number[] = [];
    const scatter: number[] = [];
    for (let r = 0; r < o.reps * 2; r++) {
      const t = await engine.applyMix([{ patch: patches[r % 2]!, alpha: 1 }]);
      inPlace.push(t.ms);
      scatter.push(t.scatterMs);
    }
    o.emit({
      name: 'ort_switch',
      method: 'in_place_patch',
      model: config.name,
      tensors: patches[0]!.tensors.size,
      values,
      reps: inPlace.length,
      ms_median: round(median(inPlace)),
      scatter_ms_median: round(median(scatter)),
    });
    // --- switching by rebuilding: fuse into a copy of the weights, export with no weight inputs, create sessions
    const rebuild: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const t0 = performance.now();
      const fused = new Map(weights);
      for (const [name, dlt] of blendDeltas([{ patch: patches[r % 2]!, alpha: 1 }])) {
        const w = weights.get(name)!;
        const data = Float32Array.from(w.data);
        for (let k = 0; k < dlt.indices.length; k++) data[dlt.indices[k]!] = Math.fround(data[dlt.indices[k]!]! + dlt.add[k]!);
        fused.set(name, { shape: w.shape, data });
      }
      const e2 = await OrtEngine.fromWeights(config, fused, { threads: o.threads, targets: [] });
      rebuild.push(performance.now() - t0);
      await e2.close();
    }
    o.emit({ name: 'ort_switch', method: 'rebuild_session', model: config.name, tensors: patches[0]!.tensors.size, values, reps: rebuild.length, ms_median: round(median(rebuild)) });
  } finally {
    await engine.close();
    await worker.close();
  }
}

/** `tools ort-export --out DIR [--adapter NAME=FILE]...`: the deployment bundle (docs/deploy.md). */
export async function ortExport(o: { worker: string; model: string; out: string; adapters: [string, string][]; log: (line: string) => void }): Promise<{ out: string; files: string[] }> {
  const engine = await OrtEngine.open(o.model, { threads: 1 });
  const worker = o.adapters.length ? new WorkerSupervisor({ binary: o.worker, threads: 1 }) : null;
  try {
    const patches = new Map<string, SparsePatch>();
    for (const [name, file] of o.adapters) {
      if (!/^[\w.-]+$/.test(name)) throw new Error(`--adapter ${name}=…: the name may use letters, digits, '.', '_' and '-' only`);
      const peft = join(o.out, 'tmp-peft', name);
      mkdirSync(peft, { recursive: true });
      await worker!.request('load_model', { path: o.model });
      await worker!.request('adapter_export', { path: file, out: peft, format: 'peft' });
      patches.set(
        name,
        patchFromPeft(peft, (p) => engine.weightShape(p), { source: file }),
      );
      o.log(`adapter ${name}: ${[...patches.get(name)!.tensors.values()].reduce((a, t) => a + t.indices.length, 0)} values`);
    }
    const raw = readSafetensors(o.model).metadata.config!;
    const { files } = writeDeployment(o.out, engine, raw, patches);
    rmSync(join(o.out, 'tmp-peft'), { recursive: true, force: true });
    return { out: o.out, files };
  } finally {
    await engine.close();
    await worker?.close();
  }
}
