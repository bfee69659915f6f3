// Which worker build runs, on which device. Set-up builds a CPU worker and, where it finds a CUDA
// libtorch, a CUDA worker beside it (scripts/setup.mjs); this picks between them at the engine's
// start from three facts read at the boundary — which binaries exist, what nvidia-smi lists, what the
// worker's own `info` says (`cuda_available`) — and the user's Engine → Device setting.
//
//   preference  CUDA build sees a GPU   → choice
//   auto / gpu  yes                     → CUDA build, --device cuda (a CPU-folder build linked to a
//                                          CUDA libtorch counts as one)
//   auto / gpu  no (or no CUDA build)   → CPU build, --device cpu; advice when nvidia-smi lists a GPU
//   cpu         —                       → CPU build (the CUDA build with --device cpu if it is the only one)
//
// A CUDA libtorch also runs on the CPU, so a lone CUDA build serves both; a CPU build is never asked
// for CUDA. Probing costs one `nvidia-smi` and one `shira-worker info` per build, once per session.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { DevicePreference, EngineSelection, GpuInfo } from '../../../shared/api';
import { classifyLoadError, isDriverLibrary, NVIDIA_DRIVER, type LoadFailure } from '../runtime/native-check';

export type WorkerProbe = { ok: true; torch: string | null; cuda: boolean } | ({ ok: false } & LoadFailure);

/** The boundary: everything selection reads from the machine. Tests fake it. */
export interface EngineProbe {
  exists(path: string): boolean;
  /** GPUs nvidia-smi lists; null when nvidia-smi is not there or fails. */
  nvidiaGpus(): Promise<GpuInfo[] | null>;
  workerInfo(binary: string): Promise<WorkerProbe>;
}

export interface EngineBuilds {
  cpu: string;
  cuda: string | null;
  /** Installed app: advice names an installer, not build commands. */
  packaged: boolean;
}

export interface EngineChoice {
  /** null when no worker is built at all. */
  binary: string | null;
  /** `--device cpu|cuda`: a CUDA libtorch would otherwise pick the GPU on its own. */
  args: string[];
  selection: EngineSelection;
}

/** Parses `nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(csv: string): GpuInfo[] {
  return csv
    .split('\n')
    .map((line) => line.split(',').map((f) => f.trim()))
    .filter((f) => f.length >= 1 && f[0])
    .map(([name, driver, memory]) => ({ name: name!, driver: driver || null, memoryMiB: memory && /^\d+$/.test(memory) ? Number(memory) : null }));
}

/** Parses `shira-worker info` output: its last JSON line is `{"ok":true,"result":{…}}`. */
export function parseWorkerInfo(stdout: string): WorkerProbe | null {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    try {
      const m = JSON.parse(line) as { ok?: boolean; result?: { torch?: unknown; cuda_available?: unknown } };
      if (m.ok === true && m.result) return { ok: true, torch: typeof m.result.torch === 'string' ? m.result.torch : null, cuda: m.result.cuda_available === true };
    } catch {
      // not JSON: log noise before the result
    }
  }
  return null;
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1 << 20, windowsHide: true, env: { ...process.env, OMP_NUM_THREADS: '1' } }, (error, stdout, stderr) => {
      const e = error as (NodeJS.ErrnoException & { code?: unknown }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout: String(stdout), stderr: String(stderr), ...(e ? { error: e } : {}) });
    });
  });
}

export const systemProbe: EngineProbe = {
  exists: (path) => existsSync(path),
  async nvidiaGpus() {
    const r = await run('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader,nounits'], 10_000);
    return r.error ? null : parseNvidiaSmi(r.stdout);
  },
  async workerInfo(binary) {
    // A CUDA libtorch initialises the driver here: seconds, once.
    const r = await run(binary, ['info'], 60_000);
    const parsed = r.error ? null : parseWorkerInfo(r.stdout);
    if (parsed) return parsed;
    if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, ...classifyLoadError(r.error) };
    // The dynamic loader's complaint ("error while loading shared libraries: X: cannot open …") is on stderr.
    const failure = classifyLoadError(new Error(r.stderr || r.error?.message || `exit code ${r.code}`));
    return { ok: false, ...failure };
  },
};

