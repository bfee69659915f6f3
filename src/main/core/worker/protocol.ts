// The native worker's protocol, typed once: op → arguments → reply (→ progress events), in the worker's own
// names, so a change on one side is found by grepping the other (the worker's op table and its ops' argument
// reads). Requests are JSON lines {"id", "op", "args"}; replies {"id", "ok", "result" | "error"}; events
// {"id", "event", ...} (native worker/worker.h). Tensors and images travel as safetensors files, never as JSON.
//
// Callers write arguments in camelCase (`progressEvery`); `wireArgs` turns them into the worker's snake_case
// (`progress_every`) in one place, and the types check every name at compile time. Replies and events keep the
// worker's names: they are records — stored as they come (training_runs.result_json) and printed as benchmark rows.
import type { MaskKind, SamplerName } from '../../../shared/api';

/** The worker's argument and result names: lower-case snake_case, so camelCase maps back to them one to one. */
type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type Snake<S extends string> = S extends `${infer C}${infer T}` ? `${C extends Lowercase<C> ? C : `_${Lowercase<C>}`}${Snake<T>}` : S;
/** The arguments as callers write them. Nested objects (apply_mix's {path, alpha}, load_model's config) pass as they are. */
export type CamelArgs<T> = { [K in keyof T as K extends string ? Camel<K> : K]: T[K] };

// ---- arguments and replies, op by op (native: the op table and each op's handler)

export interface ModelSummary {
  name: string;
  parameters: number;
  default_targets: { name: string; shape: number[] }[];
  /** The model's config.json, in its own names. */
  config: Record<string, unknown>;
}

export interface InfoReply {
  version: string;
  device: string;
  torch: string;
  cuda_available: boolean;
  rss_bytes: number;
  model_loaded: boolean;
  mix_active: boolean;
  identity: string;
  cache_bytes: number;
  cache_entries: number;
  cache_budget_bytes: number;
  model?: string;
  /** The op table as the worker serves it (newer workers). */
  ops?: { name: string; long_running: boolean; read_only: boolean }[];
}

export interface TrainArgs {
  method?: 'shira' | 'lora' | 'full';
  /** Packed dataset: "images" U8 [N, H, W, 3], metadata captions (and categories). */
  data: string;
  out: string;
  steps?: number;
  batch?: number;
  grad_accum?: number;
  lr?: number;
  seed?: number;
  caption_dropout?: number;
  caption_tag_dropout?: number;
  /** Tags holding one of these words never drop (kohya's keep_tokens, by name). */
  caption_keep_words?: string[];
  category_balance?: number;
  progress_every?: number;
  schedule?: 'cosine' | 'constant';
  precision?: 'bf16' | 'fp32';
  targets?: string[];
  flip?: boolean;
  ema?: number;
  checkpoint?: string;
  checkpoint_every?: number;
  resume?: string;
  sample_every?: number;
  sample_prompts?: string[];
  sample_dir?: string;
  sample_sampler?: SamplerName;
  sample_steps?: number;
  sample_guidance?: number;
  sample_seed?: number;
  values_dtype?: 'f16' | 'f32';
  // SHiRA
  mask?: MaskKind;
  density?: number;
  grad_path?: 'auto' | 'sparse' | 'dense';
  /** Adapter files whose trained positions this mask avoids. */
  exclude?: string[];
  calib_batches?: number;
  // LoRA
  rank?: number;
  alpha?: number;
  match_density?: number;
}

export interface TrainReply {
  out: string;
  steps: number;
  start_step: number;
  first_loss: number;
  final_loss: number;
  trainable: number;
  ema: number;
  autocast_bf16: boolean;
  seconds: number;
  /** SHiRA: the gradient path each layer settled on, and what each measured. */
  grad_paths: { layer: string; shape: number[]; k: number; path: 'sparse' | 'dense' | 'auto'; sparse_ms: number; dense_ms: number; dense_dw_bytes: number }[];
}

export type TrainEvent =
  { event: 'progress'; step: number; steps: number; loss: number; it_s: number; eta_s: number } | { event: 'sample'; step: number; path: string } | { event: 'checkpoint'; step: number; path: string };

export interface SampleArgs {
  /** One prompt, or one per image of the batch. */
  prompt?: string | string[];
  negative_prompt?: string;
  sampler?: SamplerName;
  batch?: number;
  steps?: number;
  guidance?: number;
  /** Image side; 0 = the model's own. */
  size?: number;
  seed?: number;
  /** "images" U8 [B, H, W, 3]; a temp file when absent. */
  out?: string;
}

export interface AdapterSummaryReply {
  kind: 'shira' | 'lora';
  trainable: number;
  /** The file's __metadata__, in its own names. */
  metadata: Record<string, string>;
  format_version: number;
  base_identity: string;
  bytes_values: number;
  bytes_index: number;
  bytes_per_value: number;
}

export interface AdapterInspectReply extends AdapterSummaryReply {
  tensors: Record<string, unknown>[];
  file_bytes: number;
}

export interface AdapterConvertReply extends Omit<AdapterSummaryReply, 'metadata'> {
  out: string;
  from_format_version: number;
  /** How many layers use each index encoding ("lora" for LoRA layers). */
  encodings: Record<string, number>;
  file_bytes: number;
}

