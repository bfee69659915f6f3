// Adapter files (docs/adapter-format.md) ↔ library rows. The worker encodes and decodes tensors
// (Rice-coded or regenerated indices, fp16 values); this side never decodes an index: it checks the
// container, moves the encoded blobs between one safetensors file and one `adapter_tensors` row per
// layer, and writes the canonical file back byte for byte, so the stored SHA-256 (and its AutoV2
// short form) is the hash of every file the library hands out.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { badInput } from '../../../shared/errors';
import { readSafetensors, readSafetensorsHeader, writeSafetensors, type Dtype, type TensorData } from '../io/safetensors';

export const ADAPTER_FORMAT = 'shira-studio-adapter';
export const ADAPTER_FORMAT_VERSION = '2';
/** Larger files are refused before reading: an SD-1.5 SHiRA at 2 % is ~50 MB, an SDXL one ~150 MB. */
export const MAX_ADAPTER_FILE_BYTES = 2 * 1024 ** 3;

export type AdapterKindName = 'shira' | 'lora';
export type ValuesDtype = 'f16' | 'f32';
export type IndexEncoding = 'struct' | 'rand' | 'rice';

/** One adapted layer as the library stores it (one `adapter_tensors` row). */
export interface TensorRow {
  /** Layer path, e.g. `unet.mid_block.attentions.0.proj_in`; the base weight is `<name>.weight`. */
  name: string;
  /** Shape of the base weight this row changes: [out, in] or [out, in, kh, kw]. */
  shape: number[];
  maskKind: string | null;
  /** `f16+rice`, `f32+struct`, … for SHiRA; `lora-f16` / `lora-f32` for LoRA. */
  encoding: string;
  /** SHiRA: {k, checksum, rand_seed?, rice_k?}; LoRA: {a_shape, b_shape, alpha}. */
  meta: Record<string, unknown>;
  /** SHiRA values [K] (sorted by flat index) or LoRA A. */
  values: Uint8Array;
  /** Rice-coded indices (null when regenerable) or LoRA B. */
  index: Uint8Array | null;
}

export interface AdapterContent {
  kind: AdapterKindName;
  /** SHA-256 of the base weights it was trained on; '' when unknown (e.g. a PEFT import). */
  baseIdentity: string;
  /** The `method` metadata as written (a JSON object string). */
  methodJson: string;
  tensors: TensorRow[];
}

const LAYER_NAME = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;
/** Tensor names: the layer path plus a part (`.values`, `.lora_A.weight`, kohya's `.alpha`). */
const TENSOR_NAME = LAYER_NAME;
const FLOAT_EXPONENT: Partial<Record<Dtype, { size: number; mask: number }>> = {
  F16: { size: 2, mask: 0x7c00 },
  BF16: { size: 2, mask: 0x7f80 },
  F32: { size: 4, mask: 0x7f800000 },
  F64: { size: 8, mask: 0x7ff00000 },
};
const DTYPES: Record<ValuesDtype, Dtype> = { f16: 'F16', f32: 'F32' };
const BYTES: Record<ValuesDtype, number> = { f16: 2, f32: 4 };

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const isDims = (v: unknown, min: number, max: number): v is number[] => Array.isArray(v) && v.length >= min && v.length <= max && v.every((d) => Number.isInteger(d) && d > 0 && d < 2 ** 31);

/** True for files in this format; false for PEFT-layout files the worker must convert first. */
export function isNativeAdapterFile(metadata: Record<string, string>): boolean {
  return metadata.format === ADAPTER_FORMAT;
}

/**
 * Reads and checks one adapter file, ours or a PEFT/kohya one on its way to the worker's converter.
 * Errors are `bad_input` naming the file and what is wrong, in this order: the container (offsets,
 * dtypes, shapes: worker/safetensors.ts), tensor names (module paths only: a name is a layer path,
 * never a file path), values (no NaN or ±Inf: one would poison every fused weight it touches), then
 * our format's own metadata. Nothing from a file that fails a check is quoted back.
 */
export function readAdapterFile(path: string, label = path): AdapterContent {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw badInput(`${label}: the file does not exist or cannot be read.`);
  }
  if (!st.isFile()) throw badInput(`${label}: not a regular file.`);
  if (st.size > MAX_ADAPTER_FILE_BYTES) throw badInput(`${label}: ${(st.size / 2 ** 30).toFixed(1)} GiB is larger than an adapter can be (limit 2 GiB).`);
  let file;
  try {
    file = readSafetensors(path);
  } catch (error) {
    throw badInput(`${label}: not a readable safetensors file (${(error as Error).message.replace(`${path}: `, '')}).`);
  }
  checkTensors(file.tensors, label);
  return parseAdapter(file.metadata, file.tensors, label);
}

