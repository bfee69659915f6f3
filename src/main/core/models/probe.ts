// What a Stable Diffusion checkpoint is, from its safetensors headers alone: family, prediction type, dtype, EMA,
// metadata. Only the u64 header length and the JSON header are read (readSafetensorsHeader checks the length and
// every tensor's data_offsets against the file size), so probing a 4 GB file reads a few hundred KB and a truncated
// or lying file is refused before anything is stored. Facts: /work/shared/reference/sd-formats.md §1 (ldm layout,
// detection keys, EMA, v-prediction), §3 (diffusers folders), tests/reference/sd/README.md (the fixtures).
// Pickle files (.ckpt/.pt/.bin) are refused by name and magic bytes, never opened by an unpickler.
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { CheckpointLayout, Prediction, PredictionSource } from '../../../shared/api';
import { badInput, unsupported } from '../../../shared/errors';
import { readSafetensorsHeader, type Dtype } from '../io/safetensors';

export type SdFamily = 'stable-diffusion-1' | 'stable-diffusion-2';

/** One file the registration depends on: a moved or changed one is detected by its size and mtime. */
export interface ProbedFile {
  /** 'checkpoint' (ldm single file), 'unet' | 'text_encoder' | 'vae' (diffusers components), 'vae_file' (separate VAE). */
  role: 'checkpoint' | 'unet' | 'text_encoder' | 'vae' | 'vae_file';
  path: string;
  size: number;
  mtimeMs: number;
  /** Dominant dtype of its tensors ('fp16', 'fp32', 'bf16', or e.g. 'fp16+fp32'). */
  dtype: string;
  tensors: number;
  sha256: string | null;
}

export interface Probe {
  layout: CheckpointLayout;
  family: SdFamily;
  /** What the file says about ε vs v; null when it does not say (an SD-2 single file without metadata). */
  prediction: Prediction | null;
  predictionSource: Exclude<PredictionSource, 'user'>;
  predictionNote: string;
  /** Explicit training resolution (modelspec.resolution, diffusers sample_size); null: from family and prediction. */
  statedResolution: number | null;
  /** Dtype of the UNet weights. */
  dtype: string;
  /** ldm only: the `model_ema.*` keys; EMA weights are used when there are more than 100 (diffusers' rule). */
  emaKeys: number | null;
  weights: 'ema' | 'model';
  /** diffusers only: the weight-file variant read ('fp16' for `*.fp16.safetensors`), else null. */
  variant: string | null;
  metadata: Record<string, string>;
  /** What detection saw, in words, for the view ("text encoder: OpenCLIP ViT-H (cond_stage_model.model.*)"). */
  evidence: string[];
  files: ProbedFile[];
  /** The latent channels of its VAE (4 for SD-1/2) and the VAE's tensor shapes, for checking a separate VAE file. */
  vaeShapes: Map<string, number[]>;
}

const PICKLE_EXTENSIONS = new Set(['.ckpt', '.pt', '.pth', '.bin', '.pkl']);
const UNET = 'model.diffusion_model.';
const VAE = 'first_stage_model.';
/** Metadata values longer than this (kohya's tag frequencies, modelspec thumbnails) are stored as a note. */
const MAX_METADATA_VALUE = 2000;
/** A diffusers config.json or model_index.json is a few KB; anything past this is not one. */
const MAX_CONFIG_BYTES = 1 << 20;
/** sd-formats §1: a file "has EMA" when it carries more than 100 `model_ema*` keys. */
const EMA_MIN_KEYS = 100;

export function familyLabel(family: string, resolution: number, prediction: Prediction | null): string {
  if (family === 'stable-diffusion-1') return 'SD-1.x';
  if (family === 'stable-diffusion-2') return prediction === null ? 'SD-2.x (512 ε or 768 v?)' : prediction === 'v' ? `SD-2.x ${resolution} v` : `SD-2.x ${resolution} ε`;
  return family;
}

