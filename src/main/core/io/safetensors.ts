// safetensors, the one tensor container on both sides of the worker boundary:
//   u64 LE header length N | N bytes of JSON header (space-padded to 8) | raw little-endian data.
// Header: { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: { string: string } }.
// The native worker reads and writes the same layout (its safetensors_load / safetensors_save); every TypeScript
// reader of tensors uses this one: adapter files, packed datasets, sample images, the ONNX path, the tools.
import { closeSync, constants, fstatSync, openSync, readSync, renameSync, writeSync } from 'node:fs';

export type Dtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8' | 'I8' | 'I16' | 'F64';
const DTYPE_BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1 };
/** Headers above this are refused: a corrupt length must not make us allocate gigabytes. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** O_NONBLOCK: a FIFO handed over as a file opens at once (and is then refused) instead of blocking the thread. */
const READ_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

export interface TensorData {
  dtype: Dtype;
  shape: number[];
  data: Uint8Array;
}

export interface SafetensorsFile {
  tensors: Map<string, TensorData>;
  metadata: Record<string, string>;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Writes atomically: a temp name in the same folder, then rename, so readers never see half a file. */
export function writeSafetensors(path: string, tensors: Iterable<[string, TensorData]>, metadata: Record<string, string> = {}): void {
  const entries = [...tensors];
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) throw new Error(`tensor ${name}: ${t.data.byteLength} bytes but ${t.dtype}${JSON.stringify(t.shape)} needs ${expected}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    for (const [, t] of entries) writeSync(fd, t.data);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * A tensor name as an error message may show it: a module-path-like name is quoted, anything else
 * is named by its position, so a file that is not what it claims never has its bytes echoed.
 */
export function tensorLabel(name: string, index: number): string {
  return /^[A-Za-z0-9_.:-]{1,200}$/.test(name) ? `tensor "${name}"` : `tensor #${index + 1}`;
}

interface HeaderEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Reads and checks the header the way the reference implementation does: a JSON object whose
 * metadata is a string map and whose entries have a known dtype, a shape of safe integers and
 * data_offsets [begin ≤ end] matching it; sorted by offset, the tensors tile the data section
 * exactly (no overlap, no gap, nothing past the end). Errors never quote the file's bytes.
 */
function readHeader(fd: number, path: string): { entries: HeaderEntry[]; metadata: Record<string, string>; dataStart: number } {
  const fail = (what: string) => new Error(`${path}: ${what}`);
  const st = fstatSync(fd);
  if (!st.isFile()) throw fail('not a regular file');
  const len = Buffer.alloc(8);
  if (st.size < 8 || readSync(fd, len, 0, 8, 0) !== 8) throw fail('not a safetensors file (shorter than 8 bytes)');
  const headerLen = len.readBigUInt64LE();
  // The length is the file's first 8 bytes: never printed, since for a file that is not a
  // safetensors (a text file renamed, say) those are its first 8 characters.
  if (headerLen === 0n || headerLen > BigInt(MAX_HEADER_BYTES) || headerLen > BigInt(st.size - 8)) throw fail('not a safetensors file (its first 8 bytes are not a plausible header length)');
  const n = Number(headerLen);
  const headerBuf = Buffer.alloc(n);
  if (readSync(fd, headerBuf, 0, n, 8) !== n) throw fail('truncated header');
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch {
    throw fail('not a safetensors file (its header is not JSON)');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw fail('not a safetensors file (its header is not a JSON object)');
  const raw = header as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  if (Object.hasOwn(raw, '__metadata__')) {
    const m = raw.__metadata__;
    if (typeof m !== 'object' || m === null || Array.isArray(m) || !Object.values(m).every((x) => typeof x === 'string')) throw fail('its __metadata__ is not a map of strings');
    Object.assign(metadata, m);
  }
  const entries: HeaderEntry[] = [];
  for (const [index, [name, spec]] of Object.entries(raw).entries()) {
    if (name === '__metadata__') continue;
    const label = tensorLabel(name, index);
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw fail(`${label} has no dtype/shape/data_offsets entry`);
    const { dtype, shape, data_offsets: offsets } = spec as Record<string, unknown>;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      throw fail(`${label} has an unknown dtype${typeof dtype === 'string' && /^[A-Za-z0-9]{1,8}$/.test(dtype) ? ` ${dtype}` : ''}`);
    }
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) throw fail(`${label} has a malformed shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) throw fail(`${label} has malformed data_offsets`);
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw fail(`${label} has out-of-order data_offsets (it ends before it begins)`);
    const bytes = elementCount(shape as number[]) * DTYPE_BYTES[dtype as Dtype];
    if (end - begin !== bytes) throw fail(`${label} size does not match its shape (${end - begin} bytes for ${dtype}${JSON.stringify(shape)})`);
    entries.push({ name, dtype: dtype as Dtype, shape: shape as number[], begin, end });
  }
  const dataStart = 8 + n;
  const dataBytes = st.size - dataStart;
  const byOffset = entries.map((e, i) => ({ e, i })).sort((a, b) => a.e.begin - b.e.begin || a.e.end - b.e.end);
  let covered = 0;
  for (const [k, { e }] of byOffset.entries()) {
    const at = (x: { e: HeaderEntry }) => tensorLabel(x.e.name, entries.indexOf(x.e));
    if (e.begin < covered) throw fail(`${at(byOffset[k]!)} overlaps ${at(byOffset[k - 1]!)} (their data_offsets share bytes)`);
    if (e.begin > covered) throw fail(`${e.begin - covered} bytes before ${at(byOffset[k]!)} belong to no tensor`);
    covered = e.end;
  }
  if (covered > dataBytes) throw fail(`truncated: the tensors need ${covered} bytes of data, the file has ${dataBytes}`);
  if (covered < dataBytes) throw fail(`${dataBytes - covered} bytes after the last tensor belong to no tensor`);
  return { entries, metadata, dataStart };
}

/** Header only (names, dtypes, shapes, metadata), for files too large to read whole (base models). */
export function readSafetensorsHeader(path: string): { tensors: Map<string, { dtype: Dtype; shape: number[] }>; metadata: Record<string, string> } {
  const fd = openSync(path, READ_FLAGS);
  try {
    const { entries, metadata } = readHeader(fd, path);
    return { tensors: new Map(entries.map((e) => [e.name, { dtype: e.dtype, shape: e.shape }])), metadata };
  } finally {
    closeSync(fd);
  }
}

export function readSafetensors(path: string): SafetensorsFile {
  const fd = openSync(path, READ_FLAGS);
  try {
    const { entries, metadata, dataStart } = readHeader(fd, path);
    const tensors = new Map<string, TensorData>();
    for (const [index, e] of entries.entries()) {
      const data = new Uint8Array(e.end - e.begin);
      if (readSync(fd, data, 0, data.length, dataStart + e.begin) !== data.length) throw new Error(`${path}: ${tensorLabel(e.name, index)} is truncated`);
      tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}