/** Names are module paths and float values are finite, for every tensor of an incoming file. */
export function checkTensors(tensors: ReadonlyMap<string, TensorData>, label: string): void {
  for (const [index, [name, t]] of [...tensors].entries()) {
    if (name.length > 300 || !TENSOR_NAME.test(name)) {
      const bad = /[^A-Za-z0-9_.]/.exec(name)?.[0];
      const what = bad === undefined ? 'an empty part' : /^[\x21-\x7e]$/.test(bad) ? `"${bad}"` : 'a control, space or non-ASCII character';
      throw badInput(`${label}: tensor #${index + 1} has a name that is not a dotted module path (it ${name.length > 300 ? 'is over 300 characters' : `contains ${what}`}).`);
    }
    const at = firstNonFinite(t);
    if (at >= 0) throw badInput(`${label}: tensor "${name}" holds NaN or infinite values (the first at element ${at}); the file is damaged or was saved from a diverged training run.`);
  }
}

/** Index of the first NaN/±Inf element of a float tensor (exponent bits all ones), else -1. */
export function firstNonFinite(t: TensorData): number {
  const bytes = FLOAT_EXPONENT[t.dtype];
  if (!bytes) return -1;
  const { size, mask } = bytes;
  const n = t.data.byteLength / size;
  // A view when aligned (fresh reads are), a copy otherwise; little-endian like the file.
  const aligned = t.data.byteOffset % size === 0 ? t.data : t.data.slice();
  if (size === 2) {
    const u = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
    for (let i = 0; i < n; i++) if ((u[i]! & mask) === mask) return i;
  } else {
    const u = new Uint32Array(aligned.buffer, aligned.byteOffset, (n * size) / 4);
    const step = size / 4; // F64: the exponent sits in the high word of each pair
    for (let i = 0; i < n; i++) if ((u[i * step + step - 1]! & mask) === mask) return i;
  }
  return -1;
}