/** SD-1 trains at 512; SD-2 at 512 (ε, "base") or 768 (v), unless the file states its resolution. */
export function resolutionOf(probe: Pick<Probe, 'family' | 'statedResolution'>, prediction: Prediction | null): number {
  if (probe.statedResolution) return probe.statedResolution;
  return probe.family === 'stable-diffusion-2' && prediction === 'v' ? 768 : 512;
}

export function conversionAdvice(file: string): string {
  return (
    `"${basename(file)}" is a PyTorch pickle file. Opening a pickle can run any code it carries, so Shira Studio never does. ` +
    'Use the .safetensors version most model pages offer, or convert it once with a tool you trust: with PyTorch ≥ 1.13, ' +
    '`torch.load(path, weights_only=True)` rebuilds only tensors; save its "state_dict" with safetensors\' `save_file` ' +
    '(docs/models.md shows how).'
  );
}

/**
 * Refuses pickles by extension or by their first bytes: a zip (torch.save since 1.6) or a raw pickle's PROTO opcode
 * (0x80, protocol 2–5). A safetensors file's first byte is the low byte of its header length and may be 0x80 too,
 * so a file whose ninth byte opens its JSON header ('{') is never taken for a pickle.
 */
function refusePickle(file: string): void {
  if (PICKLE_EXTENSIONS.has(extname(file).toLowerCase())) throw unsupported(conversionAdvice(file));
  const head = Buffer.alloc(9);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, head, 0, 9, 0);
  } finally {
    closeSync(fd);
  }
  if (head[8] === 0x7b) return;
  if (head.readUInt32BE(0) === 0x504b0304 || (head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5)) throw unsupported(conversionAdvice(file));
}

interface Header {
  tensors: Map<string, { dtype: Dtype; shape: number[] }>;
  metadata: Record<string, string>;
}

function readHeader(file: string): Header {
  try {
    return readSafetensorsHeader(file);
  } catch (error) {
    const message = (error as Error).message;
    const what = message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
    throw badInput(`"${basename(file)}" cannot be registered: ${what}.`, { file });
  }
}

function fileInfo(role: ProbedFile['role'], path: string, header: Header, filter: (name: string) => boolean = () => true): ProbedFile {
  const st = statSync(path);
  return { role, path, size: st.size, mtimeMs: st.mtimeMs, dtype: dominantDtype(header, filter), tensors: header.tensors.size, sha256: null };
}

const DTYPE_NAMES: Partial<Record<Dtype, string>> = { F32: 'fp32', F16: 'fp16', BF16: 'bf16', F64: 'fp64' };

/** The float dtypes of the tensors `filter` keeps, most elements first: 'fp16', or 'fp16+fp32' for a mix. */
function dominantDtype(header: Header, filter: (name: string) => boolean): string {
  const count = new Map<string, number>();
  for (const [name, t] of header.tensors) {
    if (!filter(name) || !DTYPE_NAMES[t.dtype]) continue;
    count.set(DTYPE_NAMES[t.dtype]!, (count.get(DTYPE_NAMES[t.dtype]!) ?? 0) + t.shape.reduce((a, b) => a * b, 1));
  }
  const sorted = [...count].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  return sorted.length ? sorted.map(([d]) => d).join('+') : 'none';
}

function keptMetadata(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, v.length > MAX_METADATA_VALUE ? `(${v.length} characters, not kept)` : v]));
}

/**
 * A name from the file as a message may quote it: module-path-like names as they are, anything else (control
 * characters, a megabyte of text) as a placeholder, as io/safetensors.ts does for tensor names.
 */
function shown(name: unknown): string {
  return typeof name === 'string' && /^[A-Za-z0-9_.:-]{1,200}$/.test(name) ? name : '(an unprintable name)';
}

/** The top-level prefixes of a header's keys, for a message saying what a file holds instead of a checkpoint. */
function prefixes(names: Iterable<string>): string {
  const seen = new Set<string>();
  for (const n of names) if (seen.size < 4) seen.add(`${shown(n.split('.')[0])}.*`);
  return [...seen].join(', ') || 'no tensors';
}

