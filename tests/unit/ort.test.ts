// The ONNX export + onnxruntime-node engine against the native worker on the shipped model: the text encoder's
// context, the UNet's prediction with and without a SHiRA mix, and whole sampled images for the same seed.
// Tolerances (docs/deploy.md): fp32 outputs within 1e-4 absolute; uint8 images within 1 level.
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OrtEngine } from '../../src/main/core/ort/engine';
import { exportModel } from '../../src/main/core/ort/export';
import { decodeModel, OPSET } from '../../src/main/core/ort/onnx-graph';
import { DEFAULT_TARGETS, layerMatches, loadModelFile, WordTokenizer } from '../../src/main/core/ort/model';
import { blendDeltas, patchFromPeft, readPatch, writePatch, type SparsePatch } from '../../src/main/core/ort/patch';
import { sample, torchRandn } from '../../src/main/core/ort/sampler';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../../src/main/core/worker/supervisor';
import { tempDir } from './helpers';

const ROOT = resolve(__dirname, '../..');
const WORKER = join(ROOT, 'native', 'build', 'shira-worker');
const MODEL = join(ROOT, 'resources', 'models', 'clipart-64', 'model.safetensors');
const runnable = existsSync(WORKER) || process.env.CI === 'true';

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};
const f32 = (bytes: Uint8Array) => new Float32Array(bytes.slice().buffer);

/** A deterministic SHiRA adapter on every UNet target: ~2 % of entries per layer, values ~±0.05. */
function randomAdapter(weights: Map<string, { shape: number[] }>, seed: number, every: number) {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const layers = new Map<string, { rows: Int32Array; cols: Int32Array; values: Float32Array; n: number }>();
  for (const [name, w] of weights) {
    const module = name.replace(/\.weight$/, '');
    if (!name.startsWith('unet.') || !name.endsWith('.weight') || !layerMatches(module, DEFAULT_TARGETS)) continue;
    const m = w.shape[0]!;
    const n = w.shape.slice(1).reduce((a, b) => a * b, 1);
    const flat: number[] = [];
    for (let i = (seed * 7) % every; i < m * n; i += every) flat.push(i);
    layers.set(module, {
      rows: Int32Array.from(flat, (i) => Math.floor(i / n)),
      cols: Int32Array.from(flat, (i) => i % n),
      values: Float32Array.from(flat, () => (rnd() - 0.5) * 0.1),
      n,
    });
  }
  return layers;
}

/** v1 layout (docs/adapter-format.md § Compatibility): the worker reads it; adapter_export turns it into PEFT. */
function writeV1(path: string, layers: ReturnType<typeof randomAdapter>): void {
  const tensors: [string, { dtype: 'F32' | 'I32'; shape: number[]; data: Uint8Array }][] = [];
  const cols: Record<string, number> = {};
  for (const [module, l] of layers) {
    const ij = new Int32Array(2 * l.rows.length);
    ij.set(l.rows, 0);
    ij.set(l.cols, l.rows.length);
    tensors.push([`${module}.shira_weight`, { dtype: 'F32', shape: [l.values.length], data: new Uint8Array(l.values.buffer) }]);
    tensors.push([`${module}.shira_indices`, { dtype: 'I32', shape: [2, l.rows.length], data: new Uint8Array(ij.buffer) }]);
    cols[module] = l.n;
  }
  writeSafetensors(path, tensors, { kind: 'shira', shira_cols: JSON.stringify(cols) });
}

