// Native modules matched to the runtime that loads them, and the start-up self-check.
//
// Electron's binary cannot be downloaded here, so the Electron core host (out/main/core-host.js) runs in
// plain Node posing as Electron's utility process: `process.versions.electron` set and a parentPort that
// writes to stdout. Its ABI is then Node's (115), which is the point: the host must load the binary in
// electron-native/abi<N>/ that matches the runtime it is in, never node_modules' copy, and say plainly
// when that binary is missing or built for another ABI. Broken binaries are real (native-fakes.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { appLayout, currentRuntime, sqliteBinding } from '../../src/main/core/runtime/layout';
import { canStart, checkModules, classifyLoadError, fixFor, systemLoaders, type CheckContext, type ModuleLoaders } from '../../src/main/core/runtime/native-check';
import { systemProbe } from '../../src/main/core/worker/select';
import type { NativeReport } from '../../src/shared/api';
import { makeCore, tempDir } from './helpers';
import { addonBuiltForAbi, binariesMissingALibrary, fakeWorker, hasCc } from './native-fakes';

const ROOT = resolve(__dirname, '../..');
const NODE_BUILD = join(ROOT, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node');
const ABI = process.versions.modules;
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(prefix: string): string {
  const d = tempDir(prefix);
  cleanups.push(d.cleanup);
  return d.path;
}

const electronDev: CheckContext = { runtime: 'electron', abi: '150', packaged: false, sqliteBinding: '/app/electron-native/abi150/better_sqlite3.node' };

describe('which better-sqlite3 each runtime loads', () => {
  it('Node uses the package build; Electron its own per-ABI build, unpacked from the asar once installed', () => {
    expect(sqliteBinding('/src/shira', 'node', '115')).toBeNull();
    expect(sqliteBinding('/src/shira', 'electron', '150')).toBe('/src/shira/electron-native/abi150/better_sqlite3.node');
    expect(sqliteBinding('/opt/Shira Studio/resources/app.asar', 'electron', '150')).toBe('/opt/Shira Studio/resources/app.asar.unpacked/electron-native/abi150/better_sqlite3.node');
    expect(currentRuntime({ ...process.versions, electron: '45.5.0', modules: '150' })).toEqual({ runtime: 'electron', abi: '150' });
    expect(currentRuntime(process.versions)).toEqual({ runtime: 'node', abi: ABI });
  });

  it('the build script writes where the core reads', async () => {
    const script = (await import(pathToFileURL(join(ROOT, 'scripts', 'electron-native.mjs')).href)) as {
      electronSqlitePath(root: string, abi: string): string;
      electronTarget(root: string): { abi: string; version: string } | null;
    };
    expect(script.electronSqlitePath('/src/shira', '150')).toBe(sqliteBinding('/src/shira', 'electron', '150'));
    // The installed electron package names its own ABI; it must not be Node's.
    const target = script.electronTarget(ROOT);
    expect(target?.version).toBe(JSON.parse(readFileSync(join(ROOT, 'node_modules', 'electron', 'package.json'), 'utf8')).version);
    expect(target?.abi).toMatch(/^\d+$/);
    expect(target?.abi).not.toBe(ABI);
  });

  it('lays out workers and resources for a checkout and for an installed app', () => {
    expect(appLayout('/src/shira', {}, 'linux')).toEqual({
      packaged: false,
      resourcesDir: '/src/shira/resources',
      workers: { cpu: '/src/shira/native/build/shira-worker', cuda: '/src/shira/native/build-cuda/shira-worker' },
    });
    expect(appLayout('/opt/Shira Studio/resources/app.asar', {}, 'linux')).toEqual({
      packaged: true,
      resourcesDir: '/opt/Shira Studio/resources',
      workers: { cpu: '/opt/Shira Studio/resources/native/cpu/shira-worker', cuda: '/opt/Shira Studio/resources/native/cuda/shira-worker' },
    });
    expect(appLayout('/src/shira', { SHIRA_WORKER_BIN: '/w/shira-worker' }, 'linux').workers).toEqual({ cpu: '/w/shira-worker', cuda: null });
    expect(appLayout('C:/Shira/resources/app.asar', {}, 'win32').workers.cpu).toMatch(/native[/\\]cpu[/\\]shira-worker\.exe$/);
  });
});

describe('reading load failures', () => {
  it.skipIf(!hasCc)("reads Node's own ABI-mismatch and missing-library errors", () => {
    const d = dir('shira-fake-addon-');
    const abiError = (() => {
      try {
        process.dlopen({ exports: {} } as NodeJS.Module, addonBuiltForAbi(d, 150));
      } catch (e) {
        return e;
      }
    })();
    expect(classifyLoadError(abiError)).toMatchObject({ problem: 'abi-mismatch', builtFor: '150', needs: ABI });
    const { addon } = binariesMissingALibrary(d);
    const libError = (() => {
      try {
        process.dlopen({ exports: {} } as NodeJS.Module, addon);
      } catch (e) {
        return e;
      }
    })();
    expect(classifyLoadError(libError)).toMatchObject({ problem: 'missing-library', library: 'libshira_gone.so' });
    expect(classifyLoadError(Object.assign(new Error("Cannot find module '/x/better_sqlite3.node'"), { code: 'MODULE_NOT_FOUND' })).problem).toBe('missing-binary');
  });

  it("reads the other platforms' loader messages", () => {
    // Wording of dyld (macOS) and LoadLibrary (Windows), which cannot be produced on Linux.
    expect(classifyLoadError(new Error('dlopen(/a/shira.node, 0x0001): Library not loaded: @rpath/libtorch_cpu.dylib\n  Referenced from: …'))).toMatchObject({
      problem: 'missing-library',
      library: 'libtorch_cpu.dylib',
    });
    expect(classifyLoadError(new Error('\\\\?\\C:\\a\\better_sqlite3.node: The specified module could not be found.')).problem).toBe('missing-library');
    expect(classifyLoadError(new Error('something else entirely')).problem).toBe('load-failed');
  });

  it('names the one fix for each runtime and installation', () => {
    const abi = { problem: 'abi-mismatch', detail: '', builtFor: '115', needs: '150' } as const;
    expect(fixFor('better-sqlite3', abi, electronDev)).toBe('npm run rebuild:electron');
    expect(fixFor('better-sqlite3', abi, { ...electronDev, runtime: 'node', sqliteBinding: null })).toMatch(/npm rebuild better-sqlite3$/);
    expect(fixFor('better-sqlite3', abi, { ...electronDev, packaged: true })).toMatch(/^Reinstall Shira Studio/);
    expect(fixFor('sharp', { problem: 'missing-binary', detail: '' }, electronDev)).toBe('npm ci');
    const lib = (library: string) => ({ problem: 'missing-library', detail: '', library }) as const;
    expect(fixFor('engine', lib('libtorch_cpu.so.1.13'), { ...electronDev, apt: true })).toBe('sudo apt-get install libtorch-dev libopenblas0-openmp');
    expect(fixFor('engine', lib('libtorch_cpu.so'), { ...electronDev, apt: false })).toBe('npm run setup');
    expect(fixFor('engine', lib('libcuda.so.1'), { ...electronDev, packaged: true })).toMatch(/NVIDIA driver/);
    expect(fixFor('engine', { problem: 'missing-binary', detail: '' }, electronDev)).toBe('npm run setup');
  });
});

describe('the self-check of in-process modules', () => {
  const ok: ModuleLoaders = { sqlite: () => {}, sharp: () => {}, onnxruntime: () => {} };

  it('passes when everything loads, and the real modules do load in this Node', () => {
    expect(checkModules(electronDev, ok).every((c) => c.ok)).toBe(true);
    const real = checkModules({ runtime: 'node', abi: ABI, packaged: false, sqliteBinding: null }, systemLoaders);
    expect(real.map((c) => [c.module, c.ok])).toEqual([
      ['better-sqlite3', true],
      ['sharp', true],
      ['onnxruntime-node', true],
    ]);
  });

  it.skipIf(!hasCc)('a better-sqlite3 built for another ABI stops the core, with the rebuild command', () => {
    const wrong = addonBuiltForAbi(dir('shira-fake-addon-'), 150);
    const checks = checkModules({ ...electronDev, abi: ABI, sqliteBinding: wrong }, systemLoaders);
    const sqlite = checks.find((c) => c.module === 'better-sqlite3')!;
    expect(sqlite).toMatchObject({ ok: false, required: true, problem: 'abi-mismatch', path: wrong, fix: 'npm run rebuild:electron' });
    expect(sqlite.message).toBe(`better-sqlite3 was built for another runtime (NODE_MODULE_VERSION 150); this Electron needs NODE_MODULE_VERSION ${ABI}.`);
    expect(canStart(checks)).toBe(false);
  });

  it('an optional module failing is reported but does not stop the core', () => {
    const checks = checkModules(electronDev, {
      ...ok,
      onnxruntime: () => {
        throw new Error('libonnxruntime.so.1: cannot open shared object file: No such file or directory');
      },
    });
    expect(checks.find((c) => c.module === 'onnxruntime-node')).toMatchObject({ ok: false, required: false, problem: 'missing-library', fix: 'npm ci' });
    expect(canStart(checks)).toBe(true);
  });
});

describe('the Electron core host (run in Node posing as Electron)', () => {
  /** A copy of the built app (out/main) with its dependencies linked, so electron-native/ can differ per test. */
  function appCopy(): string {
    const root = dir('shira-app-');
    cpSync(join(ROOT, 'out', 'main'), join(root, 'out', 'main'), { recursive: true });
    for (const name of ['node_modules', 'resources']) symlinkSync(join(ROOT, name), join(root, name));
    writeFileSync(
      join(root, 'fake-utility.mjs'),
      `Object.defineProperty(process.versions, 'electron', { value: '45.5.0', enumerable: true });
// As in Electron, a listener on the parent port keeps the process alive.
process.parentPort = { postMessage: (m) => process.stdout.write(JSON.stringify(m) + '\\n'), on() { setInterval(() => {}, 1 << 30); } };
`,
    );
    return root;
  }

  /** Starts a host; resolves with its first message and the process, left running. */
  function startHost(args: string[], first: (line: string) => unknown): Promise<{ child: ChildProcess; message: any }> {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHIRA_WORKER_BIN: '/nonexistent/shira-worker' } });
    cleanups.push(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message from the host in time; stderr: ${stderr}`)), 20_000);
      child.on('exit', (code) => reject(new Error(`host exited (${code}) before its first message; stderr: ${stderr}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const message = first(line);
        if (message !== undefined) {
          clearTimeout(timer);
          resolvePromise({ child, message });
        }
      });
    });
  }

  const coreHost = (root: string) =>
    startHost(['--import', pathToFileURL(join(root, 'fake-utility.mjs')).href, join(root, 'out', 'main', 'core-host.js'), '--data-dir', join(root, 'data')], (line) => JSON.parse(line));
  const electronCopy = (root: string) => join(root, 'electron-native', `abi${ABI}`, 'better_sqlite3.node');
  const mapped = (pid: number) => readFileSync(`/proc/${pid}/maps`, 'utf8');

  it.skipIf(process.platform !== 'linux')('loads the Electron copy, never the Node build; the studio server loads the Node build', async () => {
    const root = appCopy();
    mkdirSync(join(root, 'electron-native', `abi${ABI}`), { recursive: true });
    cpSync(NODE_BUILD, electronCopy(root));
    const { child, message } = await coreHost(root);
    expect(message).toEqual({ type: 'ready' });
    const maps = mapped(child.pid!);
    expect(maps).toContain(electronCopy(root));
    expect(maps).not.toContain('node_modules/better-sqlite3/build/Release/better_sqlite3.node');
    child.kill('SIGTERM');

    const server = await startHost([join(ROOT, 'out', 'main', 'server.js'), '--port', '0', '--data-dir', join(root, 'server-data')], (line) => (/^Open http/.test(line) ? line : undefined));
    const serverMaps = mapped(server.child.pid!);
    expect(serverMaps).toContain(NODE_BUILD);
    expect(serverMaps).not.toContain('electron-native');
    server.child.kill('SIGTERM');
  });

  it('without an Electron build, reports what failed and the command, and stays up instead of crashing', async () => {
    const root = appCopy();
    const { child, message } = await coreHost(root);
    expect(message.type).toBe('startup-failed');
    const report = message.failure.report as NativeReport;
    expect(report).toMatchObject({ ok: false, runtime: 'electron', abi: ABI });
    expect(report.checks.find((c) => c.module === 'better-sqlite3')).toMatchObject({
      ok: false,
      problem: 'missing-binary',
      path: electronCopy(root),
      message: `better-sqlite3 has no build for this Electron (NODE_MODULE_VERSION ${ABI}).`,
      fix: 'npm run rebuild:electron',
    });
    // Exiting would only get it restarted into the same failure.
    await new Promise((r) => setTimeout(r, 500));
    expect(child.exitCode).toBeNull();
  });

  it.skipIf(!hasCc)('with a build for another ABI, says which ABI it has and which it needs', async () => {
    const root = appCopy();
    mkdirSync(join(root, 'electron-native', `abi${ABI}`), { recursive: true });
    cpSync(addonBuiltForAbi(dir('shira-fake-addon-'), 150), electronCopy(root));
    const { message } = await coreHost(root);
    const sqlite = (message.failure.report as NativeReport).checks.find((c) => c.module === 'better-sqlite3');
    expect(sqlite).toMatchObject({ problem: 'abi-mismatch', fix: 'npm run rebuild:electron' });
    expect(sqlite!.detail).toContain('NODE_MODULE_VERSION 150');
  });
});

