// The one UI↔core contract. Each entry: method name → input schema (checked by the core's
// registry before any handler runs) and the result type. Hosts relay messages; they never
// add methods of their own. Adding a capability = one entry here + one handler + (often) a migration.
import { v, type Infer, type Schema } from './schema';
import { ALPHA, CONCEPT, MIX_MAX_ADAPTERS, SAMPLING, SEED, TRAINING } from './ranges';

declare const resultBrand: unique symbol;
/** Phantom carrier of a method's result type; nothing exists at run time. */
export interface Result<T> {
  readonly [resultBrand]?: T;
}
function method<I extends Schema<unknown>, R>(input: I): { input: I; result: Result<R> } {
  return { input, result: {} };
}

// ---- Domain shapes (plain data: they cross structured clone and JSON unchanged) ----

export type HostKind = 'electron' | 'server' | 'test';

export interface AppInfo {
  name: string;
  version: string;
  host: HostKind;
  dataDir: string;
  schemaVersion: number;
  platform: string;
  /** Limits the import enforces, so the UI can say them up front. */
  limits: { maxInputPixels: number; maxImportFiles: number; imageFormats: string[] };
}

export interface HealthReport {
  ok: boolean;
  /** 'quick' (`PRAGMA quick_check`, every call) or 'full' (`PRAGMA integrity_check`, when asked with `full: true`). */
  check: 'quick' | 'full';
  /** The check's rows; exactly ['ok'] when healthy. */
  integrity: string[];
  foreignKeyViolations: number;
  journalMode: string;
  schemaVersion: number;
  /** How long the checks took; they run on their own connection in a worker thread, not on the core's event loop. */
  checkMs: number;
  /** The last full integrity check since the app started, if any. */
  lastFullCheck: { ok: boolean; ms: number; at: string } | null;
  /** The native-module self-check (core/runtime/native-check.ts); the core always fills it. */
  native?: NativeReport;
}

// ---- Native modules and the engine build (the desktop self-check and GPU selection) ----

export type NativeModuleName = 'better-sqlite3' | 'sharp' | 'onnxruntime-node' | 'engine';
export type NativeProblem = 'abi-mismatch' | 'missing-library' | 'missing-binary' | 'load-failed';

export interface NativeCheck {
  module: NativeModuleName;
  ok: boolean;
  /** A required module that fails stops the core from starting. */
  required: boolean;
  /** The binary checked, where it is a file of ours (the Electron better-sqlite3, the worker). */
  path?: string | null;
  problem?: NativeProblem;
  /** What failed, in plain words. */
  message?: string;
  /** The loader's own words. */
  detail?: string;
  /** The one command (or, installed, the one action) that fixes it. */
  fix?: string;
}

export interface NativeReport {
  ok: boolean;
  runtime: 'node' | 'electron';
  /** NODE_MODULE_VERSION of the runtime that ran the check. */
  abi: string;
  checks: NativeCheck[];
}

export const DEVICE_PREFERENCES = ['auto', 'cpu', 'gpu'] as const;
export type DevicePreference = (typeof DEVICE_PREFERENCES)[number];

export interface GpuInfo {
  name: string;
  driver: string | null;
  memoryMiB: number | null;
}

/** Which worker build runs on which device, and why (core/worker/select.ts). */
export interface EngineSelection {
  preference: DevicePreference;
  device: 'cpu' | 'cuda' | null;
  /** Which builds exist: the CPU worker and the CUDA worker beside it. */
  builds: { cpu: boolean; cuda: boolean };
  /** NVIDIA GPUs nvidia-smi lists (empty without one, or without nvidia-smi). */
  gpus: GpuInfo[];
  reason: string;
  /** Set when an NVIDIA GPU is present but cannot be used: what to install. */
  advice?: string;
}

export type WorkerState = 'stopped' | 'starting' | 'ready' | 'closed' | 'failed';

export interface WorkerStatus {
  /** False when no worker binary is built here; `reason` says what to do. */
  available: boolean;
  state: WorkerState;
  binary: string | null;
  reason?: string;
  /** From the worker's readiness line once it has started. */
  version?: string;
  device?: string;
  torch?: string;
  cuda?: boolean;
  /** Present where the host chooses between CPU and CUDA builds (the desktop app, the studio server). */
  selection?: EngineSelection;
}

export interface BaseModel {
  id: number;
  name: string;
  family: string;
  resolution: number;
  /** SHA-256 of the weights: the identity adapters are bound to (null while a user checkpoint is being hashed). */
  weightsHash: string | null;
  isDefault: boolean;
  createdAt: string;
  /** 'builtin': shipped in resources/models; 'user': a Stable Diffusion checkpoint added by path (models.add). */
  source: ModelSource;
  /** The family as artists say it: "Built-in clipart", "SD-1.x", "SD-2.x 768 v". */
  familyLabel: string;
  /** Generation and training run on it here. False for user checkpoints until the Stable Diffusion loader lands. */
  runnable: boolean;
  /** What registration found and records, for user checkpoints; null for built-in models. */
  checkpoint: CheckpointInfo | null;
}

