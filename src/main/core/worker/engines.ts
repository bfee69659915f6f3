// The two engine processes the core runs — one holds the fused base model for mixing and generation, the other
// trains, so generating stays possible while an adapter trains — and what is decided about them: which build and
// device (select.ts, Engine → Device in settings.json), their status, the engine half of the health check, and
// the lane that serialises work on the mixing/generation engine.
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { DevicePreference, NativeCheck, NativeReport, WorkerStatus } from '../../../shared/api';
import { conflict, unsupported } from '../../../shared/errors';
import type { Logger } from '../logger';
import type { HandlersOf } from '../registry';
import { checkModules, failedCheck, nativeReport, type CheckContext } from '../runtime/native-check';
import { readSettings, writeSettings } from '../runtime/settings';
import { selectEngine, systemProbe, type EngineBuilds, type EngineChoice, type EngineProbe } from './select';
import { WorkerSupervisor } from './supervisor';

export interface EngineOptions {
  /**
   * The native shira-worker; null when none is built. Started on first use, not at start-up. With
   * `cuda` (the CUDA build beside `binary`, null for none) the build and device are chosen at each
   * engine start (select.ts, Engine → Device in settings.json) and `args` is not used.
   */
  worker?: { binary: string; args?: string[]; threads?: number; cuda?: string | null; probe?: EngineProbe } | null;
  packaged: boolean;
}