/** An input-channel count other than 4 names the variant (sd-formats §1). */
function refuseVariant(inChannels: number, key: string, name: string): void {
  if (inChannels === 4) return;
  if (inChannels === 9)
    throw unsupported(`"${name}" is an inpainting model (${key} takes 9 input channels; a text-to-image UNet takes 4). Inpainting models are not supported; use the text-to-image version.`);
  if (inChannels === 8) throw unsupported(`"${name}" is an InstructPix2Pix model (${key} takes 8 input channels; a text-to-image UNet takes 4). Pix2pix models are not supported.`);
  throw badInput(`"${name}" has a UNet of an unknown kind: ${key} takes ${inChannels} input channels (a text-to-image UNet takes 4).`);
}

function need(header: Header, key: string, name: string): number[] {
  const t = header.tensors.get(key);
  if (!t) throw badInput(`"${name}" is missing the tensor ${key}, which every Stable Diffusion checkpoint has.`, { key });
  return t.shape;
}

/**
 * Every instance of a repeated block (a UNet transformer block, a text-encoder layer) holds the same tensors at any
 * model size, so a key one instance lacks is missing (named), and a key only a few instances have is unknown (a
 * renamed or misspelt one). Cheap, and catches what a header alone can show without the family's full key list.
 */
function checkRepeated(keys: readonly string[], pattern: RegExp, name: string): void {
  const blocks = new Map<string, Set<string>>();
  for (const k of keys) {
    const m = pattern.exec(k);
    if (!m) continue;
    const own = blocks.get(m[1]!) ?? new Set<string>();
    blocks.set(m[1]!, own.add(m[2]!));
  }
  if (blocks.size < 2) return;
  const counts = new Map<string, number>();
  for (const own of blocks.values()) for (const suffix of own) counts.set(suffix, (counts.get(suffix) ?? 0) + 1);
  for (const [suffix, n] of counts) {
    if (n === blocks.size || n * 2 < blocks.size) continue;
    const key = `${[...blocks].find(([, own]) => !own.has(suffix))![0]}${suffix}`;
    throw badInput(`"${name}" is missing the tensor ${shown(key)} (every other block of its kind has it).`, { key: shown(key) });
  }
  for (const [suffix, n] of counts) {
    if (n === blocks.size) continue;
    const key = `${[...blocks].find(([, own]) => own.has(suffix))![0]}${suffix}`;
    throw badInput(`"${name}" has an unknown tensor ${shown(key)} (no other block of its kind has it).`, { key: shown(key) });
  }
}

interface PredictionGuess {
  prediction: Prediction | null;
  source: Exclude<PredictionSource, 'user'>;
  note: string;
}

/** kohya's sai_model_spec: `modelspec.prediction_type` (epsilon | v) and `modelspec.architecture`. */
function predictionFromMetadata(metadata: Record<string, string>): PredictionGuess | null {
  const type = metadata['modelspec.prediction_type']?.toLowerCase();
  if (type === 'epsilon') return { prediction: 'epsilon', source: 'metadata', note: 'modelspec.prediction_type = epsilon' };
  if (type === 'v' || type === 'v_prediction') return { prediction: 'v', source: 'metadata', note: `modelspec.prediction_type = ${type}` };
  const arch = metadata['modelspec.architecture'] ?? '';
  if (/^stable-diffusion-v2-768-v\b/.test(arch)) return { prediction: 'v', source: 'metadata', note: `modelspec.architecture = ${arch}` };
  if (/^stable-diffusion-v(1|2-512)\b/.test(arch)) return { prediction: 'epsilon', source: 'metadata', note: `modelspec.architecture = ${arch}` };
  return null;
}

function byFamily(family: SdFamily): PredictionGuess {
  return family === 'stable-diffusion-1'
    ? { prediction: 'epsilon', source: 'family', note: 'every SD-1.x model predicts ε' }
    : {
        prediction: null,
        source: 'undetermined',
        note: 'an SD-2.x file does not say whether it is a 512 ε or a 768 v model; choose it (v2-1_768 models are v, v2-1_512/“base” models ε)',
      };
}

function statedResolution(metadata: Record<string, string>): number | null {
  const m = /^(\d{3,4})x(\d{3,4})$/.exec(metadata['modelspec.resolution'] ?? '');
  return m ? Number(m[1]) : null;
}

