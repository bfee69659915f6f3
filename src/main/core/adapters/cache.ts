// Adapter files exist only as a content-addressed cache of the rows (<data>/cache/adapters/<sha256>.safetensors):
// what the worker reads and what a download hands out. A file is written under a temp name carrying the
// writer's pid, then renamed to its hash, so a half-written file never has a cache name (leftovers.ts removes
// the temps of a killed process).
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileSha256, writeAdapterFile, type AdapterContent } from './format';

export const adapterCacheDir = (dataDir: string) => join(dataDir, 'cache', 'adapters');

export class AdapterFileCache {
  constructor(readonly dir: string) {}

  path(sha256: string): string {
    return join(this.dir, `${sha256}.safetensors`);
  }

  write(content: AdapterContent): { path: string; sha256: string } {
    mkdirSync(this.dir, { recursive: true });
    const tmp = join(this.dir, `incoming-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.safetensors`);
    writeAdapterFile(tmp, content);
    const sha256 = fileSha256(tmp);
    const path = this.path(sha256);
    renameSync(tmp, path);
    return { path, sha256 };
  }

  remove(sha256: string): void {
    rmSync(this.path(sha256), { force: true });
  }
}
