// Set-up's search for a CUDA libtorch and how it builds the CUDA worker (scripts/cuda-worker.mjs), with a
// stand-in Python and libtorch folders: the real build needs a CUDA PyTorch (docs/desktop.md).
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from './helpers';

const ROOT = resolve(__dirname, '../..');
type Found = { kind?: 'prefix' | 'python'; prefix?: string; label?: string; python?: string; version?: string; checked?: string[] };
type Mod = {
  findCudaTorch(env: NodeJS.ProcessEnv): Found;
  buildCudaWorker(o: { root: string; jobs: string; say: (m: string) => void; run: (cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv }) => number; env: NodeJS.ProcessEnv }): void;
};
const load = (): Promise<Mod> => import(pathToFileURL(join(ROOT, 'scripts', 'cuda-worker.mjs')).href);
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup() {
  const d = tempDir('shira-cuda-');
  cleanups.push(d.cleanup);
  /** A libtorch folder, with or without its CUDA library. */
  const libtorch = (name: string, cuda: boolean) => {
    const prefix = join(d.path, name);
    mkdirSync(join(prefix, 'lib'), { recursive: true });
    mkdirSync(join(prefix, 'share', 'cmake', 'Torch'), { recursive: true });
    writeFileSync(join(prefix, 'lib', 'libtorch_cpu.so'), '');
    if (cuda) writeFileSync(join(prefix, 'lib', 'libtorch_cuda.so'), '');
    return prefix;
  };
  /** A "python" answering `import torch` with this version and CUDA (empty: a CPU wheel). */
  const python = (version: string, cuda: string) => {
    const file = join(d.path, `python-${version}`);
    writeFileSync(file, `#!/bin/sh\necho ${version}\necho "${cuda}"\n`);
    chmodSync(file, 0o755);
    return file;
  };
  return { dir: d.path, libtorch, python };
}

describe('finding a CUDA libtorch', () => {
  it('takes LIBTORCH or Torch_DIR when their lib folder has libtorch_cuda', async () => {
    const { findCudaTorch } = await load();
    const s = setup();
    const cuda = s.libtorch('libtorch-cu124', true);
    expect(findCudaTorch({ LIBTORCH: cuda, PYTHON: '/nonexistent/python' })).toEqual({ kind: 'prefix', prefix: cuda, label: 'LIBTORCH' });
    expect(findCudaTorch({ Torch_DIR: join(cuda, 'share', 'cmake', 'Torch'), PYTHON: '/nonexistent/python' })).toEqual({ kind: 'prefix', prefix: cuda, label: 'Torch_DIR' });
  });

  it('falls back to a pip PyTorch with CUDA, and says what it looked at when there is none', async () => {
    const { findCudaTorch } = await load();
    const s = setup();
    const cpu = s.libtorch('libtorch-cpu', false);
    const withCuda = s.python('2.5.1+cu124', '12.4');
    expect(findCudaTorch({ LIBTORCH: cpu, PYTHON: withCuda })).toEqual({ kind: 'python', python: withCuda, version: '2.5.1+cu124 (CUDA 12.4)' });
    const cpuWheel = s.python('2.5.1+cpu', '');
    expect(findCudaTorch({ LIBTORCH: cpu, PYTHON: cpuWheel }).checked).toEqual([`LIBTORCH (${cpu}) has no CUDA`, `${cpuWheel}'s PyTorch 2.5.1+cpu has no CUDA`]);
    expect(findCudaTorch({ PYTHON: '/nonexistent/python' }).checked).toEqual(['/nonexistent/python has no PyTorch']);
  });
});

describe('building the CUDA worker', () => {
  function build(env: NodeJS.ProcessEnv, root = ROOT) {
    const calls: { cmd: string; args: string[]; env?: NodeJS.ProcessEnv }[] = [];
    const said: string[] = [];
    return load().then(({ buildCudaWorker }) => {
      buildCudaWorker({ root, jobs: '2', say: (m) => said.push(m), run: (cmd, args, opts) => (calls.push({ cmd, args, env: opts?.env }), 0), env });
      return { calls, said };
    });
  }

  it('a pip PyTorch: scripts/gpu/build.sh into native/build-cuda, with that Python', async () => {
    const s = setup();
    const py = s.python('2.5.1+cu124', '12.4');
    const { calls } = await build({ PYTHON: py });
    expect(calls).toHaveLength(1);
    expect(calls[0]!.cmd).toBe('bash');
    expect(calls[0]!.args).toEqual([join(ROOT, 'scripts', 'gpu', 'build.sh'), join(ROOT, 'native', 'build-cuda')]);
    expect(calls[0]!.env).toMatchObject({ PYTHON: py, JOBS: '2' });
  });

  it('a libtorch folder: CMake into native/build-cuda, unless native/build already links it', async () => {
    const s = setup();
    const cuda = s.libtorch('libtorch-cu124', true);
    const { calls } = await build({ LIBTORCH: cuda, PYTHON: '/nonexistent/python' });
    expect(calls.map((c) => [c.cmd, ...c.args])).toEqual([
      ['cmake', '-S', 'native', '-B', 'native/build-cuda', '-DCMAKE_BUILD_TYPE=Release', `-DCMAKE_PREFIX_PATH=${cuda}`],
      ['cmake', '--build', 'native/build-cuda', '-j', '2'],
    ]);
    const root = join(s.dir, 'checkout');
    mkdirSync(join(root, 'native', 'build'), { recursive: true });
    writeFileSync(join(root, 'native', 'build', 'CMakeCache.txt'), `Torch_DIR:PATH=${cuda}/share/cmake/Torch\n`);
    const again = await build({ LIBTORCH: cuda, PYTHON: '/nonexistent/python' }, root);
    expect(again.calls).toEqual([]);
    expect(again.said).toEqual([`native/build already links the CUDA libtorch in ${cuda}; no second build`]);
  });

  it('no CUDA libtorch: nothing is built, and it says so', async () => {
    const { calls, said } = await build({ PYTHON: '/nonexistent/python' });
    expect(calls).toEqual([]);
    expect(said).toEqual(['no CUDA libtorch found (/nonexistent/python has no PyTorch); the CPU engine is used']);
  });
});
