// GPU selection: which worker build runs on which device. Its inputs are faked at the boundary — which
// binaries exist, what nvidia-smi lists, what each build's `info` says — and, end to end through the
// core, stand-in workers report the --device they were started with.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { installAdvice, parseNvidiaSmi, parseWorkerInfo, selectEngine, systemProbe, type EngineProbe, type WorkerProbe } from '../../src/main/core/worker/select';
import type { GpuInfo } from '../../src/shared/api';
import { makeCore, tempDir } from './helpers';
import { binariesMissingALibrary, fakeWorker, hasCc } from './native-fakes';

const ROOT = resolve(__dirname, '../..');
const CPU = '/app/native/build/shira-worker';
const CUDA = '/app/native/build-cuda/shira-worker';
const H200: GpuInfo = { name: 'NVIDIA H200', driver: '570.86.15', memoryMiB: 143771 };
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function probe(o: { files: string[]; gpus: GpuInfo[] | null; info?: Record<string, WorkerProbe> }): EngineProbe & { infoAsked: string[] } {
  const infoAsked: string[] = [];
  return {
    infoAsked,
    exists: (p) => o.files.includes(p),
    nvidiaGpus: async () => o.gpus,
    workerInfo: async (b) => {
      infoAsked.push(b);
      return o.info?.[b] ?? { ok: true, torch: '1.13.0', cuda: false };
    },
  };
}
const builds = { cpu: CPU, cuda: CUDA, packaged: false };
const cudaInfo: WorkerProbe = { ok: true, torch: '2.5.1+cu124', cuda: true };

describe('engine selection', () => {
  it('uses the CUDA build on the GPU when it sees one', async () => {
    const p = probe({ files: [CPU, CUDA], gpus: [H200], info: { [CUDA]: cudaInfo } });
    const c = await selectEngine(builds, 'auto', p);
    expect(c).toMatchObject({ binary: CUDA, args: ['--device', 'cuda'] });
    expect(c.selection).toMatchObject({ device: 'cuda', builds: { cpu: true, cuda: true }, gpus: [H200], reason: 'CUDA on NVIDIA H200 (libtorch 2.5.1+cu124).' });
    expect(c.selection.advice).toBeUndefined();
  });

  it('the CPU setting wins over a GPU, and asks nothing of the CUDA build', async () => {
    const p = probe({ files: [CPU, CUDA], gpus: [H200], info: { [CUDA]: cudaInfo } });
    const c = await selectEngine(builds, 'cpu', p);
    expect(c).toMatchObject({ binary: CPU, args: ['--device', 'cpu'], selection: { device: 'cpu', reason: 'CPU, as chosen under Engine → Device.' } });
    expect(p.infoAsked).toEqual([]);
    // A lone CUDA build serves the CPU setting too.
    expect(await selectEngine(builds, 'cpu', probe({ files: [CUDA], gpus: [] }))).toMatchObject({ binary: CUDA, args: ['--device', 'cpu'] });
  });

  it('an NVIDIA GPU with only the CPU build: the CPU, and what to install', async () => {
    const c = await selectEngine(builds, 'auto', probe({ files: [CPU], gpus: [H200] }));
    expect(c).toMatchObject({ binary: CPU, args: ['--device', 'cpu'] });
    expect(c.selection.reason).toBe('only the CPU engine is built; using the CPU.');
    expect(c.selection.advice).toBe(installAdvice([H200], false));
    expect(c.selection.advice).toMatch(/NVIDIA H200.*pip install torch --index-url https:\/\/download\.pytorch\.org\/whl\/cu\d+.*npm run setup/);
    const installed = await selectEngine({ ...builds, packaged: true }, 'gpu', probe({ files: [CPU], gpus: [H200] }));
    expect(installed.selection.reason).toBe('GPU was chosen, but only the CPU engine is built; using the CPU.');
    expect(installed.selection.advice).toMatch(/Install the CUDA edition of Shira Studio/);
  });

  it('no GPU: the CPU, without advice', async () => {
    const c = await selectEngine(builds, 'auto', probe({ files: [CPU, CUDA], gpus: null, info: { [CUDA]: { ok: true, torch: '2.5.1+cu124', cuda: false } } }));
    expect(c).toMatchObject({ binary: CPU, args: ['--device', 'cpu'], selection: { device: 'cpu', gpus: [], reason: 'no GPU is visible (nvidia-smi lists none); using the CPU.' } });
    expect(c.selection.advice).toBeUndefined();
    expect((await selectEngine(builds, 'auto', probe({ files: [CPU], gpus: [] }))).selection.advice).toBeUndefined();
  });

  it('a GPU the CUDA build cannot use (old driver) falls back to the CPU and says to update the driver', async () => {
    const c = await selectEngine(builds, 'auto', probe({ files: [CPU, CUDA], gpus: [H200], info: { [CUDA]: { ok: true, torch: '2.5.1+cu124', cuda: false } } }));
    expect(c).toMatchObject({ binary: CPU, selection: { device: 'cpu', reason: 'the CUDA engine cannot use NVIDIA H200; using the CPU.' } });
    expect(c.selection.advice).toMatch(/Update the NVIDIA driver.*570\.86\.15/);
  });

  it('a CUDA build that does not start: the CPU, with the reason and the fix', async () => {
    const noDriver = await selectEngine(builds, 'auto', probe({ files: [CPU, CUDA], gpus: [], info: { [CUDA]: { ok: false, problem: 'missing-library', detail: '…', library: 'libcuda.so.1' } } }));
    expect(noDriver).toMatchObject({ binary: CPU, selection: { reason: 'the CUDA engine does not start (the library libcuda.so.1 is missing); using the CPU.' } });
    expect(noDriver.selection.advice).toMatch(/Install the NVIDIA driver/);
    const broken = await selectEngine(
      builds,
      'auto',
      probe({ files: [CPU, CUDA], gpus: [H200], info: { [CUDA]: { ok: false, problem: 'missing-library', detail: '…', library: 'libtorch_cuda.so' } } }),
    );
    expect(broken.selection.advice).toBe('Rebuild the CUDA engine: npm run setup.');
  });

  it('a CPU-folder build linked to a CUDA libtorch is used on the GPU', async () => {
    const c = await selectEngine(builds, 'auto', probe({ files: [CPU], gpus: [H200], info: { [CPU]: cudaInfo } }));
    expect(c).toMatchObject({ binary: CPU, args: ['--device', 'cuda'], selection: { device: 'cuda' } });
  });

  it('nothing built', async () => {
    expect(await selectEngine(builds, 'auto', probe({ files: [], gpus: [H200] }))).toMatchObject({ binary: null, args: [], selection: { device: null, reason: 'No engine is built.' } });
  });
});

