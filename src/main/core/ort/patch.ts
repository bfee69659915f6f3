// Sparse patches: a SHiRA adapter as explicit (tensor name, flat indices, values), the form an inference engine
// that knows nothing about masks can apply — W[idx_k] = W0[idx_k] + α·v_k on a weight it feeds from its own
// Float32Array. Indices are flat into the weight as stored ([out, in] or [out, in, kh, kw]), which is the same as
// i·n + j in the adapter's [out, numel/out] view (docs/adapter-format.md).
//
// File (`*.shira-patch.safetensors`): tensors "<param>.indices" I32 [K] (sorted, unique) and "<param>.values" F32 [K]
// for each patched parameter ("unet.…to_q.weight"); __metadata__: format "shira-sparse-patch", format_version "1",
// tensors (JSON: param -> {shape}), base_identity (the base weights' SHA-256 or ""), plus anything the writer adds.
//
// A copy kept on purpose (ONNX deployment). Blending mirrors the worker's mix_apply (adapter/mix, which names this
// file back) to the bit: one adapter adds fp32(v·α); several add Σ fp32(v·α) accumulated in fp32 in mix order over
// the sorted union of their indices; W = fp32(W0 + add). Restoring copies W0 back (never subtracts), like mix_clear,
// so W0 comes back exactly. patchFromPeft reads the folder the worker's peft_export (model_io/peft_export) writes.
// tests/unit/ort.test.ts blends the same adapters on both sides and compares the weights.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type TensorData } from '../io/safetensors';

export const PATCH_FORMAT = 'shira-sparse-patch';

export interface PatchTensor {
  shape: number[];
  /** Sorted, unique flat indices. */
  indices: Int32Array;
  values: Float32Array;
}

