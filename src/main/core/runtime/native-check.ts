// The start-up self-check of everything native the app loads: better-sqlite3 (V8 ABI: built per
// runtime), sharp and onnxruntime-node (Node-API: any runtime, but a platform package can be
// missing), and the shira-worker process with the libtorch it links. A failure becomes plain data —
// what failed, why, and the one command that fixes it — for the Electron window, `app.health` and
// the logs. Nothing here throws: a check that cannot run is itself a failed check.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { NativeCheck, NativeModuleName, NativeProblem, NativeReport } from '../../../shared/api';
import { currentRuntime, type RuntimeKind } from './layout';

export interface CheckContext {
  runtime: RuntimeKind;
  /** NODE_MODULE_VERSION of this runtime. */
  abi: string;
  packaged: boolean;
  /** better-sqlite3's binary for this runtime; null = the package's default (Node) build. */
  sqliteBinding: string | null;
  /** Debian/Ubuntu with apt: fixes for system libraries can name the packages. */
  apt?: boolean;
}

/** The context of this process: its runtime and ABI, and whether fixes may name apt packages. */
export function checkContext(packaged: boolean, sqliteBinding: string | null): CheckContext {
  return { ...currentRuntime(), packaged, sqliteBinding, apt: process.platform === 'linux' && existsSync('/usr/bin/apt-get') };
}

/** Module loads, injectable so tests can simulate each kind of failure. Each throws what Node would. */
export interface ModuleLoaders {
  sqlite(binding: string | null): void;
  sharp(): void;
  onnxruntime(): void;
}

const requireHere = createRequire(import.meta.url);

export const systemLoaders: ModuleLoaders = {
  sqlite(binding) {
    const Database = requireHere('better-sqlite3') as typeof import('better-sqlite3');
    // The addon loads at the first `new Database`; a query proves it is usable, not just present.
    const db = new Database(':memory:', binding ? { nativeBinding: binding } : undefined);
    try {
      db.prepare('SELECT sqlite_version()').get();
    } finally {
      db.close();
    }
  },
  sharp() {
    requireHere('sharp');
  },
  onnxruntime() {
    requireHere('onnxruntime-node');
  },
};

export interface LoadFailure {
  problem: NativeProblem;
  /** First line(s) of the loader's own message. */
  detail: string;
  /** The shared library the dynamic loader could not find. */
  library?: string;
  /** ABI mismatch: what the binary was built for and what this runtime needs. */
  builtFor?: string;
  needs?: string;
}

/**
 * Reads a load error the way the loaders word it: Node/Electron's ABI check ("compiled against a
 * different Node.js version using NODE_MODULE_VERSION X … requires NODE_MODULE_VERSION Y"), the
 * dynamic loaders (glibc "X: cannot open shared object file", macOS "Library not loaded: X", Windows
 * "The specified module could not be found"), and a file that is not there at all.
 */
export function classifyLoadError(error: unknown): LoadFailure {
  const text = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  const detail = text.split('\n').slice(0, 3).join(' ').replace(/\s+/g, ' ').trim().slice(0, 400);
  const abi = /NODE_MODULE_VERSION (\d+)[\s\S]*?requires\s+NODE_MODULE_VERSION (\d+)/.exec(text);
  if (abi) return { problem: 'abi-mismatch', detail, builtFor: abi[1], needs: abi[2] };
  const glibc = /([^\s:/]+\.so(?:\.[\w.]+)?): cannot open shared object file/.exec(text);
  if (glibc) return { problem: 'missing-library', detail, library: glibc[1] };
  const mac = /Library not loaded: (\S+)/.exec(text);
  if (mac) return { problem: 'missing-library', detail, library: mac[1]!.split('/').pop() };
  if (/The specified module could not be found/i.test(text)) return { problem: 'missing-library', detail };
  if (code === 'MODULE_NOT_FOUND' || code === 'ENOENT' || /Could not locate the bindings file|Cannot find module/.test(text)) {
    return { problem: 'missing-binary', detail };
  }
  return { problem: 'load-failed', detail };
}

const REINSTALL = 'Reinstall Shira Studio from its installer (this installation is incomplete or damaged).';
export const NVIDIA_DRIVER = 'Install the NVIDIA driver (nvidia-smi must list the GPU), or choose CPU under Engine → Device.';

