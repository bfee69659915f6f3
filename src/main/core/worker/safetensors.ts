// safetensors, the one tensor container on both sides of the worker boundary:
//   u64 LE header length N | N bytes of JSON header (space-padded to 8) | raw little-endian data.
// Header: { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: { string: string } }.
import { closeSync, openSync, readSync, renameSync, writeSync } from 'node:fs';

export type Dtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8' | 'I8' | 'I16' | 'F64';
const DTYPE_BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1 };
/** Headers above this are refused: a corrupt length must not make us allocate gigabytes. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

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

export function readSafetensors(path: string): SafetensorsFile {
  const fd = openSync(path, 'r');
  try {
    const len = Buffer.alloc(8);
    if (readSync(fd, len, 0, 8, 0) !== 8) throw new Error(`${path}: not a safetensors file (shorter than 8 bytes)`);
    const headerLen = Number(len.readBigUInt64LE());
    if (headerLen <= 0 || headerLen > MAX_HEADER_BYTES) throw new Error(`${path}: not a safetensors file (header length ${headerLen})`);
    const headerBuf = Buffer.alloc(headerLen);
    if (readSync(fd, headerBuf, 0, headerLen, 8) !== headerLen) throw new Error(`${path}: truncated header`);
    let header: Record<string, { dtype: Dtype; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      throw new Error(`${path}: header is not JSON`);
    }
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    const tensors = new Map<string, TensorData>();
    for (const [name, spec] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const { dtype, shape, data_offsets } = spec as { dtype: Dtype; shape: number[]; data_offsets: [number, number] };
      if (!(dtype in DTYPE_BYTES)) throw new Error(`${path}: tensor ${name} has unknown dtype ${dtype}`);
      const [begin, end] = data_offsets;
      if (end - begin !== elementCount(shape) * DTYPE_BYTES[dtype]) throw new Error(`${path}: tensor ${name} size does not match its shape`);
      const data = new Uint8Array(end - begin);
      if (readSync(fd, data, 0, data.length, 8 + headerLen + begin) !== data.length) throw new Error(`${path}: tensor ${name} is truncated`);
      tensors.set(name, { dtype, shape, data });
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}
