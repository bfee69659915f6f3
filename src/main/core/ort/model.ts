// The model family as the exporter and the ORT sampler see it: config (the JSON in the weights file's
// __metadata__.config), fp32 weights by parameter name, the word tokenizer, and which layers SHiRA targets.
//
// A copy kept on purpose (ONNX deployment, the word check). It mirrors the native model: model_config_from_json's
// defaults and checks (model/config), model_load's file layout (model_io/model_file), kDefaultTargets and
// layer_matches (model/diffusion_model), WordTokenizer (tokenizers/word_tokenizer, which names this file back) and
// fnv1a64 (core/hash.h). A change on either side is made on both; tests/unit/ort.test.ts (token ids, forward
// outputs and images against the worker's) says when they part.
import { readSafetensors, type TensorData } from '../io/safetensors';

export interface UNetConfig {
  sampleSize: number;
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  attention: boolean[];
  layersPerBlock: number;
  attentionHeads: number;
  normNumGroups: number;
  useLinearProjection: boolean;
  patchSize: number;
}

export interface TextConfig {
  vocab: string[];
  width: number;
  layers: number;
  heads: number;
  maxLength: number;
  spareBuckets: number;
}

export interface DiffusionConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: 'linear' | 'scaled_linear';
  predictionType: 'epsilon' | 'v_prediction';
  /** v-prediction's σ_d (EDM preconditioning); 1 = plain v-prediction. */
  sigmaData: number;
}

export interface ModelConfig {
  name: string;
  unet: UNetConfig;
  text: TextConfig;
  diffusion: DiffusionConfig;
}

export interface Weight {
  shape: number[];
  data: Float32Array;
}

/** The layers SHiRA adapts unless a run names others. Mirrors native kDefaultTargets. */
export const DEFAULT_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2', 'proj_in', 'proj_out'] as const;

/** "re:<regex>" searches the module path; anything else is a dotted suffix or the whole path. Mirrors native layer_matches. */
export function layerMatches(name: string, patterns: readonly string[]): boolean {
  for (const p of patterns) {
    if (p.startsWith('re:')) {
      let re: RegExp;
      try {
        re = new RegExp(p.slice(3));
      } catch (error) {
        throw new Error(`bad target pattern '${p}': ${(error as Error).message}`, { cause: error });
      }
      if (re.test(name)) return true;
    } else if (name === p || (name.length > p.length && name.endsWith(p) && name[name.length - p.length - 1] === '.')) {
      return true;
    }
  }
  return false;
}