export class Engines {
  /** Mixing and generation: holds the fused base model. */
  readonly worker: WorkerSupervisor | null;
  /** Training jobs, so generating and mixing stay possible meanwhile. */
  readonly trainer: WorkerSupervisor | null;
  readonly threads: number;
  private readonly binary_: string | null;
  private readonly probe_: EngineProbe;
  private readonly builds_: EngineBuilds | null;
  /** The engine chosen for this session; cleared when Engine → Device changes. */
  private choice_: Promise<EngineChoice> | null = null;
  private nativeChecks_: NativeCheck[] | null;
  private lane_: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dataDir: string,
    options: EngineOptions,
    private readonly checkContext: CheckContext,
    nativeChecks: NativeCheck[] | null,
    private readonly log: Logger,
  ) {
    const w = options.worker;
    this.binary_ = w?.binary ?? null;
    this.threads = w?.threads ?? availableParallelism();
    this.nativeChecks_ = nativeChecks;
    this.probe_ = cachedProbe(w?.probe ?? systemProbe);
    const selecting = w?.cuda !== undefined;
    this.builds_ = w && selecting ? { cpu: w.binary, cuda: w.cuda ?? null, packaged: options.packaged } : null;
    const launch = selecting ? () => this.launchChoice() : undefined;
    const engine = (name: string) =>
      w && (this.probe_.exists(w.binary) || (selecting && w.cuda !== null && this.probe_.exists(w.cuda!)))
        ? new WorkerSupervisor({ binary: w.binary, args: w.args, launch, threads: this.threads, logFile: join(dataDir, 'logs', `${name}.log`) })
        : null;
    this.worker = engine('worker');
    this.trainer = engine('trainer');
  }

  /**
   * Work on the mixing/generation engine runs one call at a time: the worker answers "busy" to a
   * model-changing op while it samples, and a slider dragged during a generation must wait, not fail.
   */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lane_.then(fn, fn);
    this.lane_ = run.catch(() => {});
    return run;
  }

  async close(): Promise<void> {
    await this.trainer?.close();
    await this.worker?.close();
  }

  /** The engine build and device for this session (chosen once; again after Engine → Device changes). */
  private engineChoice(): Promise<EngineChoice> | null {
    if (!this.builds_) return null;
    this.choice_ ??= selectEngine(this.builds_, readSettings(this.dataDir).device, this.probe_).then((choice) => {
      const { reason, advice } = choice.selection;
      this.log.info(`engine: ${choice.binary ?? 'none'} ${choice.args.join(' ')}: ${reason}${advice ? ` ${advice}` : ''}`);
      return choice;
    });
    return this.choice_;
  }

  private async launchChoice(): Promise<{ binary: string; args: string[] }> {
    const choice = await this.engineChoice()!;
    if (!choice.binary) throw unsupported(`${choice.selection.reason} Run \`npm run setup\` to build it.`);
    return { binary: choice.binary, args: choice.args };
  }

  /** Engine → Device. The engines restart idle, so the next request runs on the new choice. */
  async setDevice(device: DevicePreference, trainingRuns: boolean): Promise<WorkerStatus> {
    if (trainingRuns) throw conflict('A training job is running. Change the device when it has finished, or cancel it first.');
    writeSettings(this.dataDir, { device });
    this.choice_ = null;
    await this.serial(async () => {
      await this.worker?.stop();
      await this.trainer?.stop();
    });
    return this.status(true);
  }

  /** The self-check behind `app.health`: in-process modules (the host's start-up check), then the engine. */
  async nativeReport(): Promise<NativeReport> {
    this.nativeChecks_ ??= checkModules(this.checkContext);
    const binary = (await this.engineChoice())?.binary ?? (this.binary_ && this.probe_.exists(this.binary_) ? this.binary_ : null);
    let engine: NativeCheck;
    if (!binary) {
      engine = failedCheck('engine', { problem: 'missing-binary', detail: `${this.binary_ ?? 'shira-worker'} does not exist` }, this.checkContext, false, this.binary_);
    } else if (this.worker?.state === 'ready') {
      // Its readiness line already proved it loads; no second process just to ask.
      engine = { module: 'engine', ok: true, required: false, path: binary };
    } else {
      const probe = await this.probe_.workerInfo(binary);
      engine = probe.ok ? { module: 'engine', ok: true, required: false, path: binary } : failedCheck('engine', probe, this.checkContext, false, binary);
    }
    return nativeReport(this.checkContext, [...this.nativeChecks_, engine]);
  }

  async status(start: boolean): Promise<WorkerStatus> {
    const w = this.worker;
    if (!w) {
      return {
        available: false,
        state: 'stopped',
        binary: this.binary_,
        reason: this.binary_ ? `The native engine is not built (${this.binary_} is missing). Run \`npm start\` once to build it.` : 'No native engine is configured for this host.',
      };
    }
    if (start && w.state !== 'ready') {
      try {
        await w.start();
      } catch (error) {
        this.log.warn('worker failed to start', error);
      }
    }
    const info = w.info ?? {};
    const choice = await this.engineChoice();
    return {
      available: true,
      state: w.state,
      binary: choice ? choice.binary : this.binary_,
      ...(choice ? { selection: choice.selection } : {}),
      ...(typeof info.version === 'string' ? { version: info.version } : {}),
      ...(typeof info.device === 'string' ? { device: info.device } : {}),
      ...(typeof info.torch === 'string' ? { torch: info.torch } : {}),
      ...(typeof info.cuda === 'boolean' ? { cuda: info.cuda } : {}),
      ...(w.state === 'failed' ? { reason: 'The native engine failed to start or kept crashing; see logs/worker.log.' } : {}),
    };
  }
}

export function engineHandlers(engines: Engines, trainingRuns: () => boolean): HandlersOf<'worker'> {
  return {
    'worker.status': ({ start }) => engines.status(start ?? false),
    'worker.setDevice': ({ device }) => engines.setDevice(device, trainingRuns()),
  };
}

/** Selection and the health check ask the same questions; each is answered once per session. */
function cachedProbe(probe: EngineProbe): EngineProbe {
  let gpus: ReturnType<EngineProbe['nvidiaGpus']> | null = null;
  const infos = new Map<string, ReturnType<EngineProbe['workerInfo']>>();
  return {
    exists: (path) => probe.exists(path),
    nvidiaGpus: () => (gpus ??= probe.nvidiaGpus()),
    workerInfo: (binary) => {
      let info = infos.get(binary);
      if (!info) infos.set(binary, (info = probe.workerInfo(binary)));
      return info;
    },
  };
}
