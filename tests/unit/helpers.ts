import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { Core, type CoreOptions } from '../../src/main/core/core';
import type { InputOf, MethodName, ResultOf } from '../../src/shared/api';
import { ApiCallError } from '../../src/shared/errors';
import { pngChunk } from '../../src/main/core/generate/png-text';

export function tempDir(prefix = 'shira-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A core on a real SQLite file built from the real migrations, in a throwaway data dir. */
export function makeCore(options: Partial<CoreOptions> = {}): { core: Core; dataDir: string; call: Caller; cleanup: () => Promise<void> } {
  const dir = tempDir('shira-core-');
  const core = new Core({ dataDir: dir.path, host: 'test', ...options });
  const call: Caller = async (method, input) => {
    const outcome = await core.registry.dispatch(method, input, { client: 'test' });
    if (!outcome.ok) throw new ApiCallError(outcome.error);
    return outcome.value as never;
  };
  return {
    core,
    dataDir: dir.path,
    call,
    cleanup: async () => {
      await core.close();
      dir.cleanup();
    },
  };
}

export type Caller = <M extends MethodName>(method: M, input: InputOf<M>) => Promise<ResultOf<M>>;

export async function solidImage(width: number, height: number, format: 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff' | 'avif', colour = { r: 200, g: 40, b: 90 }): Promise<Buffer> {
  const img = sharp({ create: { width, height, channels: 3, background: colour } });
  return img.toFormat(format).toBuffer();
}

/** Writes `files` (relative path → bytes or text) under `root`. */
export function writeTree(root: string, files: Record<string, Buffer | string>): void {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(root, rel);
    mkdirp(path);
    writeFileSync(path, content);
  }
}

function mkdirp(file: string): void {
  mkdirSync(join(file, '..'), { recursive: true });
}

/**
 * A tiny file whose valid PNG header claims width×height pixels: a decompression bomb in
 * miniature. The pixel limit must reject it from the header alone.
 */
export function pngClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc(width + 1))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}