/** A single `.safetensors` in the ldm layout (sd-formats §1). */
export function probeSingleFile(path: string): Probe {
  const name = basename(path);
  refusePickle(path);
  const header = readHeader(path);
  const keys = [...header.tensors.keys()];
  const has = (prefix: string) => keys.some((k) => k.startsWith(prefix));
  const evidence: string[] = [];

  // SDXL first: its files also hold model.diffusion_model.*.
  if (has('conditioner.embedders.1.model.'))
    throw unsupported(`"${name}" is an SDXL base model (conditioner.embedders.1.model.* holds OpenCLIP bigG). SDXL is recognised but not supported yet; SD-1.x and SD-2.x are.`);
  if (has('conditioner.embedders.0.model.'))
    throw unsupported(`"${name}" is an SDXL refiner (conditioner.embedders.0.model.*, bigG alone). SDXL is recognised but not supported yet; SD-1.x and SD-2.x are.`);
  if (!has(UNET)) {
    if (keys.some((k) => k.startsWith('lora_') || /\.lora_(down|up|A|B)\./.test(k))) throw badInput(`"${name}" is a LoRA file, not a checkpoint: import it in the Library as an adapter.`);
    if (has('encoder.') && has('decoder.')) throw badInput(`"${name}" is a VAE, not a checkpoint: add it as the VAE of a checkpoint.`);
    throw badInput(`"${name}" is not a Stable Diffusion checkpoint: it has no UNet (model.diffusion_model.*); it holds ${prefixes(keys)}.`);
  }

  checkRepeated(keys, /^(model\.diffusion_model\..*?transformer_blocks\.\d+\.)(.+)$/, name);
  checkRepeated(keys, /^(cond_stage_model\.transformer\.(?:text_model\.)?encoder\.layers\.\d+\.)(.+)$/, name);
  checkRepeated(keys, /^(cond_stage_model\.model\.transformer\.resblocks\.\d+\.)(.+)$/, name);
  const convIn = `${UNET}input_blocks.0.0.weight`;
  refuseVariant(need(header, convIn, name)[1] ?? 0, 'input_blocks.0.0.weight', name);
  const outConv = need(header, `${UNET}out.2.weight`, name);
  if (outConv[0] !== 4) throw badInput(`"${name}" has a UNet of an unknown kind: out.2.weight gives ${outConv[0]} output channels (Stable Diffusion's give 4).`);
  need(header, `${UNET}time_embed.0.weight`, name);

  // The text encoder names the family; the UNet's proj_in (1×1 conv in SD-1, Linear in SD-2) must agree.
  const openClip = has('cond_stage_model.model.');
  const clipL = has('cond_stage_model.transformer.');
  if (!openClip && !clipL) throw badInput(`"${name}" has no text encoder (cond_stage_model.*): a UNet-only file cannot be used on its own.`);
  const projIn = header.tensors.get(`${UNET}input_blocks.1.1.proj_in.weight`);
  if (!projIn) throw badInput(`"${name}" is missing the tensor ${UNET}input_blocks.1.1.proj_in.weight, which every SD-1.x and SD-2.x UNet has.`, { key: `${UNET}input_blocks.1.1.proj_in.weight` });
  const linearProj = projIn.shape.length === 2;
  const family: SdFamily = openClip ? 'stable-diffusion-2' : 'stable-diffusion-1';
  if (linearProj !== openClip) {
    throw badInput(
      `"${name}" is of an unknown family: its text encoder is ${openClip ? 'OpenCLIP (SD-2.x)' : 'CLIP (SD-1.x)'} but its UNet's proj_in is a ${linearProj ? 'Linear layer (SD-2.x)' : '1×1 convolution (SD-1.x)'}.`,
    );
  }
  evidence.push(
    openClip
      ? 'text encoder: OpenCLIP ViT-H (cond_stage_model.model.*)'
      : `text encoder: CLIP ViT-L/14 (cond_stage_model.transformer.${has('cond_stage_model.transformer.text_model.') ? 'text_model.' : ''}*)`,
  );
  evidence.push(`UNet proj_in: ${linearProj ? 'Linear' : '1×1 convolution'}`);
  const toK = header.tensors.get(`${UNET}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`);
  if (toK) evidence.push(`cross-attention context width ${toK.shape[1]}${toK.shape[1] === 768 || toK.shape[1] === 1024 ? '' : ' (not a full-size model)'}`);

  const vaeShapes = new Map<string, number[]>();
  for (const [k, t] of header.tensors) if (k.startsWith(VAE)) vaeShapes.set(k.slice(VAE.length), t.shape);
  if (!vaeShapes.has('decoder.conv_in.weight'))
    throw badInput(`"${name}" has no VAE (first_stage_model.decoder.conv_in.weight is missing); add a VAE file with it.`, { key: `${VAE}decoder.conv_in.weight` });

  const emaKeys = keys.filter((k) => k.startsWith('model_ema.') && k !== 'model_ema.decay' && k !== 'model_ema.num_updates').length;
  const ema = emaKeys > EMA_MIN_KEYS;
  evidence.push(ema ? `EMA weights: ${emaKeys} model_ema.* tensors (these are used)` : 'no EMA weights');

  const metadata = header.metadata;
  const guess = header.tensors.has('v_pred')
    ? { prediction: 'v' as const, source: 'marker' as const, note: 'the file carries the v_pred marker' }
    : (predictionFromMetadata(metadata) ?? byFamily(family));
  return {
    layout: 'ldm',
    family,
    prediction: guess.prediction,
    predictionSource: guess.source,
    predictionNote: guess.note,
    statedResolution: statedResolution(metadata),
    dtype: dominantDtype(header, (k) => k.startsWith(UNET)),
    emaKeys,
    weights: ema ? 'ema' : 'model',
    variant: null,
    metadata: keptMetadata(metadata),
    evidence,
    files: [fileInfo('checkpoint', path, header, (k) => k.startsWith(UNET))],
    vaeShapes,
  };
}