export interface JudgeTrainReply {
  out: string;
  classes: string[];
  heldout_accuracy: number;
  train_accuracy: number;
  heldout_accuracy_per_class: number[];
  train_count: number;
  heldout_count: number;
  final_loss: number;
  seconds: number;
}

export interface OverlapSummary {
  layers: number;
  awom_mean: number;
  awom_normalized_mean: number;
  awor_mean: number;
}

/** Every op the worker serves. `cancel` and `shutdown` are answered by its protocol loop itself. */
export type WorkerOps = {
  info: { args: Record<string, never>; reply: InfoReply };
  /** `path` (a model file) or `config` (an object or a JSON file) with `seed`; `identity` is what adapters must match. */
  load_model: { args: { path?: string; config?: string | Record<string, unknown>; seed?: number; identity?: string; cache_mb?: number }; reply: ModelSummary & { identity: string; cache_mb: number } };
  unload: { args: Record<string, never>; reply: { unloaded: true } };
  save_model: { args: { out: string }; reply: { out: string } };
  train: { args: TrainArgs; reply: TrainReply; event: TrainEvent };
  cancel: { args: Record<string, never>; reply: { cancelling: boolean } };
  sample: { args: SampleArgs; reply: { out: string; shape: number[]; ms: number } };
  apply_mix: {
    args: { adapters: { path: string; alpha: number }[] };
    reply: { ms: number; load_ms: number; cache_hits: number; cache_misses: number; layers_reblended: number; layers_unchanged: number; cache_bytes: number; adapters: number };
  };
  clear_mix: { args: Record<string, never>; reply: { ms: number; cache_bytes: number } };
  adapter_inspect: { args: { path: string }; reply: AdapterInspectReply };
  adapter_export: {
    args: { path: string; out: string; format?: 'peft' | 'native' };
    reply: { out: string; format: 'peft' | 'native'; folders?: { dir: string; tensors: number; r: number; trainable: number }[] };
  };
  adapter_convert: { args: { path: string; out: string; values?: 'f16' | 'f32' }; reply: AdapterConvertReply };
  adapter_overlap: {
    args: { a: string; b: string; alpha_a?: number; alpha_b?: number };
    reply: { layers: { layer: string; m: number; awom: number; awom_normalized: number; awor: number }[]; summary: OverlapSummary };
  };
  /** data: "images" U8 [N, H, W, 3], "labels" I64 [N], metadata "classes". */
  judge_train: {
    args: { data: string; out: string; steps?: number; batch?: number; lr?: number; heldout_fraction?: number; noise?: number; seed?: number };
    reply: JudgeTrainReply;
    event: { event: 'progress'; step: number; steps: number; loss: number };
  };
  /** Writes "probs" F32 [N, C] and "features" F32 [N, F] to `out`. */
  judge_score: { args: { judge: string; images: string; out: string }; reply: { out: string; classes: string[]; n: number } };
  /**
   * The CLIP tokenizer and A1111's prompt front end (SD checkpoints): `tokenizer` is the shipped merges file or a
   * diffusers tokenizer/ folder; ids and weights are [chunks][77], tokens each chunk's vocabulary strings.
   */
  tokenize: {
    args: { prompt: string; tokenizer: string; pad?: 'eos' | 'zero'; emphasis?: 'original' | 'no_norm' | 'ignore' | 'none'; comma_backtrack?: number };
    reply: { chunks: number; token_count: number; ids: number[][]; weights: number[][]; tokens: string[][]; pad: 'eos' | 'zero'; vocab_size: number };
  };
  /** inputs: "x" F32 [B, C, H, W], "t" I64 [B], optional "probe"; metadata "prompts". Writes "out", "context", "grad.<name>". */
  forward: { args: { inputs: string; out: string; grads?: string[] }; reply: { out: string; shape: number[] } };
  bench: { args: Record<string, string | number | boolean>; reply: Record<string, unknown>; event: { event: 'bench_row'; row: Record<string, unknown> } };
  shutdown: { args: Record<string, never>; reply: { shutdown: true } };
};

// ---- the generic part, shared by the real protocol and the fakes tests speak

export interface WorkerEvent {
  event: string;
  id?: number | string;
  [key: string]: unknown;
}

export type OpTable = { [op: string]: { args: object; reply: unknown; event?: WorkerEvent | { event: string } } };
export type OpName<P extends OpTable> = keyof P & string;
export type ArgsOf<P extends OpTable, Op extends OpName<P>> = CamelArgs<P[Op]['args']>;
export type ReplyOf<P extends OpTable, Op extends OpName<P>> = P[Op]['reply'];
export type EventOf<P extends OpTable, Op extends OpName<P>> = P[Op] extends { event: infer E } ? E : never;

/** camelCase → the worker's snake_case, on the top-level argument names (the one place this mapping happens). */
export function wireArgs(args: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(args).map(([key, value]) => [key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), value]));
}

// Compile-time check that every argument name above survives camelCase and back (one like `size_2x` or
// `cacheMB` would not): a name that does not round-trip makes `RoundTrip` false and the line below an error.
type ArgNames<P extends OpTable> = { [Op in OpName<P>]: keyof P[Op]['args'] & string }[OpName<P>];
type RoundTrips<N extends string> = N extends unknown ? (Snake<Camel<N>> extends N ? true : false) : never;
type RoundTrip = false extends RoundTrips<ArgNames<WorkerOps>> ? false : true;
true satisfies RoundTrip;