// ---- Stable Diffusion checkpoints registered by reference (core/models/checkpoints.ts, docs/models.md) ----

export type ModelSource = 'builtin' | 'user';
export type CheckpointLayout = 'ldm' | 'diffusers';
export const PREDICTIONS = ['epsilon', 'v'] as const;
export type Prediction = (typeof PREDICTIONS)[number];
/** Where the prediction type came from: the user, the file's metadata or markers, a diffusers scheduler, the family. */
export type PredictionSource = 'user' | 'metadata' | 'marker' | 'scheduler' | 'family' | 'undetermined';
/** 'moved': a registered file is no longer at its path; 'changed': its size or modification time differ. */
export type ModelFileStatus = 'ok' | 'moved' | 'changed';

export interface HashProgress {
  state: 'pending' | 'running' | 'done' | 'cancelled' | 'failed';
  /** Bytes hashed so far, of `total` (every file of the model, its separate VAE included). */
  done: number;
  total: number;
  error: string | null;
}

export interface CheckpointFile {
  role: 'checkpoint' | 'unet' | 'text_encoder' | 'vae' | 'vae_file';
  path: string;
  sizeBytes: number;
  modifiedAt: string;
  dtype: string;
  sha256: string | null;
  status: ModelFileStatus;
}

export interface CheckpointInfo {
  /** The .safetensors file or the diffusers folder, as registered. */
  path: string;
  layout: CheckpointLayout;
  /** In use: the user's choice, else what was detected; null when neither says (an SD-2.x file without metadata). */
  prediction: Prediction | null;
  detectedPrediction: Prediction | null;
  predictionSource: PredictionSource;
  /** Why, in words ("modelspec.prediction_type = v", "every SD-1.x model predicts ε"). */
  predictionNote: string;
  /** Dtype of the UNet weights: 'fp16', 'fp32', 'bf16' (or a mix such as 'fp16+fp32'). */
  dtype: string;
  /** ldm files: the number of `model_ema.*` tensors (EMA is used when there are more than 100); null for diffusers. */
  emaKeys: number | null;
  /** The weight set the loader will use. */
  weights: 'ema' | 'model';
  /** diffusers: the variant files read ('fp16'), else null. */
  variant: string | null;
  /** The checkpoint's size (a diffusers folder: its three weight files together); a separate VAE's is in `vae`. */
  sizeBytes: number;
  /** A1111/Civitai short hash: the first 10 hex digits of the SHA-256 (for a diffusers folder, of its file list). */
  autoV2: string | null;
  hash: HashProgress;
  /** The worst of its files' states, and what to do about it. */
  status: ModelFileStatus;
  statusMessage: string | null;
  evidence: string[];
  /** The safetensors `__metadata__` (modelspec.*, ss_*, …); very long values are replaced by a note. */
  metadata: Record<string, string>;
  files: CheckpointFile[];
  vae: CheckpointFile | null;
}

export interface DatasetSummary {
  id: number;
  name: string;
  triggerWord: string | null;
  sourcePath: string | null;
  imageCount: number;
  /** Σ repeats over images: what one epoch sees, kohya-style. */
  weightedCount: number;
  coverImageId: number | null;
  /** The artist marked the dataset as pixel art: its images show with nearest-neighbour scaling at any size. */
  pixelArt: boolean;
  createdAt: string;
  updatedAt: string;
}

export type CaptionSource = 'sidecar' | 'folder' | 'none' | 'user';

export interface DatasetImage {
  id: number;
  datasetId: number;
  /** Path relative to the imported folder (or the file name for a file list). */
  relPath: string;
  width: number;
  height: number;
  /** Format of the original file as sharp identified it. */
  format: string;
  bytes: number;
  sha256: string;
  caption: string;
  captionSource: CaptionSource;
  repeats: number;
  classTokens: string | null;
}

export interface Dataset extends DatasetSummary {
  images: DatasetImage[];
}

export type ImportFileStatus = 'imported' | 'skipped';

export interface ImportFileReport {
  /** Path as given or found, relative to the chosen folder when there is one. */
  path: string;
  status: ImportFileStatus;
  /** Why a file was skipped, in plain words (e.g. "empty file (0 bytes)"). */
  reason?: string;
  /** What was changed on the way in, for an imported file (e.g. its caption cut to the limit). */
  note?: string;
  imageId?: number;
}

