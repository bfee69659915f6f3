#!/usr/bin/env node
// Stages the native worker builds and the libtorch they link for the installer (electron-builder.json
// copies the staged folder to <resources>/native):
//
//   native/cpu/shira-worker    from native/build        RPATH $ORIGIN/../lib
//   native/cuda/shira-worker   from native/build-cuda   (when it was built)
//   native/lib/*               every library the workers link that is not the operating system's
//
// "The operating system's" = glibc, libstdc++/libgcc_s, and anything else resolved from /lib or /usr/lib
// except libtorch's own libraries (libtorch*, libc10*, libshm*), and never the NVIDIA driver (libcuda,
// libnvidia-*), which must match the kernel module. So a worker linked to an unzipped libtorch or a pip
// PyTorch (a self-contained lib folder, CUDA libraries included) ships all of it, and one linked to
// Debian's libtorch-dev ships libtorch and relies on apt for the rest.
//
// Linux only (ldd + patchelf; the RPATH is DT_RPATH, which also covers libtorch's own dependencies);
// macOS and Windows: see docs/desktop.md. Usage: node scripts/stage-native.mjs [--out DIR]
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, realpathSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** What electron-builder.json's extraResources copies to <resources>/native. */
export const STAGE_DIR = join('.build', 'package', 'native');

export const WORKER_BUILDS = [
  ['cpu', join('native', 'build', 'shira-worker')],
  ['cuda', join('native', 'build-cuda', 'shira-worker')],
];

const SYSTEM_DIRS = /^\/(usr\/)?lib(32|64|x32)?\//;
const LIBTORCH_OWN = /^lib(torch|c10|shm|caffe2)/;
const DRIVER = /^lib(cuda|nvidia-)/;

/** Should this linked library be shipped inside the app? (name as ldd prints it, resolved path) */
export function isBundled(name, path) {
  if (DRIVER.test(name)) return false;
  if (SYSTEM_DIRS.test(path)) return LIBTORCH_OWN.test(name);
  return true;
}

/** ldd's `name => path (addr)` lines; missing libraries throw, naming them. */
export function linkedLibraries(binary, env = process.env) {
  const r = spawnSync('ldd', [binary], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`ldd ${binary} failed: ${(r.stderr || r.stdout).trim()}`);
  const libs = [];
  const missing = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(.+?)\s+\(0x[0-9a-f]+\)\s*$/.exec(line) ?? /^\s*(\S+)\s+=>\s+(not found)\s*$/.exec(line);
    if (!m) continue;
    if (m[2] === 'not found') missing.push(m[1]);
    else libs.push({ name: m[1], path: m[2] });
  }
  if (missing.length) throw new Error(`${binary} links libraries that are not here: ${missing.join(', ')}`);
  return libs;
}

function patchelf(args) {
  const r = spawnSync('patchelf', args, { encoding: 'utf8' });
  if (r.error) throw new Error('patchelf is needed to stage the worker (Debian: sudo apt-get install patchelf)');
  if (r.status !== 0) throw new Error(`patchelf ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Stages every worker build that exists; returns { workers: [{kind, file}], libs: [names] }. */
export function stageNative(out, root = ROOT) {
  if (process.platform !== 'linux') throw new Error(`stage-native.mjs stages Linux builds; for ${process.platform} follow docs/desktop.md`);
  rmSync(out, { recursive: true, force: true });
  const libDir = join(out, 'lib');
  mkdirSync(libDir, { recursive: true });
  const workers = [];
  const libs = new Map();
  for (const [kind, rel] of WORKER_BUILDS) {
    const src = join(root, rel);
    if (!existsSync(src)) continue;
    const file = join(out, kind, 'shira-worker');
    mkdirSync(dirname(file), { recursive: true });
    copyFileSync(src, file);
    chmodSync(file, 0o755);
    for (const lib of linkedLibraries(src)) if (isBundled(lib.name, lib.path)) libs.set(lib.name, realpathSync(lib.path));
    // DT_RPATH (not RUNPATH): it also applies to the libraries' own dependencies that have no RUNPATH.
    patchelf(['--force-rpath', '--set-rpath', '$ORIGIN/../lib', file]);
    workers.push({ kind, file });
  }
  if (!workers.length) throw new Error('no worker is built (native/build/shira-worker); run npm run setup first');
  for (const [name, path] of libs) {
    const dest = join(libDir, name);
    copyFileSync(path, dest);
    chmodSync(dest, 0o755);
    // A pip wheel's libraries point at each other through their own RUNPATH ($ORIGIN/../../nvidia/…); in the
    // flat lib/ folder they are all beside each other.
    if (patchelf(['--print-rpath', dest])) patchelf(['--set-rpath', '$ORIGIN', dest]);
  }
  return { workers, libs: [...libs.keys()] };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const outArg = process.argv.indexOf('--out');
  const out = resolve(outArg > 0 ? process.argv[outArg + 1] : join(ROOT, STAGE_DIR));
  try {
    const { workers, libs } = stageNative(out);
    console.log(`[stage-native] ${workers.map((w) => w.kind).join(' + ')} worker(s) and ${libs.length} libraries in ${out}: ${libs.map((l) => basename(l)).join(', ')}`);
  } catch (error) {
    console.error(`[stage-native] ${error.message}`);
    process.exit(1);
  }
}