describe('app.health carries the self-check', () => {
  it('reports the modules and a working engine', async () => {
    const d = dir('shira-fake-worker-');
    const { call, cleanup } = makeCore({ worker: { binary: fakeWorker(join(d, 'shira-worker'), false) } });
    cleanups.push(cleanup);
    const health = await call('app.health', {});
    expect(health.ok).toBe(true);
    expect(health.native).toMatchObject({ ok: true, runtime: 'node', abi: ABI });
    expect(health.native!.checks.map((c) => [c.module, c.ok])).toEqual([
      ['better-sqlite3', true],
      ['sharp', true],
      ['onnxruntime-node', true],
      ['engine', true],
    ]);
  });

  it('a running engine is not started a second time to be checked', async () => {
    const asked: string[] = [];
    const probe = { ...systemProbe, workerInfo: (b: string) => (asked.push(b), systemProbe.workerInfo(b)) };
    const { call, cleanup } = makeCore({ worker: { binary: fakeWorker(join(dir('shira-fake-worker-'), 'shira-worker'), false), probe } });
    cleanups.push(cleanup);
    expect((await call('worker.status', { start: true })).state).toBe('ready');
    expect((await call('app.health', {})).native!.checks.at(-1)).toMatchObject({ module: 'engine', ok: true });
    expect(asked).toEqual([]);
  });

  it.skipIf(!hasCc)('an engine missing a library names it; the database stays healthy', async () => {
    const { executable } = binariesMissingALibrary(dir('shira-fake-worker-'));
    const { call, cleanup } = makeCore({ worker: { binary: executable } });
    cleanups.push(cleanup);
    const health = await call('app.health', {});
    expect(health.ok).toBe(true);
    expect(health.native!.ok).toBe(false);
    expect(health.native!.checks.at(-1)).toMatchObject({
      module: 'engine',
      ok: false,
      required: false,
      problem: 'missing-library',
      path: executable,
      message: 'The native engine (shira-worker) cannot load: the library libshira_gone.so is missing.',
      fix: 'npm run setup',
    });
  });

  it('a worker that is not built says so', async () => {
    const { call, cleanup } = makeCore({ worker: { binary: '/nonexistent/shira-worker', cuda: null } });
    cleanups.push(cleanup);
    const engine = (await call('app.health', {})).native!.checks.at(-1);
    expect(engine).toMatchObject({ module: 'engine', ok: false, problem: 'missing-binary', message: 'The native engine (shira-worker) is not built or not installed.', fix: 'npm run setup' });
  });
});
