// The built-in base model, reproducibly: `npm run train:base` (tools train-base).
//   1. data: .data/clipart-<R>/{train,heldout}.safetensors from openclipart-png (built if missing)
//   2. vocabulary: every caption word seen at least twice in the training split (the worker's
//      tokenizer hashes other words into spare rows, so user trigger words still get embeddings)
//   3. training: the native worker's full training with EMA, checkpoints every N steps and
//      `--resume`, samples every M steps (written as PNG grids beside the checkpoints)
//   4. export: fp16 weights, config, vocabulary, a sample grid and MODEL_CARD.md into
//      resources/models/<name>/, where the app registers it as the default base model
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { readSafetensors, writeSafetensors, type TensorData } from '../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';
import { buildClipartDataset } from './clipart';
import { imagesToGridPng } from '../src/main/core/generate/grid';
import { halfToFloat } from '../src/main/core/ort/model';
import { torchRandn } from '../src/main/core/ort/sampler';

export function buildVocab(captions: readonly string[], minCount = 2, max = 8192): string[] {
  const counts = new Map<string, number>();
  // The worker's tokenizer splits on anything but [a-z0-9'] after lower-casing; so does this.
  for (const c of captions) for (const w of c.toLowerCase().match(/[a-z0-9']+/g) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  return [...counts]
    .filter(([, n]) => n >= minCount)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, max)
    .map(([w]) => w);
}

/**
 * σ_d of the v-prediction preconditioning (the worker's diffusion.sigma_data; EDM, Karras et al. 2022):
 * x̂_0 = c_skip·y − c_out·v̂ with y = x_t/√ᾱ = x_0 + σε, c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²).
 *
 * Issue 23's speckle came from the skip term. At the sampler's last denoising step (DDIM 25: t = 41,
 * σ = 0.147) v2's σ_d = 0.3 gives c_skip = 0.81: 81 % of the per-pixel noise goes straight into x̂_0
 * unless the UNet cancels it, and this patch-4 UNet cannot — its first level has 48 channels for the 48
 * values of a 4×4 RGB patch, no room to carry the noise of every pixel besides the picture. Measured on
 * v2 (eval:base's denoiser table): it kept 61–69 % of the noise's high frequencies at t ≤ 41, and its
 * samples had 2.45× the training images' mean |Laplacian| with every sampler, step count, guidance
 * (0 to 5), and with or without EMA (an 800-step run without EMA: the same 0.33).
 * A small σ_d turns the parameterisation into x̂_0-prediction wherever σ ≫ σ_d (c_skip → 0, c_out → σ_d):
 * the UNet draws the clean picture — low-dimensional, what a patch model can represent (Li & He 2025,
 * "Back to Basics: Let Denoising Generative Models Denoise") — and no longer has to subtract noise it
 * cannot see pixel by pixel. σ_d = 0.05: c_skip = 0.10 at t = 41. The price is a target of
 * ≈ x_0/σ_d at high noise (the loss starts near 300 instead of 8), which Adam absorbs.
 */
export const BASE_SIGMA_DATA = 0.05;

/** Out-of-vocabulary words hash into this many token rows (v2 had 64: user trigger words collided). */
export const BASE_SPARE_BUCKETS = 4096;

/**
 * The architecture of the built-in model: a 3-level SD-style UNet with cross-attention on the two
 * lower levels, working on p×p pixel patches (space-to-depth). p = 4 makes a 64×64 model cheap
 * enough to train on a 2-core CPU (the UNet then runs at 16, 8 and 4 cells a side); p = 2 is the
 * better choice on a GPU.
 */
export function baseModelConfig(name: string, resolution: number, vocab: string[], patchSize = 4, sigmaData = BASE_SIGMA_DATA, spareBuckets = BASE_SPARE_BUCKETS): Record<string, unknown> {
  return {
    name,
    unet: {
      sample_size: resolution,
      patch_size: patchSize,
      block_out_channels: [48, 96, 144],
      attention: [false, true, true],
      layers_per_block: 1,
      attention_heads: 4,
      norm_num_groups: 16,
      use_linear_projection: true,
    },
    text_encoder: { vocab, width: 128, layers: 2, heads: 4, max_length: 16, spare_buckets: spareBuckets },
    diffusion: { beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, prediction_type: 'v_prediction', sigma_data: sigmaData, num_train_timesteps: 1000 },
  };
}

const SPECIAL_TOKENS = 4; // <pad> <unk> <bos> <eos>, before the vocabulary (native WordTokenizer)

/**
 * A warm start for `config` from an earlier model of the same architecture (v3 from v2 on a CPU budget:
 * v2's 6000 steps are not thrown away). Every tensor is copied, as fp32, except the token embedding,
 * whose rows follow the words: the special tokens' rows and those of words both vocabularies hold are
 * copied, and the rest (new words, the spare rows) are drawn N(0, 1) as a fresh model's are (seeded); a
 * model with the same vocabulary and spare rows keeps its whole table (a second phase of one recipe).
 * A changed σ_d only changes what the outputs mean; training re-learns that.
 */
export function warmStart(from: string, config: Record<string, unknown>, out: string, seed = 0): { tensors: number; copiedRows: number; newRows: number } {
  const src = readSafetensors(from);
  const fromVocab = (JSON.parse(src.metadata.config ?? '{}') as { text_encoder?: { vocab?: string[] } }).text_encoder?.vocab;
  if (!fromVocab) throw new Error(`${from} has no vocabulary in its config`);
  const text = config.text_encoder as { vocab: string[]; width: number; spare_buckets: number };
  const rows = SPECIAL_TOKENS + text.vocab.length + text.spare_buckets;
  const fromRow = new Map(fromVocab.map((w, i) => [w, SPECIAL_TOKENS + i]));
  const tensors: [string, TensorData][] = [];
  let copiedRows = 0;
  for (const [name, t] of src.tensors) {
    if (t.dtype !== 'F16' && t.dtype !== 'F32') throw new Error(`${from}: tensor ${name} is ${t.dtype}, not F16 or F32`);
    const f32 = t.dtype === 'F16' ? Float32Array.from(new Uint16Array(t.data.slice().buffer), halfToFloat) : new Float32Array(t.data.slice().buffer);
    if (name !== 'text_encoder.embeddings.token_embedding.weight') {
      tensors.push([name, { dtype: 'F32', shape: t.shape, data: new Uint8Array(f32.buffer) }]);
      continue;
    }
    const w = text.width;
    if (t.shape[1] !== w) throw new Error(`${from}: token embedding [${t.shape.join(', ')}] is not ${w} wide`);
    const grown = torchRandn(seed, rows * w);
    // Source row of each new row, or none (drawn fresh). The same words and bucket count hash every unknown
    // word to the same spare row, so then the spare rows are kept too.
    const same = t.shape[0] === rows && JSON.stringify(fromVocab) === JSON.stringify(text.vocab);
    const source = (r: number) => (same || r < SPECIAL_TOKENS ? r : r < SPECIAL_TOKENS + text.vocab.length ? fromRow.get(text.vocab[r - SPECIAL_TOKENS]!) : undefined);
    for (let r = 0; r < rows; r++) {
      const row = source(r);
      if (row === undefined) continue;
      grown.set(f32.subarray(row * w, (row + 1) * w), r * w);
      copiedRows++;
    }
    tensors.push([name, { dtype: 'F32', shape: [rows, w], data: new Uint8Array(grown.buffer) }]);
  }
  writeSafetensors(out, tensors, { config: JSON.stringify(config), format: 'shira-studio-model', warm_start: from });
  return { tensors: tensors.length, copiedRows, newRows: rows - copiedRows };
}

/** IEEE 754 binary32 → binary16, round to nearest even (weights are small; no NaN payloads kept). */
export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < src.length; i++) {
    f[0] = src[i]!;
    const x = u[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let half = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      if (rem > mid || (rem === mid && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
    out[i] = sign | half; // a carry into the exponent is the correct rounding, up to inf
  }
  return out;
}

export function exportFp16(src: string, dst: string): { tensors: number; bytes: number } {
  const file = readSafetensors(src);
  const tensors: [string, TensorData][] = [];
  for (const [name, t] of file.tensors) {
    if (t.dtype !== 'F32') {
      tensors.push([name, t]);
      continue;
    }
    const f32 = new Float32Array(t.data.slice().buffer);
    tensors.push([name, { dtype: 'F16', shape: t.shape, data: new Uint8Array(f32ToF16(f32).buffer) }]);
  }
  writeSafetensors(dst, tensors, file.metadata);
  return { tensors: tensors.length, bytes: statSync(dst).size };
}

export async function imagesToGrid(file: string, cols: number, out: string, scale = 2): Promise<void> {
  writeFileSync(out, await imagesToGridPng(file, cols, scale));
}

export const SAMPLE_PROMPTS = [
  'bird, birds, animals',
  'red apple, fruit, food',
  'house, buildings',
  'car, transportation',
  'star, stars, shapes',
  'flower, plants',
  'computer, hardware, computer',
  'man, people',
];

export interface TrainBaseOptions {
  worker: string;
  /** The model's name: its folder under resources/models and the name the app lists. */
  name: string;
  /** The built-in this one supersedes (recorded for the model card, which sets their numbers side by side). */
  previous?: string;
  /** Weights to start from instead of a random init (warmStart); ignored when resuming. */
  initFrom?: string;
  device: string;
  resolution: number;
  steps: number;
  batch: number;
  lr: number;
  patchSize: number;
  /** EMA decay of the exported weights; its horizon 1/(1−d) should be well under the run length. */
  ema: number;
  /**
   * Probability of dropping each comma-separated caption tag (one always stays). Without it the
   * category word only ever appeared inside long captions and a short prompt ("animals") barely
   * steered the model: 600 fine-tuning steps with 0.5 (and category balance 0.5) took generated-sample
   * accuracy from 1.3× to 3.1× chance, the same 600 steps without them left it at 1.3×.
   */
  tagDropout: number;
  /** Sampling weight ∝ (images in the category)^(−β): the computer icons are a third of the data. */
  categoryBalance: number;
  threads: number;
  resume: boolean;
  /**
   * Export the run folder's final weights without training: for a run whose worker finished on its own after the
   * tool was stopped (its journal then needs the session's end, which the tool would have written).
   */
  exportOnly?: boolean;
  runDir: string;
  outDir: string;
  dataDir: string;
  log: (line: string) => void;
}

function hardware(device: string): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return device.startsWith('cuda') ? `${device} (see worker info)` : `CPU: ${cpu}, ${cpus().length} cores`;
}

export async function trainBase(o: TrainBaseOptions): Promise<Record<string, unknown>> {
  mkdirSync(o.runDir, { recursive: true });
  const name = o.name;
  const train = join(o.dataDir, 'train.safetensors');
  if (!existsSync(train)) {
    o.log(`building the clipart dataset in ${o.dataDir}`);
    await buildClipartDataset({ root: '/usr/share/openclipart/png', authorsFile: resolve('resources/data/openclipart-authors.tsv'), resolution: o.resolution, outDir: o.dataDir, log: o.log });
  }
  const configFile = join(o.runDir, 'config.json');
  const checkpoint = join(o.runDir, 'checkpoint.safetensors');
  const init = join(o.runDir, 'init.safetensors');
  if (!o.resume || !existsSync(configFile)) {
    const captions = JSON.parse(readSafetensors(train).metadata.captions ?? '[]') as string[];
    const config = baseModelConfig(name, o.resolution, buildVocab(captions), o.patchSize);
    writeFileSync(configFile, JSON.stringify(config, null, 1));
    if (o.initFrom) o.log(`warm start from ${o.initFrom}: ${JSON.stringify(warmStart(o.initFrom, config, init))}`);
  }
  const warm = o.initFrom !== undefined && existsSync(init);
  const samplesDir = join(o.runDir, 'samples');
  mkdirSync(samplesDir, { recursive: true });
  const final = join(o.runDir, 'final.safetensors');
  const journal = join(o.runDir, 'journal.jsonl');
  if (o.exportOnly) {
    if (!existsSync(final) || !existsSync(journal)) throw new Error(`--export-only needs a finished run: ${final} and ${journal}`);
    return exportBase({ ...o, name, configFile, final, journal });
  }
  const args = [
    '--device',
    o.device,
    'train',
    '--method',
    'full',
    ...(warm ? ['--model', init] : ['--config', configFile]),
    '--data',
    train,
    '--out',
    final,
    '--steps',
    String(o.steps),
    '--batch',
    String(o.batch),
    '--lr',
    String(o.lr),
    '--ema',
    String(o.ema),
    '--flip',
    'true',
    '--caption_dropout',
    '0.1',
    '--caption_tag_dropout',
    String(o.tagDropout),
    '--category_balance',
    String(o.categoryBalance),
    '--schedule',
    'cosine',
    '--seed',
    '0',
    '--progress_every',
    '25',
    '--checkpoint',
    checkpoint,
    '--checkpoint_every',
    '100',
    '--sample_every',
    '500',
    '--sample_prompts',
    JSON.stringify(SAMPLE_PROMPTS),
    '--sample_dir',
    samplesDir,
    '--sample_steps',
    '25',
  ];
  if (o.resume && existsSync(checkpoint)) args.push('--resume', checkpoint);
  const started = Date.now();
  appendFileSync(
    journal,
    `${JSON.stringify({ event: 'session_start', time: new Date(started).toISOString(), resume: o.resume, device: o.device, threads: o.threads, hardware: hardware(o.device) })}\n`,
  );
  o.log(`shira-worker ${args.join(' ')}`);
  const child = spawn(o.worker, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: String(o.threads) } });
  const stop = () => child.kill('SIGTERM');
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  let result: Record<string, unknown> | null = null;
  let error: unknown = null;
  for await (const line of createInterface({ input: child.stdout })) {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      o.log(line);
      continue;
    }
    if (m.event === 'progress') {
      appendFileSync(journal, `${JSON.stringify({ ...m, time: new Date().toISOString() })}\n`);
      o.log(`step ${m.step}/${m.steps} loss ${Number(m.loss).toFixed(4)} ${Number(m.it_s).toFixed(2)} it/s eta ${Math.round(Number(m.eta_s) / 60)} min`);
    } else if (m.event === 'sample' && typeof m.path === 'string') {
      await imagesToGrid(m.path, 4, m.path.replace(/\.safetensors$/, '.png'));
      o.log(`samples at step ${m.step}: ${m.path.replace(/\.safetensors$/, '.png')}`);
    } else if (m.ok === true) result = m.result as Record<string, unknown>;
    else if (m.ok === false) error = m.error;
  }
  const code: number = await new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', (c) => r(c ?? 1))));
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  appendFileSync(journal, `${JSON.stringify({ event: 'session_end', time: new Date().toISOString(), seconds: (Date.now() - started) / 1000, code, result, error })}\n`);
  if (!result) throw new Error(`training stopped (${JSON.stringify(error) ?? `exit ${code}`}); run again with --resume to continue from the last checkpoint`);
  return exportBase({ ...o, name, configFile, final, journal });
}