describe('ONNX export and patches (no worker)', () => {
  it('exports opset 18 graphs whose weight inputs are exactly the default SHiRA targets', () => {
    const { config, weights } = loadModelFile(MODEL);
    const engineTargets = [...weights.keys()].filter((n) => n.endsWith('.weight') && layerMatches(n.slice(0, -7), DEFAULT_TARGETS));
    {
      const e = exportModel(config, weights);
      const unet = decodeModel(e.unet.bytes);
      expect(Number(unet.opsetImport[0]!.version)).toBe(OPSET);
      expect(OPSET).toBeGreaterThanOrEqual(18);
      const inputs = unet.graph!.input!.map((i) => i.name);
      expect(inputs.slice(0, 3)).toEqual(['x', 't', 'context']);
      expect(new Set(e.unet.weightInputs.map((w) => w.name))).toEqual(new Set(engineTargets.filter((n) => n.startsWith('unet.'))));
      expect(e.textEncoder.weightInputs).toEqual([]); // no text-encoder layer matches the default targets
      const inits = new Set(unet.graph!.initializer!.map((i) => i.name));
      for (const w of e.unet.weightInputs) expect(inits.has(w.name)).toBe(false);
      expect(inits.has('unet.conv_in.weight')).toBe(true);
      // a pattern list moves other layers into the inputs
      const custom = exportModel(config, weights, { targets: ['q_proj', 'conv_in'] });
      expect(custom.textEncoder.weightInputs.map((w) => w.name)).toEqual(['text_encoder.encoder.layers.0.self_attn.q_proj.weight', 'text_encoder.encoder.layers.1.self_attn.q_proj.weight']);
      expect(custom.unet.weightInputs.map((w) => w.name)).toEqual(['unet.conv_in.weight']);
    }
  });

  it('blends like the worker (fp32, union in mix order), round-trips patch files and rejects broken ones', () => {
    const a: SparsePatch = { tensors: new Map([['w', { shape: [2, 4], indices: Int32Array.from([1, 3, 6]), values: Float32Array.from([0.1, 0.2, 0.3]) }]]), metadata: {} };
    const b: SparsePatch = { tensors: new Map([['w', { shape: [2, 4], indices: Int32Array.from([0, 3]), values: Float32Array.from([1, -1]) }]]), metadata: {} };
    const one = blendDeltas([{ patch: a, alpha: 0.7 }]).get('w')!;
    expect([...one.indices]).toEqual([1, 3, 6]);
    expect([...one.add]).toEqual([0.1, 0.2, 0.3].map((v) => Math.fround(Math.fround(v) * Math.fround(0.7))));
    const two = blendDeltas([
      { patch: a, alpha: 1 },
      { patch: b, alpha: 0.5 },
    ]).get('w')!;
    expect([...two.indices]).toEqual([0, 1, 3, 6]);
    expect([...two.add]).toEqual([0.5, Math.fround(0.1), Math.fround(Math.fround(0.2) + Math.fround(-0.5)), Math.fround(0.3)]);
    const dir = tempDir();
    try {
      const file = join(dir.path, 'a.shira-patch.safetensors');
      writePatch(file, { ...a, metadata: { base_identity: 'abc' } });
      const back = readPatch(file);
      expect(back.metadata.base_identity).toBe('abc');
      expect([...back.tensors.get('w')!.indices]).toEqual([1, 3, 6]);
      expect([...back.tensors.get('w')!.values]).toEqual([...a.tensors.get('w')!.values]);
      const bad: SparsePatch = { tensors: new Map([['w', { shape: [2, 4], indices: Int32Array.from([3, 1]), values: Float32Array.from([0, 0]) }]]), metadata: {} };
      expect(() => writePatch(join(dir.path, 'bad.safetensors'), bad)).toThrow(/'w': indices must be sorted and unique/);
      const out: SparsePatch = { tensors: new Map([['w', { shape: [2, 4], indices: Int32Array.from([8]), values: Float32Array.from([0]) }]]), metadata: {} };
      expect(() => writePatch(join(dir.path, 'bad.safetensors'), out)).toThrow(/index 8 is outside the tensor's 8 elements/);
    } finally {
      dir.cleanup();
    }
  });

  it('tokenizes like the worker: specials first, unknown words hashed into the spare buckets', () => {
    const tok = new WordTokenizer(['bird', 'birds'], 64);
    const ids = tok.encode("Bird, BIRDS and inkfx's!", 8);
    expect(ids.slice(0, 3)).toEqual([2, 4, 5]);
    expect(ids[3]).toBeGreaterThanOrEqual(6);
    expect(ids[3]).toBeLessThan(6 + 64);
    expect(ids.slice(5)).toEqual([3, 0, 0]);
    expect(new WordTokenizer([], 0).encode('x y z w v u t s r', 4)).toEqual([2, 1, 1, 3]);
  });

  it('draws standard normal noise from a seed (bit-level agreement with torch is checked against the worker below)', () => {
    const z = torchRandn(7, 3 * 64 * 64);
    const mean = z.reduce((a, v) => a + v, 0) / z.length;
    const std = Math.sqrt(z.reduce((a, v) => a + (v - mean) ** 2, 0) / z.length);
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(std - 1)).toBeLessThan(0.03);
    expect([...torchRandn(7, 3 * 64 * 64).slice(0, 8)]).toEqual([...z.slice(0, 8)]);
    expect(() => torchRandn(0, 8)).toThrow(/fewer than 16/);
  });
});