function gpuName(gpus: GpuInfo[]): string {
  return gpus.length === 1 ? gpus[0]!.name : `${gpus.length} GPUs (${gpus[0]!.name}, …)`;
}

/** What to install for the GPU to be used, when an NVIDIA GPU is present and no CUDA build is. */
export function installAdvice(gpus: GpuInfo[], packaged: boolean): string {
  return packaged
    ? `This computer has an NVIDIA GPU (${gpuName(gpus)}), but this installation has only the CPU engine. Install the CUDA edition of Shira Studio to use it.`
    : `This computer has an NVIDIA GPU (${gpuName(gpus)}), but only the CPU engine is built. Install PyTorch with CUDA (pip install torch --index-url https://download.pytorch.org/whl/cu128) and run \`npm run setup\`: it builds the CUDA engine in native/build-cuda.`;
}

export async function selectEngine(builds: EngineBuilds, preference: DevicePreference, probe: EngineProbe = systemProbe): Promise<EngineChoice> {
  const has = { cpu: probe.exists(builds.cpu), cuda: builds.cuda !== null && probe.exists(builds.cuda) };
  const gpus = (await probe.nvidiaGpus()) ?? [];
  const choice = (binary: string | null, device: 'cpu' | 'cuda' | null, reason: string, advice?: string): EngineChoice => ({
    binary,
    args: device ? ['--device', device] : [],
    selection: { preference, device, builds: has, gpus, reason, ...(advice ? { advice } : {}) },
  });
  if (!has.cpu && !has.cuda) return choice(null, null, 'No engine is built.');
  const onCpu = (reason: string, advice?: string) => choice(has.cpu ? builds.cpu : builds.cuda, 'cpu', reason, advice);
  const onCuda = (binary: string, torch: string | null) => choice(binary, 'cuda', `CUDA on ${gpus.length ? gpuName(gpus) : 'the GPU'}${torch ? ` (libtorch ${torch})` : ''}.`);
  if (preference === 'cpu') return onCpu('CPU, as chosen under Engine → Device.');

  const asked = preference === 'gpu' ? 'GPU was chosen, but ' : '';
  if (has.cuda) {
    const info = await probe.workerInfo(builds.cuda!);
    if (info.ok && info.cuda) return onCuda(builds.cuda!, info.torch);
    if (!info.ok) {
      const rebuild = `Rebuild the CUDA engine: ${builds.packaged ? 'reinstall Shira Studio' : 'npm run setup'}.`;
      return onCpu(
        `${asked}the CUDA engine does not start (${info.library ? `the library ${info.library} is missing` : info.detail}); using the CPU.`,
        isDriverLibrary(info.library) ? NVIDIA_DRIVER : gpus.length ? rebuild : undefined,
      );
    }
    if (!gpus.length) return onCpu(`${asked}no GPU is visible (nvidia-smi lists none); using the CPU.`);
    return onCpu(
      `${asked}the CUDA engine cannot use ${gpuName(gpus)}; using the CPU.`,
      `Update the NVIDIA driver to one that supports this libtorch's CUDA version (installed driver: ${gpus[0]!.driver ?? 'unknown'}).`,
    );
  }
  if (!gpus.length) return onCpu(`${asked}no NVIDIA GPU is visible; using the CPU.`);
  // native/build itself may have been built against a CUDA libtorch (Torch_DIR): then it is the CUDA build.
  const info = await probe.workerInfo(builds.cpu);
  if (info.ok && info.cuda) return onCuda(builds.cpu, info.torch);
  return onCpu(`${asked}only the CPU engine is built; using the CPU.`, installAdvice(gpus, builds.packaged));
}
