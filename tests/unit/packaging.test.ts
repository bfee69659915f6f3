// The installer's configuration (electron-builder.json), checked as far as this machine allows:
// electron-builder's own schema, the files it names existing after `npm run build`, and the staged
// worker finding its libtorch through its $ORIGIN-relative RPATH in the installed folder layout.
// Building the installers themselves needs downloads (Electron, AppImage/NSIS/dmg tools): docs/desktop.md.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { findBuiltinModels } from '../../src/main/core/models/builtin';
import { appLayout } from '../../src/main/core/runtime/layout';
import { tempDir } from './helpers';

const ROOT = resolve(__dirname, '../..');
const config = JSON.parse(readFileSync(join(ROOT, 'electron-builder.json'), 'utf8'));
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

type Stage = {
  STAGE_DIR: string;
  isBundled(name: string, path: string): boolean;
  linkedLibraries(binary: string, env?: NodeJS.ProcessEnv): { name: string; path: string }[];
  stageNative(out: string, root?: string): { workers: { kind: string; file: string }[]; libs: string[] };
};
const stage = (): Promise<Stage> => import(pathToFileURL(join(ROOT, 'scripts', 'stage-native.mjs')).href);

describe('electron-builder configuration', () => {
  it("passes electron-builder's own schema, and a misspelt option does not", async () => {
    const require = createRequire(join(ROOT, 'package.json'));
    const { validateConfiguration } = require('app-builder-lib/out/util/config/config');
    const { DebugLogger } = require('builder-util');
    await expect(validateConfiguration(structuredClone(config), new DebugLogger(false))).resolves.toBeUndefined();
    await expect(validateConfiguration({ ...structuredClone(config), nsis: { oneClik: false } }, new DebugLogger(false))).rejects.toThrow(/configuration\.nsis should be/);
  });

  it('builds the installers asked for, from the built app, with native files outside the asar', () => {
    expect(config.linux.target).toEqual(['AppImage', 'deb']);
    expect(config.mac.target).toEqual(['dmg']);
    expect(config.win.target).toEqual(['nsis']);
    expect(config.asar).toBe(true);
    expect(config.asarUnpack).toContain('**/*.node');
    // Our own per-ABI better-sqlite3 replaces electron-builder's rebuild, which would download Electron's headers.
    expect(config.npmRebuild).toBe(false);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.scripts.dist).toMatch(/setup\.mjs --for dist && node scripts\/stage-native\.mjs && electron-builder --config electron-builder\.json/);
    expect(pkg.devDependencies['electron-builder']).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('every file it packs exists after the build, where the app looks for it', async () => {
    const positive = config.files.filter((p: string) => !p.startsWith('!'));
    expect(positive).toEqual(['package.json', 'out/main/**', 'out/preload/**', 'out/renderer/**', 'electron-native/abi*/better_sqlite3.node']);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    for (const file of [pkg.main, 'out/main/core-host.js', 'out/main/server.js', 'out/preload/index.cjs', 'out/renderer/index.html']) {
      expect(existsSync(join(ROOT, file)), file).toBe(true);
    }
    // The Electron better-sqlite3 is built by setup (scripts/electron-native.mjs) at the path the pattern names.
    const { electronSqlitePath } = await import(pathToFileURL(join(ROOT, 'scripts', 'electron-native.mjs')).href);
    expect(electronSqlitePath('', '150')).toMatch(/^electron-native[/\\]abi150[/\\]better_sqlite3\.node$/);

    const [models, native] = config.extraResources as { from: string; to: string }[];
    expect(models).toEqual({ from: 'resources/models', to: 'models' });
    // What the core registers at start, read from the folder the installer copies.
    const builtin = findBuiltinModels(join(ROOT, dirname(models.from)));
    expect(builtin.length).toBeGreaterThan(0);
    for (const m of builtin) expect(m.weightsPath.startsWith(join(ROOT, models.from))).toBe(true);
    expect(native).toEqual({ from: (await stage()).STAGE_DIR.split('\\').join('/'), to: 'native' });
    // Installed, the app reads them from <resources>/models and <resources>/native (runtime/layout.ts).
    const layout = appLayout('/opt/Shira Studio/resources/app.asar', {}, 'linux');
    expect(layout.resourcesDir).toBe('/opt/Shira Studio/resources');
    expect(layout.workers.cpu).toBe('/opt/Shira Studio/resources/native/cpu/shira-worker');
  });
});

describe('the staged native worker', () => {
  it('ships libtorch and the wheel libraries, never the system or the NVIDIA driver', async () => {
    const { isBundled } = await stage();
    expect(isBundled('libtorch_cpu.so.1.13', '/lib/x86_64-linux-gnu/libtorch_cpu.so.1.13')).toBe(true);
    expect(isBundled('libc10.so', '/opt/libtorch/lib/libc10.so')).toBe(true);
    expect(isBundled('libcublas.so.12', '/home/a/.venv/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12')).toBe(true);
    expect(isBundled('libgomp-a34b3233.so.1', '/home/a/.venv/lib/python3.11/site-packages/torch/lib/libgomp-a34b3233.so.1')).toBe(true);
    expect(isBundled('libopenblas.so.0', '/usr/lib/x86_64-linux-gnu/libopenblas.so.0')).toBe(false);
    expect(isBundled('libstdc++.so.6', '/lib/x86_64-linux-gnu/libstdc++.so.6')).toBe(false);
    expect(isBundled('libcuda.so.1', '/usr/lib/x86_64-linux-gnu/libcuda.so.1')).toBe(false);
    expect(isBundled('libcuda.so.1', '/opt/weird/libcuda.so.1')).toBe(false);
  });

  it.skipIf(process.platform !== 'linux')('resolves its libtorch from the installed folder layout through RPATH $ORIGIN/../lib, and runs there', async () => {
    const { stageNative, linkedLibraries } = await stage();
    const d = tempDir('shira-stage-');
    cleanups.push(d.cleanup);
    // <resources>/native as electron-builder lays it out.
    const resources = join(d.path, 'Shira Studio', 'resources');
    const { workers, libs } = stageNative(join(resources, 'native'));
    const worker = appLayout(join(resources, 'app.asar'), {}, 'linux').workers.cpu;
    expect(workers.map((w) => w.file)).toContain(worker);
    expect(libs.some((l) => /^libtorch/.test(l))).toBe(true);

    const rpath = spawnSync('patchelf', ['--print-rpath', worker], { encoding: 'utf8' }).stdout.trim();
    expect(rpath).toBe('$ORIGIN/../lib');
    const env = { ...process.env };
    delete env.LD_LIBRARY_PATH;
    const linked = linkedLibraries(worker, env);
    for (const name of libs) {
      expect(linked.find((l) => l.name === name)?.path, name).toBe(`${join(resources, 'native', 'cpu')}/../lib/${name}`);
    }
    // libtorch is found nowhere else: the worker's own libtorch libraries all come from the package.
    for (const l of linked.filter((x) => /^lib(torch|c10)/.test(x.name))) expect(l.path.startsWith(join(resources, 'native'))).toBe(true);
    const info = spawnSync(worker, ['info'], { encoding: 'utf8', env: { ...env, OMP_NUM_THREADS: '1' } });
    expect(info.status).toBe(0);
    expect(JSON.parse(info.stdout.trim().split('\n').pop()!)).toMatchObject({ ok: true, result: { version: expect.any(String) } });
  });
});