export interface ImportReport {
  importId: string;
  /** null when nothing could be imported (no dataset is created for an all-rejected import). */
  datasetId: number | null;
  imported: number;
  skipped: number;
  files: ImportFileReport[];
  /**
   * How a new dataset was named (null when appending): a kohya `N_name` folder gives its class words as the name
   * (the repeat prefix dropped) and as the suggested trigger word, unless the user typed either.
   */
  naming: { name: string; triggerWord: string | null; kohyaFolder: string | null } | null;
}

export type AdapterKind = 'shira' | 'lora';

export interface AdapterSummary {
  id: number;
  name: string;
  kind: AdapterKind;
  /** How it was trained: SHiRA {method, mask, density, seed, …}; LoRA {method, rank, alpha, …}. */
  method: Record<string, unknown>;
  baseModelId: number | null;
  baseModelName: string | null;
  /** SHA-256 of the base weights; the adapter refuses any other base. */
  baseWeightsHash: string | null;
  datasetId: number | null;
  triggerWords: string[];
  preferredWeight: number;
  tags: string[];
  notes: string;
  /** The image the artist picked as the cover; until then the first image generated with the adapter. */
  coverGenerationId: number | null;
  /** What the cards show: that image, else the training run's last preview; null when there is neither. */
  cover: AdapterCover | null;
  /** Stored bytes (encoded values + indices). */
  sizeBytes: number;
  /** Trained values: SHiRA Σ K, LoRA Σ |A| + |B|. */
  trainable: number;
  /** sizeBytes / trainable; PEFT's SHiRA files need 12. */
  bytesPerValue: number | null;
  /** SHA-256 over the decoded tensors (encoding-independent). */
  contentHash: string | null;
  /** SHA-256 of the exported .safetensors file, and its 10-hex AutoV2 short form. */
  fileSha256: string | null;
  autoV2: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface AdapterCover {
  media: 'generation-thumb' | 'training-sample';
  id: number;
  /** Size of one picture (a preview grid's tile), for choosing nearest-neighbour scaling. */
  width: number;
  height: number;
  pixelArt: boolean;
}

export interface AdapterTensorInfo {
  name: string;
  shape: number[];
  encoding: string;
  bytes: number;
  k?: number;
  rank?: number;
}

export interface AdapterDetail extends AdapterSummary {
  tensors: AdapterTensorInfo[];
  training: {
    runId: number;
    config: Record<string, unknown>;
    device: string | null;
    steps: number;
    startedAt: string | null;
    finishedAt: string | null;
    result: Record<string, unknown> | null;
    /** At most ~400 points of the loss curve. */
    loss: { step: number; loss: number }[];
  } | null;
}

export interface AdapterUpdate {
  name?: string;
  tags?: string[];
  notes?: string;
  triggerWords?: string[];
  preferredWeight?: number;
  coverGenerationId?: number | null;
}

export interface MixEntry {
  adapterId: number;
  alpha: number;
}

export interface MixResult {
  /** The base model the mix is fused into. */
  baseModelId: number | null;
  entries: MixEntry[];
  /** Worker time to re-blend the weights (the number the UI shows). */
  switchMs: number;
  /** Worker time decoding adapters that were not cached. */
  loadMs: number;
  /** Whole call, including reading the library and loading the base when it changed. */
  totalMs: number;
  cacheHits: number;
  cacheMisses: number;
  layersReblended: number;
  layersUnchanged: number;
}

export interface SavedMix {
  id: number;
  name: string;
  entries: MixEntry[];
  createdAt: string;
  updatedAt: string;
}

export type JobStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export type MaskKind = 'struct' | 'rand' | 'wm' | 'grad' | 'snip';
export const MASK_KINDS: readonly MaskKind[] = ['struct', 'rand', 'wm', 'grad', 'snip'];

export interface TrainingRequest {
  datasetId: number;
  /** Default: the default base model. */
  baseModelId?: number;
  name?: string;
  method: AdapterKind;
  /** SHiRA mask (default struct) and density (default 0.02); a LoRA with `matchDensity` gets the rank whose size matches. */
  mask?: MaskKind;
  density?: number;
  rank?: number;
  matchDensity?: number;
  steps?: number;
  lr?: number;
  batch?: number;
  seed?: number;
  checkpointEvery?: number;
  valuesDtype?: 'f16' | 'f32';
  samplePrompts?: string[];
  sampleEvery?: number;
  /**
   * Caption tag dropout (kohya's caption_tag_dropout_rate), 0–0.9, default 0: each comma-separated tag of a caption
   * is left out with this chance per step; the tag holding the dataset's trigger word never is, so the trigger alone
   * learns to carry the style.
   */
  tagDropout?: number;
  /** Also train on left–right mirrored images (half the draws); default off (text, logos, asymmetric subjects). */
  flip?: boolean;
}

export interface TrainingJob {
  id: number;
  name: string;
  kind: AdapterKind;
  status: JobStatus;
  datasetId: number | null;
  baseModelId: number | null;
  adapterId: number | null;
  step: number;
  steps: number;
  attempts: number;
  config: TrainingRequest;
  error: string | null;
  result: Record<string, unknown> | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export type SamplerName = 'ddim' | 'euler';

export interface GenerateRequest {
  prompt: string;
  negativePrompt?: string;
  /** First image's seed; image i gets seed + i. Random when absent. */
  seed?: number;
  steps?: number;
  guidance?: number;
  sampler?: SamplerName;
  batch?: number;
  /** Applied first (fused); absent = keep whatever mix is applied now. */
  mix?: MixEntry[];
  baseModelId?: number;
  /** 'auto' (default): whichever engine was faster on this machine; 'ort' takes SHiRA mixes only. */
  engine?: GenerateEngine;
  /**
   * A Compare cell: not shown in the Gallery on its own; a grid saved with `grids.save` keeps it. An identical
   * generation (same model, mix, prompt, seed and settings) is never drawn twice: the stored one comes back.
   */
  forGrid?: boolean;
}

export type GenerateEngine = 'auto' | 'worker' | 'ort';

export interface EngineChoice {
  engine: 'worker' | 'ort';
  workerMs: number;
  ortMs: number;
  steps: number;
  measuredAt: string;
}

export interface Generation {
  id: number;
  baseModelId: number | null;
  baseModelName: string | null;
  prompt: string;
  negativePrompt: string;
  seed: number;
  sampler: SamplerName;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  mix: MixEntry[];
  favourite: boolean;
  durationMs: number | null;
  /** The engine that drew it: 'worker' (libtorch) or 'ort' (onnxruntime-node). */
  engine: 'worker' | 'ort';
  /** The artist marked it as pixel art: shown with nearest-neighbour scaling at any size. */
  pixelArt: boolean;
  createdAt: string;
}

export interface GenerationPage {
  total: number;
  items: Generation[];
}

/** A row or column of a Compare grid as it was shown. */
export interface GridAxis {
  label: string;
  sub?: string;
  /** What the axis varies: an adapter's kind, the base model, an α or a prompt. */
  kind?: AdapterKind | 'base';
}

export type GridMode = 'alpha' | 'prompts' | 'combine';

export interface GridSummary {
  id: number;
  title: string;
  mode: GridMode;
  rows: GridAxis[];
  columns: GridAxis[];
  /** Generation ids by row, then column; null where a cell failed, was stopped or its image was deleted. */
  cells: (number | null)[][];
  /** The prompts as drawn (trigger words included), one per grid row in the prompts-per-row layouts. */
  prompts: string[];
  seed: number;
  steps: number;
  guidance: number;
  negativePrompt: string;
  createdAt: string;
}

export interface Grid extends GridSummary {
  /** Every image the grid holds, once each. */
  generations: Generation[];
}

/** The gallery: single images and Compare grids, newest first. */
export type GalleryEntry = ({ type: 'image' } & Generation) | ({ type: 'grid' } & GridSummary);

export interface GalleryPage {
  total: number;
  items: GalleryEntry[];
}

/** What the built-in model's word tokenizer makes of a text (see `models.checkWords`). */
export interface WordCheck {
  model: string;
  /** False when the model does not tokenize by words (nothing to mark). */
  applies: boolean;
  /** Rows shared by every word outside the vocabulary (FNV-1a 64 of the word, modulo this). */
  spareRows: number;
  words: WordInfo[];
  /** With `suggest`: a word outside the vocabulary on a spare row nothing in the library uses (null: every row is taken). */
  suggestion?: WordInfo | null;
}

export interface WordInfo {
  word: string;
  /** In the vocabulary: a row of its own, with the meaning the model learnt. */
  known: boolean;
  /** For unknown words: the spare row it hashes into. */
  spareRow: number | null;
  /** Other words on the same spare row, with where the library uses them. */
  sharesWith: { word: string; where: string }[];
  /** Names of the adapters and datasets that have this word as their trigger. */
  triggerOf: string[];
}

export interface ConceptRequest {
  /** 1–4 adapters of one base model, each with its training images in the library. */
  adapterIds: number[];
  /** Weights at which all of them are fused (default [1]). */
  alphas?: number[];
  steps?: number;
  guidance?: number;
}

/** Concept-loss numbers for a set of adapters (see docs/concept-loss.md for the definitions). */
export interface ConceptReport {
  id: number;
  adapterIds: number[];
  alphas: number[];
  judge: { classes: string[]; heldoutAccuracy: number; heldoutAccuracyPerClass: number[] };
  /** Style score of each adapter alone (α = 1), the base model's score on the same prompts, and drift. */
  single: { adapterId: number; name: string; score: number; baseScore: number; drift: number }[];
  /** Each adapter's score with all of them fused at α; drop in points and retention against single. */
  fused: { alpha: number; adapterId: number; score: number; dropPoints: number; retention: number | null }[];
  overlaps: { a: number; b: number; layers: number; awor: number; awomNormalized: number; awom: number }[];
  seconds: number;
  createdAt: string;
}

// ---- Input schemas ----

/** Longest caption, typed or read from a sidecar. */
export const MAX_CAPTION_CHARS = 2000;

const id = v.int({ min: 1 });
const alpha = v.number({ min: ALPHA.min, max: ALPHA.max });
const mixEntries = (min: number) => v.array(v.object({ adapterId: id, alpha }), { min, max: MIX_MAX_ADAPTERS });
const gridAxis = v.object({
  label: v.string({ min: 1, max: 1000 }),
  sub: v.optional(v.string({ max: 1000 })),
  kind: v.optional(v.enum(['shira', 'lora', 'base'] as const)),
});
const importSource = v.variant('kind', {
  folder: v.object({ kind: v.literal('folder'), path: v.string({ min: 1, max: 4096 }) }),
  files: v.object({ kind: v.literal('files'), paths: v.array(v.string({ min: 1, max: 4096 }), { min: 1, max: 10_000 }) }),
});

export const api = {
  'app.info': method<Schema<Record<string, never>>, AppInfo>(v.empty()),
  /** Library checks off the event loop: quick_check on every call, the full integrity_check with `full: true`. */
  'app.health': method<Schema<{ full?: boolean }>, HealthReport>(v.object({ full: v.optional(v.boolean()) })),
  'models.list': method<Schema<Record<string, never>>, BaseModel[]>(v.empty()),
  'models.get': method<Schema<{ id: number }>, BaseModel>(v.object({ id })),
  /**
   * Registers a Stable Diffusion checkpoint by reference: a `.safetensors` file (ldm layout) or a diffusers folder,
   * optionally with a separate VAE file. Only headers are read; the SHA-256 follows in the background
   * (`models.hash` events). Nothing is copied; the files stay where they are.
   */
  'models.add': method<Schema<{ path: string; vaePath?: string; name?: string }>, BaseModel>(
    v.object({ path: v.string({ min: 1, max: 4096 }), vaePath: v.optional(v.string({ min: 1, max: 4096 })), name: v.optional(v.string({ min: 1, max: 200, trim: true })) }),
  ),
  /** Forgets a user checkpoint (its files are left alone); refused for built-in models and models adapters were trained on. */
  'models.remove': method<Schema<{ id: number }>, { removed: boolean }>(v.object({ id })),
  /** ε or v for a user checkpoint; null goes back to what was detected. */
  'models.setPrediction': method<Schema<{ id: number; prediction: Prediction | null }>, BaseModel>(v.object({ id, prediction: v.nullable(v.enum(PREDICTIONS)) })),
  /** Reads the headers again and re-computes the SHA-256: after a file changed, or to check it. */
  'models.rehash': method<Schema<{ id: number }>, BaseModel>(v.object({ id })),
  'models.cancelHash': method<Schema<{ id: number }>, BaseModel>(v.object({ id })),
  /** The native engine's state; `start: true` launches it if it is not running. */
  'worker.status': method<Schema<{ start?: boolean }>, WorkerStatus>(v.object({ start: v.optional(v.boolean()) })),
  /** Engine → Device: auto (CUDA when a GPU is visible), cpu, or gpu; kept in <data>/settings.json. Restarts the idle engine. */
  'worker.setDevice': method<Schema<{ device: DevicePreference }>, WorkerStatus>(v.object({ device: v.enum(DEVICE_PREFERENCES) })),
  'datasets.list': method<Schema<Record<string, never>>, DatasetSummary[]>(v.empty()),
  'datasets.get': method<Schema<{ id: number }>, Dataset>(v.object({ id })),
  'datasets.import': method<Schema<ImportInput>, ImportReport>(
    v.object({
      source: importSource,
      /** Append to this dataset instead of creating one. */
      datasetId: v.optional(id),
      name: v.optional(v.string({ min: 1, max: 200, trim: true })),
      triggerWord: v.optional(v.string({ max: 100, trim: true })),
      /** Client-chosen id so progress events and cancel can name this import. */
      importId: v.optional(v.string({ min: 1, max: 100 })),
      /** The picked folder's name where the paths lose it (browser uploads): default name, kohya repeats and trigger. */
      folderName: v.optional(v.string({ min: 1, max: 255, trim: true })),
    }) as Schema<ImportInput>,
  ),
  'datasets.cancelImport': method<Schema<{ importId: string }>, { cancelled: boolean }>(v.object({ importId: v.string({ min: 1, max: 100 }) })),
  'datasets.update': method<Schema<{ id: number; name?: string; triggerWord?: string | null; pixelArt?: boolean }>, DatasetSummary>(
    v.object({
      id,
      name: v.optional(v.string({ min: 1, max: 200, trim: true })),
      triggerWord: v.optional(v.nullable(v.string({ max: 100, trim: true }))),
      pixelArt: v.optional(v.boolean()),
    }),
  ),
  'datasets.setCaption': method<Schema<{ imageId: number; caption: string }>, DatasetImage>(v.object({ imageId: id, caption: v.string({ max: MAX_CAPTION_CHARS }) })),
  'datasets.removeImage': method<Schema<{ imageId: number }>, { removed: boolean }>(v.object({ imageId: id })),
  'datasets.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
  'adapters.list': method<Schema<{ query?: string; kind?: AdapterKind; baseModelId?: number; tag?: string; sort?: 'recent' | 'name' | 'size' }>, AdapterSummary[]>(
    v.object({
      query: v.optional(v.string({ max: 200 })),
      kind: v.optional(v.enum(['shira', 'lora'] as const)),
      baseModelId: v.optional(id),
      tag: v.optional(v.string({ min: 1, max: 100 })),
      sort: v.optional(v.enum(['recent', 'name', 'size'] as const)),
    }),
  ),
  'adapters.get': method<Schema<{ id: number }>, AdapterDetail>(v.object({ id })),
  'adapters.update': method<Schema<{ id: number } & AdapterUpdate>, AdapterSummary>(
    v.object({
      id,
      name: v.optional(v.string({ min: 1, max: 200, trim: true })),
      tags: v.optional(v.array(v.string({ min: 1, max: 100, trim: true }), { max: 100 })),
      notes: v.optional(v.string({ max: 20_000 })),
      triggerWords: v.optional(v.array(v.string({ min: 1, max: 100, trim: true }), { max: 50 })),
      preferredWeight: v.optional(alpha),
      coverGenerationId: v.optional(v.nullable(id)),
    }),
  ),
  'adapters.duplicate': method<Schema<{ id: number; name?: string }>, AdapterSummary>(v.object({ id, name: v.optional(v.string({ min: 1, max: 200, trim: true })) })),
  'adapters.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
  /** Writes `<dir>/<name>.safetensors` + `<name>.shira.json`; dir defaults to `<data>/exports`. */
  'adapters.export': method<Schema<{ id: number; dir?: string }>, { file: string; sidecar: string; sha256: string; autoV2: string }>(
    v.object({ id, dir: v.optional(v.string({ min: 1, max: 4096 })) }),
  ),
  /** A package (.safetensors, with its .shira.json when present) or a PEFT SHiRA/LoRA file. */
  'adapters.import': method<Schema<{ path: string; name?: string; baseModelId?: number }>, AdapterSummary>(
    v.object({ path: v.string({ min: 1, max: 4096 }), name: v.optional(v.string({ min: 1, max: 200, trim: true })), baseModelId: v.optional(id) }),
  ),
  /** Fuses W0 + Σ αᵢ·Sᵢ into the worker's base model; an empty list restores W0. */
  'mix.apply': method<Schema<{ entries?: MixEntry[]; mixId?: number }>, MixResult>(v.object({ entries: v.optional(mixEntries(0)), mixId: v.optional(id) })),
  'mix.current': method<Schema<Record<string, never>>, { baseModelId: number | null; entries: MixEntry[] }>(v.empty()),
  'mixes.list': method<Schema<Record<string, never>>, SavedMix[]>(v.empty()),
  'mixes.save': method<Schema<{ id?: number; name: string; entries: MixEntry[] }>, SavedMix>(
    v.object({
      id: v.optional(id),
      name: v.string({ min: 1, max: 200, trim: true }),
      entries: mixEntries(1),
    }),
  ),
  'mixes.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
  'training.start': method<Schema<TrainingRequest>, TrainingJob>(
    v.object({
      datasetId: id,
      baseModelId: v.optional(id),
      name: v.optional(v.string({ min: 1, max: 200, trim: true })),
      method: v.enum(['shira', 'lora'] as const),
      mask: v.optional(v.enum(['struct', 'rand', 'wm', 'grad', 'snip'] as const)),
      density: v.optional(v.number(TRAINING.density)),
      rank: v.optional(v.int(TRAINING.rank)),
      matchDensity: v.optional(v.number(TRAINING.density)),
      steps: v.optional(v.int(TRAINING.steps)),
      lr: v.optional(v.number(TRAINING.lr)),
      batch: v.optional(v.int(TRAINING.batch)),
      seed: v.optional(v.int(TRAINING.seed)),
      checkpointEvery: v.optional(v.int(TRAINING.checkpointEvery)),
      valuesDtype: v.optional(v.enum(['f16', 'f32'] as const)),
      samplePrompts: v.optional(v.array(v.string({ min: 1, max: 300 }), { max: TRAINING.maxPreviewPrompts })),
      sampleEvery: v.optional(v.int(TRAINING.sampleEvery)),
      tagDropout: v.optional(v.number(TRAINING.tagDropout)),
      flip: v.optional(v.boolean()),
    }) as Schema<TrainingRequest>,
  ),
  'training.list': method<Schema<{ status?: JobStatus }>, TrainingJob[]>(v.object({ status: v.optional(v.enum(['queued', 'running', 'completed', 'failed', 'cancelled'] as const)) })),
  'training.get': method<Schema<{ id: number }>, TrainingJob>(v.object({ id })),
  'training.cancel': method<Schema<{ id: number }>, TrainingJob>(v.object({ id })),
  /** Preview grids so far (ids for `/media/training-sample/<id>`), oldest first. */
  'training.samples': method<Schema<{ id: number }>, { id: number; step: number }[]>(v.object({ id })),
  generate: method<Schema<GenerateRequest>, Generation[]>(
    v.object({
      prompt: v.string({ max: 1000 }),
      negativePrompt: v.optional(v.string({ max: 1000 })),
      seed: v.optional(v.int(SEED)),
      steps: v.optional(v.int(SAMPLING.steps)),
      guidance: v.optional(v.number(SAMPLING.guidance)),
      sampler: v.optional(v.enum(['ddim', 'euler'] as const)),
      batch: v.optional(v.int(SAMPLING.batch)),
      mix: v.optional(mixEntries(0)),
      baseModelId: v.optional(id),
      engine: v.optional(v.enum(['auto', 'worker', 'ort'] as const)),
      forGrid: v.optional(v.boolean()),
    }) as Schema<GenerateRequest>,
  ),
  /** The faster engine on this machine for the default base model (measured once; `remeasure` again). */
  'engines.choice': method<Schema<{ remeasure?: boolean }>, EngineChoice>(v.object({ remeasure: v.optional(v.boolean()) })),
  'generations.list': method<Schema<{ offset?: number; limit?: number; favourite?: boolean; adapterId?: number }>, GenerationPage>(
    v.object({ offset: v.optional(v.int({ min: 0 })), limit: v.optional(v.int({ min: 1, max: 500 })), favourite: v.optional(v.boolean()), adapterId: v.optional(id) }),
  ),
  'generations.get': method<Schema<{ id: number }>, Generation>(v.object({ id })),
  'generations.setFavourite': method<Schema<{ id: number; favourite: boolean }>, Generation>(v.object({ id, favourite: v.boolean() })),
  'generations.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
  /** Trains a style judge on the adapters' own images and measures single vs fused (a minute or two on CPU). */
  'concept.evaluate': method<Schema<ConceptRequest>, ConceptReport>(
    v.object({
      adapterIds: v.array(id, { min: 1, max: CONCEPT.maxAdapters }),
      alphas: v.optional(v.array(v.number(CONCEPT.alpha), { min: 1, max: CONCEPT.alpha.count })),
      steps: v.optional(v.int(CONCEPT.steps)),
      guidance: v.optional(v.number(CONCEPT.guidance)),
    }) as Schema<ConceptRequest>,
  ),
  /** The newest stored report for exactly this set of adapters, or null. */
  'concept.latest': method<Schema<{ adapterIds: number[] }>, ConceptReport | null>(v.object({ adapterIds: v.array(id, { min: 1, max: CONCEPT.maxAdapters }) })),

  // ---- A first real project (issue 24): word checks, bulk captions, run history, gallery grids, pixel art ----
  /**
   * How the base model's word tokenizer reads `text`: words it does not know, and words that share a hashed spare
   * row with a trigger word or a caption word of the library. `suggest`: also a free word for a trigger.
   */
  'models.checkWords': method<Schema<{ text: string; baseModelId?: number; suggest?: boolean }>, WordCheck>(
    v.object({ text: v.string({ max: 2000 }), baseModelId: v.optional(id), suggest: v.optional(v.boolean()) }),
  ),
  /** Many captions of one dataset at once, in one transaction (the caption editor's bulk edits). */
  'datasets.setCaptions': method<Schema<{ datasetId: number; captions: { imageId: number; caption: string }[] }>, Dataset>(
    v.object({ datasetId: id, captions: v.array(v.object({ imageId: id, caption: v.string({ max: 2000 }) }), { min: 1, max: 10_000 }) }),
  ),
  /** A run's loss curve so far (at most ~2000 points, always the last), for a chart opened mid-run. */
  'training.loss': method<Schema<{ id: number }>, { step: number; loss: number }[]>(v.object({ id })),
  /** Images and Compare grids, newest first (`favourite`: favourite images only; `adapterId`: made with it). */
  'gallery.list': method<Schema<{ offset?: number; limit?: number; favourite?: boolean; adapterId?: number }>, GalleryPage>(
    v.object({ offset: v.optional(v.int({ min: 0 })), limit: v.optional(v.int({ min: 1, max: 500 })), favourite: v.optional(v.boolean()), adapterId: v.optional(id) }),
  ),
  'generations.setPixelArt': method<Schema<{ id: number; pixelArt: boolean }>, Generation>(v.object({ id, pixelArt: v.boolean() })),
  /** Keeps a Compare grid as one gallery entry; its cells are generations made with `forGrid`. */
  'grids.save': method<Schema<GridInput>, GridSummary>(
    v.object({
      title: v.string({ min: 1, max: 300, trim: true }),
      mode: v.enum(['alpha', 'prompts', 'combine'] as const),
      rows: v.array(gridAxis, { min: 1, max: 64 }),
      columns: v.array(gridAxis, { min: 1, max: 64 }),
      cells: v.array(v.array(v.nullable(id), { min: 1, max: 64 }), { min: 1, max: 64 }),
      prompts: v.array(v.string({ max: 1000 }), { min: 1, max: 64 }),
      seed: v.int(SEED),
      steps: v.int(SAMPLING.steps),
      guidance: v.number(SAMPLING.guidance),
      negativePrompt: v.string({ max: 1000 }),
    }) as Schema<GridInput>,
  ),
  'grids.get': method<Schema<{ id: number }>, Grid>(v.object({ id })),
  /** Removes the grid entry; images that nothing else holds (gallery, favourite, cover, another grid) go at the next start. */
  'grids.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
} as const;

export type GridInput = Omit<GridSummary, 'id' | 'createdAt'>;

export interface ImportInput {
  source: { kind: 'folder'; path: string } | { kind: 'files'; paths: string[] };
  datasetId?: number;
  name?: string;
  triggerWord?: string;
  importId?: string;
  folderName?: string;
}

export type Api = typeof api;
export type MethodName = keyof Api;
export type InputOf<M extends MethodName> = Infer<Api[M]['input']>;
export type ResultOf<M extends MethodName> = Api[M]['result'] extends Result<infer R> ? R : never;

// ---- Events: the core's one-way stream to every connected client ----

export type CoreEvent =
  /** reading: cheap checks and hashing, over every file found; decoding: sharp, over the files that passed. */
  | { type: 'import.progress'; importId: string; phase: 'reading' | 'decoding'; done: number; total: number; current: string }
  | { type: 'library.changed'; what: 'datasets' | 'adapters' | 'models' | 'mixes' | 'generations'; id?: number }
  | { type: 'training.progress'; jobId: number; step: number; steps: number; loss: number; itS: number; etaS: number }
  /** A preview grid (one image per sample prompt) at `step`: `/media/training-sample/<sampleId>`. */
  | { type: 'training.sample'; jobId: number; step: number; sampleId: number }
  | { type: 'training.changed'; jobId: number; status: JobStatus; adapterId: number | null; error: string | null }
  | { type: 'concept.progress'; phase: string; done: number; total: number }
  /** A user checkpoint's SHA-256 in the background: bytes done of total, then its final state. */
  | { type: 'models.hash'; modelId: number; state: HashProgress['state']; done: number; total: number; error: string | null }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string; time: string };

export type CoreEventType = CoreEvent['type'];

// ---- Media: images are fetched by URL, never shipped inside API results ----

/** thumb/image: dataset images; generation/generation-thumb: gallery images (PNG with recipe / WebP); training-sample: preview grids. */
export type MediaKind = 'thumb' | 'image' | 'generation' | 'generation-thumb' | 'training-sample';
export const MEDIA_KINDS: readonly MediaKind[] = ['thumb', 'image', 'generation', 'generation-thumb', 'training-sample'];

/**
 * Images no larger than this (long side, px) are pixel art or a small model's output: thumbnails and viewers scale
 * them with nearest-neighbour, never smoothing. Larger ones do too when the artist marks them.
 */
export const PIXEL_ART_MAX_SIDE = 128;