export function parseAdapter(metadata: Record<string, string>, tensors: Map<string, TensorData>, label: string): AdapterContent {
  const fail = (what: string) => badInput(`${label}: ${what}`);
  if (metadata.format !== ADAPTER_FORMAT) throw fail(`not a Shira Studio adapter (its metadata has ${metadata.format === undefined ? 'no format' : `another format${shortWord(metadata.format)}`}).`);
  if (metadata.format_version !== ADAPTER_FORMAT_VERSION) {
    throw fail(`format version${shortWord(metadata.format_version ?? '')} is not supported (this app reads version ${ADAPTER_FORMAT_VERSION}).`);
  }
  const kind = metadata.kind;
  if (kind !== 'shira' && kind !== 'lora') throw fail(`kind must be "shira" or "lora", got ${JSON.stringify(kind ?? null)}.`);
  const baseIdentity = metadata.base_identity ?? '';
  if (baseIdentity !== '' && !/^[0-9a-f]{64}$/.test(baseIdentity)) throw fail('base_identity must be a SHA-256 hex digest.');
  const methodJson = metadata.method ?? '{}';
  let entries: Record<string, Record<string, unknown>>;
  try {
    const method = JSON.parse(methodJson) as unknown;
    if (typeof method !== 'object' || method === null || Array.isArray(method)) throw new Error();
    entries = JSON.parse(metadata.tensors ?? '') as Record<string, Record<string, unknown>>;
    if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) throw new Error();
  } catch {
    throw fail('its method or tensors metadata is not a JSON object.');
  }
  const maskField = (JSON.parse(methodJson) as { mask?: unknown }).mask;
  const mask = typeof maskField === 'string' ? maskField : null;
  const used = new Set<string>();
  const take = (key: string, dtype: Dtype | Dtype[], shape?: number[]): TensorData => {
    const t = tensors.get(key);
    if (!t) throw fail(`tensor "${key}" is missing.`);
    const allowed = Array.isArray(dtype) ? dtype : [dtype];
    if (!allowed.includes(t.dtype)) throw fail(`tensor "${key}" is ${t.dtype}, expected ${allowed.join(' or ')}.`);
    if (shape && JSON.stringify(t.shape) !== JSON.stringify(shape)) throw fail(`tensor "${key}" has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}.`);
    used.add(key);
    return t;
  };
  const rows: TensorRow[] = [];
  for (const name of Object.keys(entries).sort()) {
    const e = entries[name]!;
    if (name.length > 300 || !LAYER_NAME.test(name)) throw fail('a layer name in its tensors metadata is not a dotted module path.');
    if (typeof e !== 'object' || e === null) throw fail(`entry for layer "${name}" is not an object.`);
    const values = e.values;
    if (values !== 'f16' && values !== 'f32') throw fail(`layer "${name}": values must be "f16" or "f32".`);
    if (kind === 'shira') {
      const { shape, k, index, checksum } = e as { shape: unknown; k: unknown; index: unknown; checksum: unknown };
      if (!isDims(shape, 2, 4)) throw fail(`layer "${name}": shape must be 2 to 4 positive dimensions.`);
      if (!Number.isInteger(k) || (k as number) < 1 || (k as number) > numel(shape)) throw fail(`layer "${name}": k must be an integer from 1 to ${numel(shape)}.`);
      if (index !== 'struct' && index !== 'rand' && index !== 'rice') throw fail(`layer "${name}": index must be "struct", "rand" or "rice".`);
      if (typeof checksum !== 'string' || !/^[0-9a-f]{16}$/.test(checksum)) throw fail(`layer "${name}": checksum must be 16 hex digits.`);
      const meta: Record<string, unknown> = { k, checksum };
      if (index === 'rand') {
        if (typeof e.rand_seed !== 'string' || !/^[0-9]{1,20}$/.test(e.rand_seed) || BigInt(e.rand_seed) >= 2n ** 64n) throw fail(`layer "${name}": rand_seed must be a decimal uint64 string.`);
        meta.rand_seed = e.rand_seed;
      }
      if (index === 'rice') {
        if (!Number.isInteger(e.rice_k) || (e.rice_k as number) < 0 || (e.rice_k as number) > 62) throw fail(`layer "${name}": rice_k must be an integer from 0 to 62.`);
        meta.rice_k = e.rice_k;
      }
      const v = take(`${name}.values`, DTYPES[values], [k as number]);
      const idx = index === 'rice' ? take(`${name}.index`, 'U8') : null;
      if (idx && idx.shape[0]! > (k as number) * 16 + 16) throw fail(`layer "${name}": index blob is larger than ${k as number} indices can need.`);
      rows.push({ name, shape, maskKind: mask, encoding: `${values}+${index}`, meta, values: v.data, index: idx?.data ?? null });
    } else {
      const { a_shape: a, b_shape: b, alpha } = e as { a_shape: unknown; b_shape: unknown; alpha: unknown };
      if (!isDims(a, 2, 4) || !isDims(b, 2, 4) || a.length !== b.length || b[1] !== a[0]) throw fail(`layer "${name}": a_shape/b_shape are not a LoRA pair ([r, in, …] and [out, r, …]).`);
      if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw fail(`layer "${name}": alpha must be a finite number.`);
      const A = take(`${name}.lora_A`, DTYPES[values], a);
      const B = take(`${name}.lora_B`, DTYPES[values], b);
      rows.push({ name, shape: [b[0]!, ...a.slice(1)], maskKind: null, encoding: `lora-${values}`, meta: { a_shape: a, b_shape: b, alpha }, values: A.data, index: B.data });
    }
  }
  if (rows.length === 0) throw fail('it has no adapted layers.');
  for (const key of tensors.keys()) if (!used.has(key)) throw fail(`tensor "${key.slice(0, 120)}" does not belong to any layer entry.`);
  return { kind, baseIdentity, methodJson, tensors: rows };
}

/** A metadata word worth quoting (` "kohya"`), or nothing: bytes of a file that is not ours are not echoed. */
function shortWord(value: string): string {
  return /^[A-Za-z0-9_.-]{1,32}$/.test(value) ? ` "${value}"` : '';
}

function valuesDtypeOf(row: TensorRow): ValuesDtype {
  const v = row.encoding.startsWith('lora-') ? row.encoding.slice(5) : row.encoding.split('+')[0];
  if (v !== 'f16' && v !== 'f32') throw badInput(`layer "${row.name}" has an unknown encoding "${row.encoding}".`);
  return v;
}

/** The tensors entry of one row, keys in a fixed order so the canonical file is reproducible. */
function entryOf(row: TensorRow): Record<string, unknown> {
  const values = valuesDtypeOf(row);
  if (row.encoding.startsWith('lora-')) return { a_shape: row.meta.a_shape, b_shape: row.meta.b_shape, alpha: row.meta.alpha, values };
  const index = row.encoding.split('+')[1];
  return {
    shape: row.shape,
    k: row.meta.k,
    values,
    index,
    ...(index === 'rand' ? { rand_seed: row.meta.rand_seed } : {}),
    ...(index === 'rice' ? { rice_k: row.meta.rice_k } : {}),
    checksum: row.meta.checksum,
  };
}