export interface SparsePatch {
  tensors: Map<string, PatchTensor>;
  metadata: Record<string, string>;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function bytesOf(a: Int32Array | Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Checks one tensor's invariants; errors name the parameter. */
export function checkPatchTensor(name: string, t: PatchTensor): void {
  if (t.indices.length !== t.values.length) throw new Error(`patch '${name}': ${t.indices.length} indices but ${t.values.length} values`);
  const n = numel(t.shape);
  for (let k = 0; k < t.indices.length; k++) {
    const i = t.indices[k]!;
    if (i < 0 || i >= n) throw new Error(`patch '${name}': index ${i} is outside the tensor's ${n} elements`);
    if (k > 0 && i <= t.indices[k - 1]!) throw new Error(`patch '${name}': indices must be sorted and unique (position ${k})`);
  }
}

export function writePatch(path: string, patch: SparsePatch): void {
  const entries: [string, TensorData][] = [];
  const info: Record<string, { shape: number[] }> = {};
  for (const name of [...patch.tensors.keys()].sort()) {
    const t = patch.tensors.get(name)!;
    checkPatchTensor(name, t);
    info[name] = { shape: t.shape };
    entries.push([`${name}.indices`, { dtype: 'I32', shape: [t.indices.length], data: bytesOf(t.indices) }]);
    entries.push([`${name}.values`, { dtype: 'F32', shape: [t.values.length], data: bytesOf(t.values) }]);
  }
  writeSafetensors(path, entries, { ...patch.metadata, format: PATCH_FORMAT, format_version: '1', tensors: JSON.stringify(info) });
}

export function readPatch(path: string): SparsePatch {
  const file = readSafetensors(path);
  if (file.metadata.format !== PATCH_FORMAT) throw new Error(`${path}: not a sparse patch (format is '${file.metadata.format ?? ''}', want '${PATCH_FORMAT}')`);
  let info: Record<string, { shape: number[] }>;
  try {
    info = JSON.parse(file.metadata.tensors ?? '');
  } catch {
    throw new Error(`${path}: metadata 'tensors' is not JSON`);
  }
  const tensors = new Map<string, PatchTensor>();
  for (const [name, { shape }] of Object.entries(info)) {
    const idx = file.tensors.get(`${name}.indices`);
    const val = file.tensors.get(`${name}.values`);
    if (!idx || !val || idx.dtype !== 'I32' || val.dtype !== 'F32') throw new Error(`${path}: '${name}' needs I32 '.indices' and F32 '.values'`);
    const t = { shape, indices: new Int32Array(idx.data.slice().buffer), values: new Float32Array(val.data.slice().buffer) };
    checkPatchTensor(name, t);
    tensors.set(name, t);
  }
  const known = new Set([...tensors.keys()].flatMap((n) => [`${n}.indices`, `${n}.values`]));
  const extra = [...file.tensors.keys()].find((k) => !known.has(k));
  if (extra) throw new Error(`${path}: tensor '${extra}' is not described by the 'tensors' metadata`);
  const { format: _f, format_version: _v, tensors: _t, ...metadata } = file.metadata;
  return { tensors, metadata };
}

/**
 * A PEFT SHiRA export (what the worker's `adapter_export` writes: `<dir>/adapter_model.safetensors` for the UNet,
 * `<dir>/text_encoder/adapter_model.safetensors` for the text encoder; "base_model.model.<module>.shira_weight" F32 [K]
 * and ".shira_indices" I32 [2, K] rows/cols) -> a patch. `shapeOf` gives each parameter's shape (from the base model).
 */
export function patchFromPeft(dir: string, shapeOf: (param: string) => number[] | undefined, metadata: Record<string, string> = {}): SparsePatch {
  const tensors = new Map<string, PatchTensor>();
  for (const [sub, prefix] of [
    ['', 'unet.'],
    ['text_encoder', 'text_encoder.'],
  ] as const) {
    const file = join(dir, sub, 'adapter_model.safetensors');
    if (!existsSync(file)) continue;
    const st = readSafetensors(file);
    for (const [key, w] of st.tensors) {
      if (!key.endsWith('.shira_weight')) continue;
      const base = key.slice(0, -'.shira_weight'.length);
      const module = base.replace(/^base_model\.model\./, '');
      const param = `${prefix}${module}.weight`;
      const shape = shapeOf(param);
      if (!shape) throw new Error(`${file}: layer '${module}' is not a parameter of the base model ('${param}')`);
      const ij = st.tensors.get(`${base}.shira_indices`);
      if (!ij || ij.dtype !== 'I32' || ij.shape.length !== 2 || ij.shape[0] !== 2 || w.dtype !== 'F32' || ij.shape[1] !== w.shape[0]) {
        throw new Error(`${file}: '${module}' needs F32 shira_weight [K] and I32 shira_indices [2, K]`);
      }
      const K = w.shape[0]!;
      const rc = new Int32Array(ij.data.slice().buffer);
      const vals = new Float32Array(w.data.slice().buffer);
      const n = numel(shape) / shape[0]!;
      const order = Array.from({ length: K }, (_, k) => k);
      const flat = order.map((k) => rc[k]! * n + rc[K + k]!);
      order.sort((a, b) => flat[a]! - flat[b]!);
      const t: PatchTensor = { shape, indices: Int32Array.from(order, (k) => flat[k]!), values: Float32Array.from(order, (k) => vals[k]!) };
      checkPatchTensor(param, t);
      tensors.set(param, t);
    }
  }
  if (!tensors.size) throw new Error(`${dir}: no SHiRA tensors found (expected adapter_model.safetensors with shira_weight/shira_indices)`);
  const config = join(dir, 'adapter_config.json');
  const extra: Record<string, string> = existsSync(config) ? { peft_config: readFileSync(config, 'utf8') } : {};
  return { tensors, metadata: { ...extra, ...metadata } };
}

export interface MixItem {
  patch: SparsePatch;
  alpha: number;
}

/** Per tensor: the sorted union of the mix's indices and Σ α·v on it, with the worker's fp32 arithmetic. Mirrors native mix_apply's SHiRA part. */
export function blendDeltas(mix: readonly MixItem[]): Map<string, { indices: Int32Array; add: Float32Array }> {
  const f = Math.fround;
  const parts = new Map<string, { t: PatchTensor; alpha: number }[]>();
  for (const { patch, alpha } of mix) {
    for (const [name, t] of patch.tensors) {
      const list = parts.get(name) ?? [];
      list.push({ t, alpha: f(alpha) });
      parts.set(name, list);
    }
  }
  const out = new Map<string, { indices: Int32Array; add: Float32Array }>();
  for (const [name, list] of parts) {
    const shape = list[0]!.t.shape;
    for (const p of list) if (p.t.shape.join() !== shape.join()) throw new Error(`mix: '${name}' has shape [${p.t.shape}] in one patch and [${shape}] in another`);
    if (list.length === 1) {
      const { t, alpha } = list[0]!;
      const add = new Float32Array(t.values.length);
      for (let k = 0; k < add.length; k++) add[k] = t.values[k]! * alpha; // the store rounds: fp32(v·α)
      out.set(name, { indices: t.indices, add });
      continue;
    }
    // k-way merge of sorted lists; acc[u] += v·α in mix order (shira_union_sum).
    const all = new Int32Array(list.reduce((a, p) => a + p.t.indices.length, 0));
    let o = 0;
    for (const p of list) all.set(p.t.indices, (o += p.t.indices.length) - p.t.indices.length);
    all.sort();
    let u = 0;
    for (let k = 0; k < all.length; k++) if (k === 0 || all[k] !== all[k - 1]) all[u++] = all[k]!;
    const indices = all.slice(0, u);
    const add = new Float32Array(u);
    for (const { t, alpha } of list) {
      let j = 0;
      for (let k = 0; k < t.indices.length; k++) {
        while (indices[j] !== t.indices[k]) j++;
        add[j] = f(add[j]! + f(t.values[k]! * alpha));
      }
    }
    out.set(name, { indices, add });
  }
  return out;
}