describe.runIf(runnable)('ORT engine vs the native worker (clipart-64)', () => {
  let engine: OrtEngine;
  let worker: WorkerSupervisor;
  let dir: { path: string; cleanup: () => void };
  const patches: SparsePatch[] = [];
  const prompts = ['bird, birds, animals', ''];
  const x = new Float32Array(2 * 3 * 64 * 64).map((_, i) => Math.sin(i * 0.37));
  const t = [10, 700];

  beforeAll(async () => {
    dir = tempDir();
    worker = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    await worker.request('load_model', { path: MODEL });
    engine = await OrtEngine.open(MODEL, { threads: 1 });
    // Two overlapping adapters, through the worker's own PEFT export (explicit int32 rows/cols + fp32 values).
    const { weights } = loadModelFile(MODEL);
    for (const [i, every] of [
      [1, 50],
      [2, 35],
    ] as const) {
      const v1 = join(dir.path, `a${i}.safetensors`);
      writeV1(v1, randomAdapter(weights, i, every));
      const peft = join(dir.path, `peft${i}`);
      mkdirSync(peft);
      await worker.request('adapter_export', { path: v1, out: peft, format: 'peft' });
      patches.push(patchFromPeft(peft, (p) => engine.weightShape(p)));
    }
  }, 60_000);

  afterAll(async () => {
    await engine?.close();
    await worker?.close();
    dir?.cleanup();
  });

  const workerForward = async (xIn: Float32Array, tIn: number[], ps: string[], name: string) => {
    const inputs = join(dir.path, `${name}.in.safetensors`);
    const out = join(dir.path, `${name}.out.safetensors`);
    writeSafetensors(
      inputs,
      [
        ['x', { dtype: 'F32', shape: [tIn.length, 3, 64, 64], data: new Uint8Array(xIn.buffer, xIn.byteOffset, xIn.byteLength) }],
        ['t', { dtype: 'I64', shape: [tIn.length], data: new Uint8Array(BigInt64Array.from(tIn.map(BigInt)).buffer) }],
      ],
      { prompts: JSON.stringify(ps) },
    );
    await worker.request('forward', { inputs, out });
    const r = readSafetensors(out).tensors;
    return { out: f32(r.get('out')!.data), context: f32(r.get('context')!.data) };
  };

  it('matches the worker forward op without a mix: text context and UNet prediction', async () => {
    const ref = await workerForward(x, t, prompts, 'base');
    const context = await engine.encode(prompts);
    const { out } = await engine.predict(x, t, context);
    const dc = maxDiff(context, ref.context);
    const du = maxDiff(out, ref.out);
    console.log(`ORT vs worker, no mix: context maxdiff ${dc.toExponential(2)}, UNet maxdiff ${du.toExponential(2)} (|out| up to ${maxDiff(ref.out, new Float32Array(ref.out.length)).toFixed(2)})`);
    expect(dc).toBeLessThan(1e-4);
    expect(du).toBeLessThan(1e-4);
  });

  it('matches the worker with a two-adapter SHiRA mix applied in place, and restores W0 exactly', async () => {
    const mix = [
      { patch: patches[0]!, alpha: 0.8 },
      { patch: patches[1]!, alpha: -0.5 },
    ];
    const base = await workerForward(x, t, prompts, 'base2');
    await worker.request('apply_mix', {
      adapters: [
        { path: join(dir.path, 'a1.safetensors'), alpha: 0.8 },
        { path: join(dir.path, 'a2.safetensors'), alpha: -0.5 },
      ],
    });
    const ref = await workerForward(x, t, prompts, 'mix');
    const timing = await engine.applyMix(mix);
    const { out } = await engine.predict(x, t, await engine.encode(prompts));
    const d = maxDiff(out, ref.out);
    const effect = maxDiff(ref.out, base.out);
    console.log(
      `ORT vs worker, mix of 2 (${timing.values} values in ${timing.tensors} tensors, switch ${timing.ms.toFixed(1)} ms): UNet maxdiff ${d.toExponential(2)}; the mix moves the output by ${effect.toFixed(3)}`,
    );
    expect(effect).toBeGreaterThan(1e-2);
    expect(d).toBeLessThan(1e-4);

    // Back to W0: every touched tensor equals the base weights bit for bit.
    const { weights } = loadModelFile(MODEL);
    await engine.applyMix([]);
    for (const name of patches[1]!.tensors.keys()) {
      const live = await engine.readWeight(name);
      expect(Buffer.from(live.buffer).equals(Buffer.from(weights.get(name)!.data.buffer)), name).toBe(true);
    }
    await worker.request('clear_mix', {});
  });

  it('draws the worker image for the same seed, prompt and mix (DDIM, CFG), and agrees with a reference DDIM over the worker forward op', async () => {
    await worker.request('apply_mix', { adapters: [{ path: join(dir.path, 'a1.safetensors'), alpha: 1 }] });
    await engine.applyMix([{ patch: patches[0]!, alpha: 1 }]);
    const seed = 3;
    const steps = 4;
    const guidance = 4;
    const prompt = 'bird, birds, animals';
    const file = join(dir.path, 'sample.safetensors');
    await worker.request('sample', { prompt, seed, steps, guidance, out: file });
    const workerImage = readSafetensors(file).tensors.get('images')!;
    const ortImage = await engine.sample({ prompts: [prompt], seed, steps, guidance });
    expect(workerImage.shape).toEqual(ortImage.shape);
    const di = maxDiff(ortImage.images, workerImage.data);

    // The same DDIM in TypeScript over the worker's forward op (the brief's reference sampler): fp32 x_0 parity.
    const noise = torchRandn(seed, 3 * 64 * 64);
    const ctxPrompts = ['', prompt];
    let call = 0;
    const ref = await sample(async (x2, tt) => (await workerForward(x2, [tt, tt], ctxPrompts, `s${call++}`)).out, {
      sampler: 'ddim',
      steps,
      guidance,
      noise,
      diffusion: engine.config.diffusion,
    });
    const dx = maxDiff(ortImage.x0, ref);
    console.log(`ORT vs worker, ${steps}-step DDIM with a mix: image maxdiff ${di} levels (worker sample op); x0 maxdiff ${dx.toExponential(2)} (TS DDIM over the worker forward op)`);
    expect(dx).toBeLessThan(1e-3);
    expect(di).toBeLessThanOrEqual(1);
    await worker.request('clear_mix', {});
    await engine.applyMix([]);
  }, 60_000);
});