/** The NVIDIA driver's own library (Linux libcuda.so.1, Windows nvcuda.dll): the driver is missing, not the build. */
export const isDriverLibrary = (library: string | undefined): boolean => library !== undefined && /^(libcuda|nvcuda)/.test(library);

/** The one command (or, for an installed app, the one action) that fixes a failed module. */
export function fixFor(module: NativeModuleName, failure: LoadFailure, ctx: CheckContext): string {
  if (ctx.packaged) {
    if (module === 'engine' && isDriverLibrary(failure.library)) return NVIDIA_DRIVER;
    return REINSTALL;
  }
  switch (module) {
    case 'better-sqlite3':
      // The Electron copy is ours (scripts/electron-native.mjs); the Node one is the package's own.
      if (ctx.runtime === 'electron') return 'npm run rebuild:electron';
      return existsSync('/usr/include/node/node.h') ? 'npm_config_nodedir=/usr npm rebuild better-sqlite3' : 'npm rebuild better-sqlite3';
    case 'sharp':
    case 'onnxruntime-node':
      // Both ship per-platform prebuilt packages; a clean install from the lockfile brings them back.
      return 'npm ci';
    case 'engine': {
      const lib = failure.library ?? '';
      if (isDriverLibrary(lib)) return NVIDIA_DRIVER;
      if (ctx.apt && /^(libtorch|libc10|libopenblas|libgomp|libshm)/.test(lib)) return 'sudo apt-get install libtorch-dev libopenblas0-openmp';
      return 'npm run setup';
    }
  }
}

function describe(module: NativeModuleName, f: LoadFailure, ctx: CheckContext): string {
  const what = module === 'engine' ? 'The native engine (shira-worker)' : module;
  switch (f.problem) {
    case 'abi-mismatch':
      return `${what} was built for another runtime (NODE_MODULE_VERSION ${f.builtFor}); this ${ctx.runtime === 'electron' ? 'Electron' : 'Node.js'} needs NODE_MODULE_VERSION ${f.needs}.`;
    case 'missing-library':
      return `${what} cannot load: the library ${f.library ?? 'it links'} is missing.`;
    case 'missing-binary':
      return module === 'better-sqlite3' && ctx.runtime === 'electron' ? `${what} has no build for this Electron (NODE_MODULE_VERSION ${ctx.abi}).` : `${what} is not built or not installed.`;
    case 'load-failed':
      return `${what} failed to load.`;
  }
}

export function failedCheck(module: NativeModuleName, f: LoadFailure, ctx: CheckContext, required: boolean, path?: string | null): NativeCheck {
  return {
    module,
    ok: false,
    required,
    ...(path !== undefined ? { path } : {}),
    problem: f.problem,
    message: describe(module, f, ctx),
    detail: f.detail,
    fix: fixFor(module, f, ctx),
  };
}

/**
 * The in-process modules. better-sqlite3 and sharp are required (no library, no images); the
 * ONNX runtime is an optional second engine. Each load is tried once; Node caches the successes.
 */
export function checkModules(ctx: CheckContext, load: ModuleLoaders = systemLoaders): NativeCheck[] {
  const checks: NativeCheck[] = [];
  const attempt = (module: NativeModuleName, required: boolean, fn: () => void, path?: string | null) => {
    try {
      fn();
      checks.push({ module, ok: true, required, ...(path !== undefined ? { path } : {}) });
    } catch (error) {
      checks.push(failedCheck(module, classifyLoadError(error), ctx, required, path));
    }
  };
  attempt('better-sqlite3', true, () => load.sqlite(ctx.sqliteBinding), ctx.sqliteBinding);
  attempt('sharp', true, () => load.sharp());
  attempt('onnxruntime-node', false, () => load.onnxruntime());
  return checks;
}

export function nativeReport(ctx: CheckContext, checks: NativeCheck[]): NativeReport {
  return { ok: checks.every((c) => c.ok), runtime: ctx.runtime, abi: ctx.abi, checks };
}

/** Whether the core can start at all (every required module loads). */
export function canStart(checks: readonly NativeCheck[]): boolean {
  return checks.every((c) => c.ok || !c.required);
}