/** `rel` inside the diffusers folder `dir`, parsed; a missing or malformed file is named. */
function readJson(dir: string, rel: string): Record<string, unknown> {
  const file = join(dir, rel);
  const unusable = (why: string) => badInput(`"${basename(dir)}" is not a usable diffusers folder: ${rel} ${why}.`);
  // Checked before reading: a FIFO named config.json would block the core, a huge file fill its memory.
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st) throw unusable('is missing');
  if (!st.isFile() || st.size > MAX_CONFIG_BYTES) throw unusable(st.isFile() ? `is ${st.size} bytes (a config is a few KB)` : 'is not a regular file');
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw unusable('is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw badInput(`"${basename(dir)}": ${rel} is not a JSON object.`);
  return parsed as Record<string, unknown>;
}

/** The weights of one component: the full-precision file when present, else the fp16 variant (sd-formats §3). */
function componentFile(dir: string, component: string, stem: string, folderName: string): { path: string; variant: string | null } {
  const base = join(dir, component);
  if (!existsSync(base)) throw badInput(`"${folderName}" is missing its ${component}/ folder.`);
  for (const variant of [null, 'fp16']) {
    const file = join(base, `${stem}${variant ? `.${variant}` : ''}.safetensors`);
    if (existsSync(file)) return { path: file, variant };
  }
  if (existsSync(join(base, `${stem}.safetensors.index.json`))) throw unsupported(`"${folderName}": ${component}/ holds sharded weights (${stem}.safetensors.index.json), which are not supported.`);
  for (const pickle of [`${stem}.bin`, `${stem}.fp16.bin`, 'pytorch_model.bin']) {
    if (existsSync(join(base, pickle))) throw unsupported(conversionAdvice(join(base, pickle)).replace(/^"/, `"${component}/`));
  }
  throw badInput(`"${folderName}" has no weights in ${component}/ (expected ${stem}.safetensors or ${stem}.fp16.safetensors).`);
}

/** A diffusers folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/ (sd-formats §3). */
export function probeDiffusers(dir: string): Probe {
  const name = basename(dir);
  const index = readJson(dir, 'model_index.json');
  const cls = shown(index._class_name);
  if (/XL/.test(cls) || 'text_encoder_2' in index) {
    // The refiner has text_encoder_2 (bigG) alone: its text_encoder entry is absent or [null, null].
    const clipL = Array.isArray(index.text_encoder) && index.text_encoder[0] !== null;
    throw unsupported(`"${name}" is an SDXL ${clipL ? 'base model' : 'refiner'} (model_index.json: ${cls}). SDXL is recognised but not supported yet; SD-1.x and SD-2.x are.`);
  }
  if (/Inpaint/.test(cls)) throw unsupported(`"${name}" is an inpainting pipeline (model_index.json: ${cls}). Inpainting models are not supported; use the text-to-image version.`);
  if (/Pix2Pix/i.test(cls)) throw unsupported(`"${name}" is an InstructPix2Pix pipeline (model_index.json: ${cls}). Pix2pix models are not supported.`);
  if (cls !== 'StableDiffusionPipeline') throw badInput(`"${name}" is a diffusers folder of an unknown kind (model_index.json: ${cls}); SD-1.x and SD-2.x are StableDiffusionPipeline.`);

  const unet = componentFile(dir, 'unet', 'diffusion_pytorch_model', name);
  const vae = componentFile(dir, 'vae', 'diffusion_pytorch_model', name);
  const text = componentFile(dir, 'text_encoder', 'model', name);
  const unetHeader = readHeader(unet.path);
  const vaeHeader = readHeader(vae.path);
  const textHeader = readHeader(text.path);
  const unetConfig = readJson(dir, 'unet/config.json');
  const textConfig = readJson(dir, 'text_encoder/config.json');

  checkRepeated([...unetHeader.tensors.keys()], /^(.*?transformer_blocks\.\d+\.)(.+)$/, `${name}/unet`);
  checkRepeated([...textHeader.tensors.keys()], /^(text_model\.encoder\.layers\.\d+\.)(.+)$/, `${name}/text_encoder`);
  refuseVariant(need(unetHeader, 'conv_in.weight', `${name}/unet`)[1] ?? 0, 'unet conv_in.weight', name);
  const projIn = need(unetHeader, 'down_blocks.0.attentions.0.proj_in.weight', `${name}/unet`);
  const linearProj = projIn.length === 2;
  const act = textConfig.hidden_act;
  const openClip = act === 'gelu';
  if ((act !== 'gelu' && act !== 'quick_gelu') || linearProj !== openClip) {
    throw badInput(
      `"${name}" is of an unknown family: text_encoder hidden_act ${shown(act)}, UNet proj_in ${linearProj ? 'Linear' : '1×1 convolution'} (SD-1.x: quick_gelu + convolution; SD-2.x: gelu + Linear).`,
    );
  }
  const family: SdFamily = openClip ? 'stable-diffusion-2' : 'stable-diffusion-1';
  need(textHeader, 'text_model.embeddings.token_embedding.weight', `${name}/text_encoder`);
  const vaeShapes = new Map([...vaeHeader.tensors].map(([k, t]) => [k, t.shape]));
  if (!vaeShapes.has('decoder.conv_in.weight')) throw badInput(`"${name}": vae/ is missing the tensor decoder.conv_in.weight.`, { key: 'decoder.conv_in.weight' });

  let guess: PredictionGuess | null = null;
  if (existsSync(join(dir, 'scheduler', 'scheduler_config.json'))) {
    const type = readJson(dir, 'scheduler/scheduler_config.json').prediction_type;
    if (type === 'epsilon' || type === 'v_prediction') guess = { prediction: type === 'epsilon' ? 'epsilon' : 'v', source: 'scheduler', note: `scheduler_config.json prediction_type = ${type}` };
  }
  guess ??= byFamily(family);
  const sample = unetConfig.sample_size;
  const variant = unet.variant ?? vae.variant ?? text.variant;
  return {
    layout: 'diffusers',
    family,
    prediction: guess.prediction,
    predictionSource: guess.source,
    predictionNote: guess.note,
    statedResolution: typeof sample === 'number' && Number.isInteger(sample) && sample > 0 ? sample * 8 : null,
    dtype: dominantDtype(unetHeader, () => true),
    emaKeys: null,
    weights: 'model',
    variant,
    metadata: keptMetadata({ ...unetHeader.metadata, ...(typeof index._diffusers_version === 'string' ? { _diffusers_version: index._diffusers_version } : {}) }),
    evidence: [
      `model_index.json: ${cls}`,
      `text encoder: ${openClip ? 'OpenCLIP ViT-H (hidden_act gelu)' : 'CLIP ViT-L/14 (hidden_act quick_gelu)'}`,
      `UNet proj_in: ${linearProj ? 'Linear' : '1×1 convolution'}`,
      existsSync(join(dir, 'tokenizer', 'merges.txt')) ? 'tokenizer/ present' : 'no tokenizer/ (the built-in CLIP vocabulary will be used)',
      ...(variant ? [`weights: the ${variant} variant files`] : []),
    ],
    files: [fileInfo('unet', unet.path, unetHeader), fileInfo('text_encoder', text.path, textHeader), fileInfo('vae', vae.path, vaeHeader)],
    vaeShapes,
  };
}

/** Where a checkpoint is registered: a diffusers folder by the folder, even when its model_index.json was picked. */
export function checkpointPath(path: string): string {
  const full = resolve(path);
  return basename(full) === 'model_index.json' ? dirname(full) : full;
}

/** A checkpoint by `checkpointPath`: a diffusers folder or a single `.safetensors` file. */
export function probeCheckpoint(path: string): Probe {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw badInput(`There is no file or folder at ${path}.`);
  }
  if (st.isDirectory()) {
    if (!existsSync(join(path, 'model_index.json')))
      throw badInput(`"${basename(path)}" is a folder without model_index.json: not a diffusers model. Choose a .safetensors file or a diffusers folder.`);
    return probeDiffusers(path);
  }
  if (!st.isFile()) throw badInput(`${path} is not a regular file.`);
  return probeSingleFile(path);
}

/**
 * A separate VAE file (`.safetensors`, keys bare, under `first_stage_model.` or in diffusers names). Its latent
 * width must be the checkpoint's, and every tensor it shares with the checkpoint's own VAE must have its shape.
 */
export function probeVae(path: string, checkpointVae: Map<string, number[]>): ProbedFile {
  const name = basename(path);
  let st;
  try {
    st = statSync(path);
  } catch {
    throw badInput(`There is no VAE file at ${path}.`);
  }
  if (!st.isFile()) throw badInput(`The VAE ${path} is not a regular file.`);
  refusePickle(path);
  const header = readHeader(path);
  const keys = [...header.tensors.keys()];
  if (keys.some((k) => k.startsWith(UNET) || k.startsWith('conditioner.'))) throw badInput(`"${name}" is a whole checkpoint, not a VAE.`);
  const strip = (k: string) => (k.startsWith(VAE) ? k.slice(VAE.length) : k);
  const shapes = new Map(keys.map((k) => [strip(k), header.tensors.get(k)!.shape]));
  const convIn = shapes.get('decoder.conv_in.weight');
  if (!convIn) throw badInput(`"${name}" is not a VAE: it has no decoder.conv_in.weight (it holds ${prefixes(keys)}).`, { key: 'decoder.conv_in.weight' });
  const latents = checkpointVae.get('decoder.conv_in.weight')?.[1] ?? 4;
  if (convIn[1] !== latents)
    throw badInput(`"${name}" is a VAE of the wrong shape: ${convIn[1]} latent channels (decoder.conv_in.weight), the model's VAE has ${latents}.`, { key: 'decoder.conv_in.weight' });
  for (const [k, shape] of shapes) {
    const own = checkpointVae.get(k);
    if (own && JSON.stringify(own) !== JSON.stringify(shape)) {
      throw badInput(`"${name}" is a VAE of the wrong shape: ${shown(k)} is ${JSON.stringify(shape)}, the model's is ${JSON.stringify(own)}.`, { key: shown(k) });
    }
  }
  return fileInfo('vae_file', path, header, (k) => !k.startsWith('model_ema'));
}