function exportBase(o: TrainBaseOptions & { name: string; configFile: string; final: string; journal: string }): Record<string, unknown> {
  const sessions = readFileSync(o.journal, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const wall = sessions.filter((s) => s.event === 'session_end').reduce((a, s) => a + Number(s.seconds), 0);
  const last = sessions.filter((s) => s.event === 'session_end').pop();
  if (!last?.result) throw new Error(`${o.journal}: its last session has no result; finish the run (--resume) first`);
  mkdirSync(o.outDir, { recursive: true });
  const weights = exportFp16(o.final, join(o.outDir, 'model.safetensors'));
  const config = JSON.parse(readFileSync(o.configFile, 'utf8')) as { text_encoder: { vocab: string[] } };
  // "supersedes" makes the app move its default to this model and keep the older one for its adapters (builtin.ts).
  writeFileSync(join(o.outDir, 'config.json'), JSON.stringify({ ...config, ...(o.previous ? { supersedes: o.previous } : {}) }, null, 1));
  writeFileSync(join(o.outDir, 'vocab.txt'), `${config.text_encoder.vocab.join('\n')}\n`);
  const summary = { name: o.name, weights, wall_seconds: Math.round(wall), sessions: sessions.filter((s) => s.event === 'session_start').length, result: last.result };
  const initFrom = o.initFrom ? relative(process.cwd(), o.initFrom) : undefined;
  // A run that starts from an earlier phase of this model (its run folder's weights) keeps that phase's record
  // as `before`, so the card can list every phase; re-exporting the same phase does not nest it again.
  const recordFile = join(o.outDir, 'training.json');
  const earlier = existsSync(recordFile) ? (JSON.parse(readFileSync(recordFile, 'utf8')) as { name?: string; init_from?: string }) : null;
  const before = initFrom && earlier?.name === o.name && earlier.init_from !== initFrom ? earlier : undefined;
  writeFileSync(
    recordFile,
    JSON.stringify(
      {
        ...summary,
        hardware: hardware(o.device),
        device: o.device,
        threads: o.threads,
        steps: o.steps,
        batch: o.batch,
        lr: o.lr,
        ema: o.ema,
        caption_tag_dropout: o.tagDropout,
        category_balance: o.categoryBalance,
        previous: o.previous,
        init_from: initFrom,
        before,
      },
      null,
      1,
    ),
  );
  return summary;
}

/** A prompts × seeds grid of the exported model, for the model card, through the worker protocol. */
export async function sampleGrid(worker: string, modelDir: string, out: string, seeds = [1, 2, 3, 4], threads = 1): Promise<void> {
  const tmp = join(modelDir, '.grid.safetensors');
  const parts: Uint8Array[] = [];
  let shape: number[] = [];
  const w = new WorkerSupervisor({ binary: worker, threads });
  try {
    await w.request('load_model', { path: join(modelDir, 'model.safetensors') });
    for (const seed of seeds) {
      await w.request('sample', { prompt: SAMPLE_PROMPTS, batch: SAMPLE_PROMPTS.length, seed, steps: 30, guidance: 4, out: tmp });
      const t = readSafetensors(tmp).tensors.get('images')!;
      shape = t.shape;
      parts.push(t.data);
    }
  } finally {
    await w.close();
  }
  const [n, h, wd] = shape as [number, number, number];
  writeSafetensors(tmp, [['images', { dtype: 'U8', shape: [n * seeds.length, h, wd, 3], data: Buffer.concat(parts) }]]);
  await imagesToGrid(tmp, n, out, 2).finally(() => rmSync(tmp, { force: true }));
}