/** Writes the canonical file of `content` (atomic). Same content → same bytes → same SHA-256. */
export function writeAdapterFile(path: string, content: AdapterContent): void {
  const rows = [...content.tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const tensors: [string, TensorData][] = [];
  const entries: Record<string, unknown> = {};
  for (const r of rows) {
    entries[r.name] = entryOf(r);
    const dtype = DTYPES[valuesDtypeOf(r)];
    if (r.encoding.startsWith('lora-')) {
      tensors.push([`${r.name}.lora_A`, { dtype, shape: r.meta.a_shape as number[], data: r.values }]);
      tensors.push([`${r.name}.lora_B`, { dtype, shape: r.meta.b_shape as number[], data: r.index ?? new Uint8Array() }]);
    } else {
      if (r.index) tensors.push([`${r.name}.index`, { dtype: 'U8', shape: [r.index.byteLength], data: r.index }]);
      tensors.push([`${r.name}.values`, { dtype, shape: [r.values.byteLength / BYTES[valuesDtypeOf(r)]], data: r.values }]);
    }
  }
  tensors.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  writeSafetensors(path, tensors, {
    format: ADAPTER_FORMAT,
    format_version: ADAPTER_FORMAT_VERSION,
    kind: content.kind,
    base_identity: content.baseIdentity,
    method: content.methodJson,
    tensors: JSON.stringify(entries),
  });
}

/**
 * Identity of what an adapter does, independent of how it is encoded: per layer (sorted) its name,
 * base shape, the index checksum (over the decoded indices, so implicit and Rice-coded indices of
 * one mask agree) or the LoRA shapes and alpha, and the value bytes.
 */
export function contentHash(content: Pick<AdapterContent, 'kind' | 'tensors'>): string {
  const h = createHash('sha256');
  h.update(`${content.kind}\n`);
  for (const r of [...content.tensors].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const lora = r.encoding.startsWith('lora-');
    const describe = lora ? { a: r.meta.a_shape, b: r.meta.b_shape, alpha: r.meta.alpha } : { k: r.meta.k, checksum: r.meta.checksum };
    h.update(`${r.name}\n${JSON.stringify(r.shape)}\n${valuesDtypeOf(r)}\n${JSON.stringify(describe)}\n`);
    h.update(r.values);
    if (lora && r.index) h.update(r.index);
  }
  return h.digest('hex');
}

export function fileSha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Civitai/A1111's short hash: the first 10 hex digits of the whole file's SHA-256. */
export function autoV2(sha256: string): string {
  return sha256.slice(0, 10).toUpperCase();
}

/** Trained values in the adapter (SHiRA: Σk; LoRA: Σ A + B elements). */
export function trainableCount(content: Pick<AdapterContent, 'tensors'>): number {
  let n = 0;
  for (const r of content.tensors) {
    if (r.encoding.startsWith('lora-')) n += numel(r.meta.a_shape as number[]) + numel(r.meta.b_shape as number[]);
    else n += r.meta.k as number;
  }
  return n;
}

/** Stored bytes (values + indices) per trained value; PEFT's SHiRA layout needs 12. */
export function bytesPerValue(content: Pick<AdapterContent, 'tensors'>): number {
  let bytes = 0;
  for (const r of content.tensors) bytes += r.values.byteLength + (r.index?.byteLength ?? 0);
  const n = trainableCount(content);
  return n ? bytes / n : 0;
}

/**
 * Checks every layer against the base model's weights (name → shape, from its safetensors header):
 * an adapter for another architecture is refused before anything is stored.
 */
export function checkAgainstBase(content: AdapterContent, baseShapes: ReadonlyMap<string, readonly number[]>, label: string, baseName: string): void {
  for (const r of content.tensors) {
    const shape = baseShapes.get(`${r.name}.weight`);
    if (!shape) throw badInput(`${label}: layer "${r.name}" does not exist in base model "${baseName}".`);
    if (JSON.stringify(shape) !== JSON.stringify(r.shape)) {
      throw badInput(`${label}: layer "${r.name}" has shape ${JSON.stringify(r.shape)} but "${baseName}" has ${JSON.stringify(shape)}.`);
    }
  }
}

/** Weight shapes of a base model from its safetensors header (no tensor data is read). */
export function baseWeightShapes(weightsPath: string): Map<string, number[]> {
  let header;
  try {
    header = readSafetensorsHeader(weightsPath);
  } catch (error) {
    throw badInput(`The base model's weights file is not readable: ${(error as Error).message}.`);
  }
  return new Map([...header.tensors].map(([name, t]) => [name, t.shape]));
}
