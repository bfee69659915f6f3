// Every research command works from a fresh clone: the data it reads is built first, or the error names the
// command that builds it (tools/data.ts; `npm run eval:base` used to end in a bare ENOENT).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { writeSafetensors } from '../../src/main/core/io/safetensors';
import { ensureClipart, ensureStyleSet } from '../../tools/data';
import { tempDir, writeTree } from '../unit/helpers';

const ROOT = resolve(__dirname, '../..');
const TOOLS_JS = join(ROOT, 'out', 'main', 'tools.js');

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function temp(prefix: string): string {
  const dir = tempDir(prefix);
  cleanups.push(dir.cleanup);
  return dir.path;
}

describe('tool data on first use', () => {
  it('builds the clipart set when it is missing, once', async () => {
    const root = temp('shira-clipart-src-');
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 6; i++) {
      files[`animals/cat_${i}.png`] = await sharp({ create: { width: 40 + i * 7, height: 30, channels: 3, background: { r: 40 * i, g: 90, b: 200 - 30 * i } } })
        .png()
        .toBuffer();
    }
    writeTree(root, files);
    const dataDir = join(temp('shira-clipart-'), 'clipart-16');
    const lines: string[] = [];
    await ensureClipart({ dataDir, resolution: 16, root, log: (l) => lines.push(l) });
    expect(existsSync(join(dataDir, 'train.safetensors')) && existsSync(join(dataDir, 'heldout.safetensors'))).toBe(true);
    expect(lines[0]).toMatch(/building it first .*npm run data:clipart -- --resolution 16/);
    const built = statSync(join(dataDir, 'train.safetensors')).mtimeMs;
    await ensureClipart({ dataDir, resolution: 16, root: '/nonexistent', log: (l) => lines.push(l) });
    expect(statSync(join(dataDir, 'train.safetensors')).mtimeMs).toBe(built);
  });

  it('names what to install and run when it cannot build, and never builds into a folder the user named', async () => {
    const dataDir = join(temp('shira-clipart-'), 'clipart-64');
    const log = () => {};
    await expect(ensureClipart({ dataDir, resolution: 64, root: '/nonexistent/openclipart', log })).rejects.toThrow(/apt-get install openclipart-png\), then run `npm run data:clipart`/);
    await expect(ensureClipart({ dataDir, resolution: 64, explicit: true, log })).rejects.toThrow(`npm run data:clipart -- --out-dir ${dataDir}`);
  });

  it('cuts a missing style set from the held-out clipart', async () => {
    const dir = temp('shira-styles-');
    mkdirSync(join(dir, 'clipart-64'));
    const images = (n: number) => ({ dtype: 'U8' as const, shape: [n, 8, 8, 3], data: new Uint8Array(n * 8 * 8 * 3).fill(200) });
    const captions = (n: number) => JSON.stringify(Array.from({ length: n }, (_, i) => `shape ${i}`));
    writeSafetensors(join(dir, 'clipart-64', 'train.safetensors'), [['images', images(2)]], { captions: captions(2) });
    writeSafetensors(join(dir, 'clipart-64', 'heldout.safetensors'), [['images', images(60)]], { captions: captions(60) });
    const file = join(dir, 'styles', 'ink.safetensors');
    await ensureStyleSet({ style: 'ink', file, heldout: join(dir, 'clipart-64', 'heldout.safetensors'), root: '/nonexistent', log: () => {} });
    expect(existsSync(file)).toBe(true);
  });
});

describe.runIf(existsSync(TOOLS_JS))('the command line (out/main/tools.js)', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [TOOLS_JS, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

  it('lists its commands when given none, and fails', () => {
    const r = run();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('tools pack --folder DIR');
    expect(r.stderr).toContain('tools clipart [--root DIR]');
  });

  it('eval-base on a missing data folder names the command that builds it', () => {
    const missing = join(temp('shira-eval-'), 'nothing-here');
    const r = run('eval-base', '--data', missing);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`npm run data:clipart -- --out-dir ${missing}`);
  });
});
