// The CUDA worker beside the CPU one: set-up (scripts/setup.mjs) finds a CUDA libtorch and builds
// native/build-cuda against it; the app picks it when a GPU is visible (src/main/core/worker/select.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * A CUDA libtorch, if one is here: LIBTORCH (an unzipped libtorch), Torch_DIR (…/share/cmake/Torch), or
 * a pip PyTorch built with CUDA (PYTHON, default python3). Returns { kind: 'prefix', prefix, label } |
 * { kind: 'python', python, version } | { checked: [what was looked at] }.
 */
export function findCudaTorch(env = process.env) {
  const checked = [];
  for (const [label, prefix] of [
    ['LIBTORCH', env.LIBTORCH],
    ['Torch_DIR', env.Torch_DIR ? resolve(env.Torch_DIR, '..', '..', '..') : undefined],
  ]) {
    if (!prefix) continue;
    if (['libtorch_cuda.so', 'torch_cuda.dll', 'torch_cuda.lib'].some((f) => existsSync(join(prefix, 'lib', f)))) return { kind: 'prefix', prefix, label };
    checked.push(`${label} (${prefix}) has no CUDA`);
  }
  const python = env.PYTHON || (process.platform === 'win32' ? 'python' : 'python3');
  const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__); print(torch.version.cuda or "")'], { encoding: 'utf8', timeout: 60_000, env });
  if (r.status === 0) {
    const [version, cuda] = r.stdout.trim().split('\n');
    if (cuda) return { kind: 'python', python, version: `${version} (CUDA ${cuda})` };
    checked.push(`${python}'s PyTorch ${version} has no CUDA`);
  } else checked.push(`${python} has no PyTorch`);
  return { checked };
}

/**
 * Builds native/build-cuda: scripts/gpu/build.sh for a pip PyTorch (it knows the wheels' quirks), CMake
 * for a libtorch folder. Never fatal: the CPU worker is enough to run.
 */
export function buildCudaWorker({ root, jobs, say, run, env = process.env }) {
  const found = findCudaTorch(env);
  if (!found.kind) {
    say(`no CUDA libtorch found (${found.checked.join('; ')}); the CPU engine is used`);
    return;
  }
  const cache = join(root, 'native', 'build', 'CMakeCache.txt');
  const mainTorch = existsSync(cache) ? /^Torch_DIR:PATH=(.*)$/m.exec(readFileSync(cache, 'utf8'))?.[1] : undefined;
  if (found.kind === 'prefix' && mainTorch && resolve(mainTorch).startsWith(resolve(found.prefix))) {
    say(`native/build already links the CUDA libtorch in ${found.prefix}; no second build`);
    return;
  }
  let code;
  if (found.kind === 'python') {
    say(`building the CUDA worker in native/build-cuda against PyTorch ${found.version} (first time: ~10 minutes)`);
    code = run('bash', [join(root, 'scripts', 'gpu', 'build.sh'), join(root, 'native', 'build-cuda')], { env: { ...env, PYTHON: found.python, JOBS: jobs } });
  } else {
    say(`building the CUDA worker in native/build-cuda against ${found.label}=${found.prefix}`);
    code = run('cmake', ['-S', 'native', '-B', 'native/build-cuda', '-DCMAKE_BUILD_TYPE=Release', `-DCMAKE_PREFIX_PATH=${found.prefix}`]);
    if (code === 0) code = run('cmake', ['--build', 'native/build-cuda', '-j', jobs]);
  }
  if (code !== 0) say('the CUDA worker did not build (see above); the CPU engine is used');
}