function pick<T>(o: Record<string, unknown>, key: string, fallback: T, check: (v: unknown) => boolean, what: string): T {
  if (!(key in o)) return fallback;
  if (!check(o[key])) throw new Error(`model config: field '${key}' has the wrong type (want ${what})`);
  return o[key] as T;
}
const isInt = (v: unknown) => Number.isInteger(v);
const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** The config JSON with the worker's defaults filled in; refuses what the worker refuses. Mirrors native model_config_from_json. */
export function parseModelConfig(json: unknown): ModelConfig {
  if (!json || typeof json !== 'object') throw new Error('model config: must be a JSON object');
  const j = json as Record<string, unknown>;
  const obj = (k: string) => (j[k] && typeof j[k] === 'object' ? (j[k] as Record<string, unknown>) : {});
  const u = obj('unet');
  const t = obj('text_encoder');
  const d = obj('diffusion');
  const blockOutChannels = pick(u, 'block_out_channels', [32, 64], (v) => Array.isArray(v) && v.every(isInt), 'int array');
  const unet: UNetConfig = {
    sampleSize: pick(u, 'sample_size', 32, isInt, 'int'),
    inChannels: pick(u, 'in_channels', 3, isInt, 'int'),
    outChannels: pick(u, 'out_channels', 3, isInt, 'int'),
    blockOutChannels,
    attention: pick(
      u,
      'attention',
      blockOutChannels.map(() => true),
      (v) => Array.isArray(v) && v.every((x) => typeof x === 'boolean'),
      'bool array',
    ),
    layersPerBlock: pick(u, 'layers_per_block', 1, isInt, 'int'),
    attentionHeads: pick(u, 'attention_heads', 4, isInt, 'int'),
    normNumGroups: pick(u, 'norm_num_groups', 8, isInt, 'int'),
    useLinearProjection: pick(u, 'use_linear_projection', false, (v) => typeof v === 'boolean', 'bool'),
    patchSize: pick(u, 'patch_size', 1, isInt, 'int'),
  };
  if (unet.attention.length !== blockOutChannels.length) throw new Error('model config: unet.attention must have one entry per block_out_channels entry');
  const text: TextConfig = {
    vocab: pick(t, 'vocab', [] as string[], (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'), 'string array'),
    width: pick(t, 'width', 64, isInt, 'int'),
    layers: pick(t, 'layers', 2, isInt, 'int'),
    heads: pick(t, 'heads', 4, isInt, 'int'),
    maxLength: pick(t, 'max_length', 16, isInt, 'int'),
    // Files written before spare buckets existed have none (model_load sets 0 for them too).
    spareBuckets: pick(t, 'spare_buckets', 0, isInt, 'int'),
  };
  const prediction = pick(d, 'prediction_type', 'epsilon', (v) => v === 'epsilon' || v === 'v_prediction', "'epsilon' or 'v_prediction'");
  const diffusion: DiffusionConfig = {
    numTrainTimesteps: pick(d, 'num_train_timesteps', 1000, isInt, 'int'),
    betaStart: pick(d, 'beta_start', 0.00085, isNum, 'number'),
    betaEnd: pick(d, 'beta_end', 0.012, isNum, 'number'),
    betaSchedule: pick(d, 'beta_schedule', 'scaled_linear', (v) => v === 'linear' || v === 'scaled_linear', "'linear' or 'scaled_linear'"),
    predictionType: prediction as DiffusionConfig['predictionType'],
    sigmaData: pick(d, 'sigma_data', 1, isNum, 'number'),
  };
  return { name: pick(j, 'name', 'tiny', (v) => typeof v === 'string', 'string'), unet, text, diffusion };
}

/** IEEE half -> float, exact (every f16 is an f32). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

export function tensorToFloat32(name: string, t: TensorData): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const bytes = t.data;
  if (t.dtype === 'F32') return new Float32Array(bytes.slice().buffer, 0, n);
  if (t.dtype === 'F16') {
    const src = new Uint16Array(bytes.slice().buffer, 0, n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]!);
    return out;
  }
  if (t.dtype === 'BF16') {
    const src = new Uint16Array(bytes.slice().buffer, 0, n);
    const u = new Uint32Array(n);
    for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
    return new Float32Array(u.buffer);
  }
  throw new Error(`weight '${name}' has dtype ${t.dtype}; the exporter reads F32, F16 and BF16`);
}

export interface LoadedModel {
  config: ModelConfig;
  weights: Map<string, Weight>;
}

/** A shira-studio model file: fp16/fp32 weights named "unet.<path>" / "text_encoder.<path>" and the config JSON. Mirrors native model_load. */
export function loadModelFile(path: string): LoadedModel {
  const file = readSafetensors(path);
  const raw = file.metadata.config;
  if (!raw) throw new Error(`model '${path}' has no config in its __metadata__`);
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    throw new Error(`model '${path}': config is not JSON (${(error as Error).message})`, { cause: error });
  }
  const config = parseModelConfig(json);
  const weights = new Map<string, Weight>();
  for (const [name, t] of file.tensors) weights.set(name, { shape: [...t.shape], data: tensorToFloat32(name, t) });
  return { config, weights };
}

// ---- tokenizer: mirrors native WordTokenizer (ids, specials, the spare-bucket hash) ----

const SPECIALS = ['<pad>', '<unk>', '<bos>', '<eos>'];
const PAD = 0;
const UNK = 1;
const BOS = 2;
const EOS = 3;

/** FNV-1a 64 over the UTF-8 bytes (native fnv1a64 hashes std::string bytes). */
export function fnv1a64(s: string): bigint {
  let h = 14695981039346656037n;
  for (const c of Buffer.from(s, 'utf8')) h = ((h ^ BigInt(c)) * 1099511628211n) & 0xffffffffffffffffn;
  return h;
}

/**
 * The words the native tokenizer sees: lower-cased runs of [a-zA-Z0-9'], split on anything else. Byte-wise like the
 * C++ loop: non-ASCII bytes are separators there (isalnum is false for them in the C locale).
 */
export function tokenizerWords(text: string): string[] {
  const words: string[] = [];
  let word = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const isAlnum = (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122);
    if (isAlnum || byte === 39) word += String.fromCharCode(byte >= 65 && byte <= 90 ? byte + 32 : byte);
    else if (word) {
      words.push(word);
      word = '';
    }
  }
  if (word) words.push(word);
  return words;
}

export class WordTokenizer {
  readonly vocab: string[];
  private readonly ids_ = new Map<string, number>();

  constructor(
    words: readonly string[],
    readonly spareBuckets: number,
  ) {
    this.vocab = [...SPECIALS, ...words.filter((w) => !SPECIALS.includes(w))];
    // First occurrence wins, like std::map::emplace.
    this.vocab.forEach((w, i) => {
      if (!this.ids_.has(w)) this.ids_.set(w, i);
    });
  }

  get numIds(): number {
    return this.vocab.length + this.spareBuckets;
  }

  /** A word's id: its vocabulary row, else vocab.size() + FNV-1a64(word) % spare_buckets (or <unk> without spare rows). */
  idOf(word: string): number {
    const id = this.ids_.get(word);
    if (id !== undefined) return id;
    return this.spareBuckets > 0 ? this.vocab.length + Number(fnv1a64(word) % BigInt(this.spareBuckets)) : UNK;
  }

  /** <bos> w… <eos> <pad>… to maxLength, over `tokenizerWords(text)`. */
  encode(text: string, maxLength: number): number[] {
    const out = [BOS, ...tokenizerWords(text).map((w) => this.idOf(w))];
    if (out.length > maxLength - 1) out.length = maxLength - 1;
    out.push(EOS);
    while (out.length < maxLength) out.push(PAD);
    return out;
  }
}