describe('reading nvidia-smi and the worker', () => {
  it('parses nvidia-smi CSV and the worker info line', () => {
    expect(parseNvidiaSmi('NVIDIA H200, 570.86.15, 143771\nNVIDIA GeForce RTX 4090, 550.54.14, [N/A]\n')).toEqual([H200, { name: 'NVIDIA GeForce RTX 4090', driver: '550.54.14', memoryMiB: null }]);
    expect(parseNvidiaSmi('')).toEqual([]);
    expect(parseWorkerInfo('loading…\n{"ok":true,"result":{"torch":"2.5.1","cuda_available":true}}\n')).toEqual({ ok: true, torch: '2.5.1', cuda: true });
    expect(parseWorkerInfo('{"ok":false,"error":{}}')).toBeNull();
  });

  it('asks the real worker build what it is', async () => {
    const worker = join(ROOT, 'native', 'build', 'shira-worker');
    const info = await systemProbe.workerInfo(worker);
    expect(info).toMatchObject({ ok: true, cuda: false });
    expect((info as { torch: string }).torch).toMatch(/^\d+\.\d+/);
  });

  it.skipIf(!hasCc)('a worker missing a library, or missing altogether', async () => {
    const d = tempDir('shira-probe-');
    cleanups.push(d.cleanup);
    const { executable } = binariesMissingALibrary(d.path);
    expect(await systemProbe.workerInfo(executable)).toMatchObject({ ok: false, problem: 'missing-library', library: 'libshira_gone.so' });
    expect(await systemProbe.workerInfo(join(d.path, 'absent'))).toMatchObject({ ok: false, problem: 'missing-binary' });
  });
});

describe('the core runs the chosen build, and Engine → Device switches it', () => {
  it('starts the CUDA build on the GPU, then the CPU build once the setting says CPU', async () => {
    const d = tempDir('shira-engines-');
    cleanups.push(d.cleanup);
    const cpu = fakeWorker(join(d.path, 'cpu-worker'), false, '2.5.1');
    const cuda = fakeWorker(join(d.path, 'cuda-worker'), true);
    // Only nvidia-smi is faked; the builds answer `info` for themselves.
    const { call, dataDir, cleanup } = makeCore({ worker: { binary: cpu, cuda, probe: { ...systemProbe, nvidiaGpus: async () => [H200] } } });
    cleanups.push(cleanup);
    const first = await call('worker.status', { start: true });
    expect(first).toMatchObject({ available: true, state: 'ready', binary: cuda, device: 'cuda', selection: { preference: 'auto', device: 'cuda', builds: { cpu: true, cuda: true } } });

    const switched = await call('worker.setDevice', { device: 'cpu' });
    expect(switched).toMatchObject({ state: 'ready', binary: cpu, device: 'cpu', torch: '2.5.1', selection: { preference: 'cpu', device: 'cpu' } });
    expect(JSON.parse(readFileSync(join(dataDir, 'settings.json'), 'utf8'))).toEqual({ device: 'cpu' });
    expect(readFileSync(join(dataDir, 'logs', 'core.log'), 'utf8')).toMatch(/engine: .*cpu-worker --device cpu: CPU, as chosen/);
  });

  it('keeps the setting across restarts and ignores a damaged settings file', async () => {
    const d = tempDir('shira-engines-');
    cleanups.push(d.cleanup);
    const cpu = fakeWorker(join(d.path, 'cpu-worker'), false);
    const cuda = fakeWorker(join(d.path, 'cuda-worker'), true);
    const opts = { dataDir: d.path, worker: { binary: cpu, cuda, probe: { ...systemProbe, nvidiaGpus: async () => [H200] } } };
    const a = makeCore(opts);
    await a.call('worker.setDevice', { device: 'cpu' });
    await a.cleanup();
    const b = makeCore(opts);
    expect((await b.call('worker.status', { start: false })).selection?.preference).toBe('cpu');
    await expect(b.call('worker.setDevice', { device: 'tpu' as never })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringContaining('expected one of "auto", "cpu", "gpu"') });
    await b.cleanup();
    writeFileSync(join(d.path, 'settings.json'), '{"device": "cpu"');
    const c = makeCore(opts);
    cleanups.push(c.cleanup);
    expect((await c.call('worker.status', { start: true })).selection).toMatchObject({ preference: 'auto', device: 'cuda' });
  });
});
