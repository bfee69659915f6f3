#!/usr/bin/env node
// Brings a fresh machine to the point where `npm start` / `npm test` can run: system packages
// (apt, when root on Debian/Ubuntu), npm dependencies, the app build, and the native worker build
// once native/ exists; for the desktop app (start, dist) also a CUDA worker beside the CPU one where a
// CUDA libtorch is found, and better-sqlite3 built for Electron's ABI once Electron's binary is here.
// Dependency-free on purpose: it runs before node_modules exists.
// Usage: node scripts/setup.mjs --for start|serve|test|dist
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const purpose = process.argv.includes('--for') ? process.argv[process.argv.indexOf('--for') + 1] : 'start';
const say = (msg) => console.log(`[setup] ${msg}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: ROOT, ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}
function must(cmd, args, opts) {
  const code = run(cmd, args, opts);
  if (code !== 0) {
    console.error(`[setup] failed: ${cmd} ${args.join(' ')} (exit ${code})`);
    process.exit(code);
  }
}
const has = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

// 1. Node itself.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(`[setup] Shira Studio needs Node.js 20.19 or newer (this is ${process.versions.node}).`);
  process.exit(1);
}

// 2. System packages. Each requirement: a check, the Debian packages that satisfy it, and why.
const nativeWanted = existsSync(join(ROOT, 'native', 'CMakeLists.txt'));
const torchFromEnv = Boolean(process.env.Torch_DIR || process.env.LIBTORCH || process.env.CMAKE_PREFIX_PATH);
const requirements = [
  { why: 'compiling better-sqlite3', ok: () => has('make') && has('g++') && has('python3'), pkgs: ['make', 'g++', 'python3'] },
  { why: 'browser tests', only: ['test'], ok: () => existsSync('/usr/bin/chromium'), pkgs: ['chromium'] },
  // The packaged worker finds its libtorch through an $ORIGIN-relative RPATH (scripts/stage-native.mjs).
  { why: 'packaging the native worker', only: process.platform === 'linux' ? ['test', 'dist'] : [], ok: () => has('patchelf'), pkgs: ['patchelf'] },
  // The PyTorch reference of the model (tests/reference) is the worker's test oracle; ~180 MB, ~1 min.
  { why: 'the PyTorch reference checks', only: ['test'], ok: () => existsSync('/usr/lib/python3/dist-packages/torch'), pkgs: ['python3-torch'] },
  { why: 'building the native worker', only: nativeWanted ? undefined : [], ok: () => has('cmake') && has('g++'), pkgs: ['cmake', 'g++'] },
  // Optional: installed where apt can (~35 MB with its LLVM libraries); elsewhere the format check skips, saying so.
  { why: 'the native format check', only: ['test'], optional: true, ok: () => has('clang-format'), pkgs: ['clang-format'] },
  {
    why: 'libtorch for the native worker',
    only: nativeWanted && !torchFromEnv ? undefined : [],
    ok: () => existsSync('/usr/lib/x86_64-linux-gnu/cmake/Torch') || existsSync('/usr/lib/aarch64-linux-gnu/cmake/Torch') || existsSync('/usr/share/cmake/Torch'),
    pkgs: ['libtorch-dev', 'libopenblas0-openmp', 'nlohmann-json3-dev'],
    hint: "or point Torch_DIR at an existing libtorch, e.g. Torch_DIR=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')/Torch",
  },
];
const canApt = process.platform === 'linux' && has('apt-get') && process.getuid?.() === 0;
const missing = requirements.filter((r) => (!r.only || r.only.includes(purpose)) && !r.ok() && (canApt || !r.optional));
if (missing.length) {
  const pkgs = [...new Set(missing.flatMap((r) => r.pkgs))];
  if (canApt) {
    say(`installing system packages for ${missing.map((r) => r.why).join(', ')}: ${pkgs.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    must('apt-get', ['update', '-qq'], { env });
    must('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env });
  } else {
    console.error('[setup] Missing system software:');
    for (const r of missing) console.error(`  - for ${r.why}: ${r.pkgs.join(', ')}${r.hint ? ` (${r.hint})` : ''}`);
    if (process.platform === 'linux' && has('apt-get')) console.error(`  Install with: sudo apt-get install ${pkgs.join(' ')}`);
    else console.error('  On macOS: Xcode command line tools, `brew install cmake pytorch`; on Windows: Visual Studio Build Tools, CMake and a libtorch zip (see README).');
    process.exit(1);
  }
}

// 3. npm dependencies, re-installed when package.json or the lockfile changed.
if (existsSync('/usr/include/node/node.h') && !process.env.npm_config_nodedir) process.env.npm_config_nodedir = '/usr';
const lock = join(ROOT, 'package-lock.json');
const stampFile = join(ROOT, 'node_modules', '.shira-setup-stamp');
const depsHash = createHash('sha256')
  .update(readFileSync(join(ROOT, 'package.json')))
  .update(existsSync(lock) ? readFileSync(lock) : '')
  .update(process.versions.modules)
  .digest('hex');
const stamp = existsSync(stampFile) ? readFileSync(stampFile, 'utf8') : '';
if (stamp !== depsHash) {
  say(existsSync(join(ROOT, 'node_modules')) ? 'dependencies changed; installing' : 'installing npm dependencies (first run compiles better-sqlite3, ~2 minutes)');
  must('npm', [existsSync(lock) ? 'ci' : 'install', '--no-audit', '--no-fund']);
  writeFileSync(stampFile, depsHash);
}

// 4. The app build (main, preload, renderer), redone only when a source is newer than it.
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((n) => newest(join(path, n))));
}
const buildStamp = join(ROOT, 'out', '.build-stamp');
const sourcesTime = Math.max(newest(join(ROOT, 'src')), newest(join(ROOT, 'tools')), newest(join(ROOT, 'electron.vite.config.ts')), newest(join(ROOT, 'package.json')));
if (!existsSync(buildStamp) || statSync(buildStamp).mtimeMs < sourcesTime) {
  say('building the app');
  must('npx', ['electron-vite', 'build']);
  writeFileSync(buildStamp, new Date().toISOString());
}

// 5. The native worker (once native/ exists): configure once, then incremental builds.
if (nativeWanted) {
  const buildDir = join(ROOT, 'native', 'build');
  if (!existsSync(join(buildDir, 'CMakeCache.txt'))) {
    say('configuring the native worker');
    must('cmake', ['-S', 'native', '-B', 'native/build', '-DCMAKE_BUILD_TYPE=Release']);
  }
  say('building the native worker');
  must('cmake', ['--build', 'native/build', '-j', buildJobs()]);
  if (purpose === 'start' || purpose === 'dist') {
    const { buildCudaWorker } = await import('./cuda-worker.mjs');
    buildCudaWorker({ root: ROOT, jobs: buildJobs(), say, run });
  }
}

// 6. better-sqlite3 for Electron's ABI (scripts/electron-native.mjs), once Electron's binary is here:
// the Node build above cannot load in Electron. Offline, start falls back to the studio server.
if (purpose === 'start' || purpose === 'dist') {
  const { ensureElectronSqlite } = await import('./electron-native.mjs');
  const electronHere = existsSync(join(ROOT, 'node_modules', 'electron', 'path.txt'));
  if (electronHere || purpose === 'dist') {
    const r = ensureElectronSqlite();
    if (r.ok) say(`better-sqlite3 for Electron: ${r.how === 'present' ? 'up to date' : `built (${r.how})`}`);
    else {
      say(`skipped better-sqlite3 for Electron: ${r.why}. The studio server works without it; with internet: npm run rebuild:electron`);
      if (purpose === 'dist') process.exit(1);
    }
  }
}
say('ready');

function buildJobs() {
  return String(Math.max(1, Math.min(2, Number(process.env.SHIRA_BUILD_JOBS) || 2)));
}
