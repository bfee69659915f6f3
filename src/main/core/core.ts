// The plain-Node core: one database, one API registry, one event stream. Hosts (Electron's
// utility process, the studio server, tests) construct it and relay messages; that is all they do.
// This folder must never import `electron` (tests/unit/layering.test.ts enforces it).
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import type { BaseModel, DevicePreference, HostKind, MediaKind, NativeCheck, NativeReport, WorkerStatus } from '../../shared/api';
import { badInput, conflict, unsupported } from '../../shared/errors';
import { openDatabase, schemaVersion, type Db } from './db/database';
import { LibraryChecker } from './db/checker';
import { removeLeftovers } from './leftovers';
import { EventBus } from './events';
import { Logger } from './logger';
import { ApiRegistry, type Handlers } from './registry';
import { DatasetImporter } from './datasets/import';
import { DatasetRepo } from './datasets/repo';
import { FORMAT_LABELS, MAX_INPUT_PIXELS } from './datasets/images';
import { MAX_IMPORT_FILES } from './datasets/scan';
import { APP_NAME } from './paths';
import { WorkerError, WorkerSupervisor } from './worker/supervisor';
import { selectEngine, systemProbe, type EngineBuilds, type EngineChoice, type EngineProbe } from './worker/select';
import { checkContext, checkModules, failedCheck, nativeReport, type CheckContext } from './runtime/native-check';
import { readSettings, writeSettings } from './runtime/settings';
import { findBuiltinModels, registerBuiltinModels } from './models/builtin';
import { AdapterLibrary, adapterCacheDir } from './adapters/library';
import { Mixer } from './adapters/mixer';
import { TrainingQueue } from './jobs/training';
import { Generations } from './generate/generations';
import { ConceptService } from './concept/service';
import { OrtService } from './ort/service';
import { WordChecker } from './models/words';

export const APP_VERSION = '0.1.0';

/** Where exports go unless the desktop user picks a folder. */
export function exportsDir(dataDir: string): string {
  return join(dataDir, 'exports');
}

/** Where the studio server stages browser uploads (one sub-folder per upload). */
export function uploadsDir(dataDir: string): string {
  return join(dataDir, 'uploads');
}

export interface CoreOptions {
  dataDir: string;
  host: HostKind;
  /** Overrides `<dataDir>/library.sqlite`; `:memory:` for tests. */
  databaseFile?: string;
  /** Where the shipped base models live (`<resources>/models/<name>/`); registered at start. */
  resourcesDir?: string;
  /**
   * The native shira-worker; null when none is built. Started on first use, not at start-up. With
   * `cuda` (the CUDA build beside `binary`, null for none) the core chooses build and device at each
   * engine start (worker/select.ts, Engine → Device in settings.json) and `args` is not used.
   */
  worker?: { binary: string; args?: string[]; threads?: number; cuda?: string | null; probe?: EngineProbe } | null;
  /** better-sqlite3's binary for this runtime (Electron's own build: runtime/layout.ts); default: the package's. */
  sqliteBinding?: string | null;
  /** Installed from an installer: fixes name the installer, not build commands. */
  packaged?: boolean;
  /** The host's start-up check of the in-process native modules, reused by `app.health`. */
  nativeChecks?: NativeCheck[];
}

export interface Media {
  bytes: Buffer;
  mime: string;
}

export class Core {
  readonly db: Db;
  readonly events = new EventBus();
  readonly log: Logger;
  readonly registry: ApiRegistry;
  readonly dataDir: string;
  private readonly datasets_: DatasetRepo;
  private readonly importer_: DatasetImporter;
  private readonly worker_: WorkerSupervisor | null;
  /** A second engine process for training, so generating and mixing stay possible meanwhile. */
  private readonly trainer_: WorkerSupervisor | null;
  private readonly workerBinary_: string | null;
  private readonly probe_: EngineProbe;
  private readonly checkContext_: CheckContext;
  private nativeChecks_: NativeCheck[] | null;
  /** The engine chosen for this session; cleared when Engine → Device changes. */
  private choice_: Promise<EngineChoice> | null = null;
  private readonly builds_: EngineBuilds | null;
  readonly adapters: AdapterLibrary;
  readonly mixer: Mixer;
  readonly training: TrainingQueue;
  readonly generations: Generations;
  readonly ort: OrtService;
  readonly concept: ConceptService;
  private readonly checker_: LibraryChecker;
  private readonly words_: WordChecker;

  constructor(options: CoreOptions) {
    this.dataDir = options.dataDir;
    const dbFile = options.databaseFile ?? join(options.dataDir, 'library.sqlite');
    this.log = new Logger(options.databaseFile === ':memory:' ? null : join(options.dataDir, 'logs', 'core.log'), this.events);
    this.db = openDatabase(dbFile, undefined, options.sqliteBinding ?? null);
    this.checker_ = new LibraryChecker(this.db, dbFile === ':memory:' ? null : dbFile, (message, error) => this.log.warn(message, error), options.sqliteBinding ?? null);
    this.checkContext_ = checkContext(options.packaged ?? false, options.sqliteBinding ?? null);
    this.nativeChecks_ = options.nativeChecks ?? null;
    this.probe_ = cachedProbe(options.worker?.probe ?? systemProbe);
    const leftovers = removeLeftovers(
      { tmp: join(options.dataDir, 'tmp'), adapterCache: adapterCacheDir(options.dataDir), exports: exportsDir(options.dataDir) },
      (sha256) => this.db.prepare('SELECT 1 FROM adapters WHERE file_sha256 = ?').get(sha256) !== undefined,
    );
    if (leftovers.length) this.log.info(`removed ${leftovers.length} leftover(s) of interrupted work: ${leftovers.join(', ')}`);
    if (options.resourcesDir) registerBuiltinModels(this.db, findBuiltinModels(options.resourcesDir));
    this.datasets_ = new DatasetRepo(this.db);
    this.importer_ = new DatasetImporter(this.db, this.datasets_, this.events, join(options.dataDir, 'tmp'), uploadsDir(options.dataDir));
    this.workerBinary_ = options.worker?.binary ?? null;
    const w = options.worker;
    const selecting = w?.cuda !== undefined;
    this.builds_ = w && selecting ? { cpu: w.binary, cuda: w.cuda ?? null, packaged: options.packaged ?? false } : null;
    const launch = selecting ? () => this.launchChoice() : undefined;
    const engine = (name: string) =>
      w && (this.probe_.exists(w.binary) || (selecting && w.cuda !== null && this.probe_.exists(w.cuda!)))
        ? new WorkerSupervisor({
            binary: w.binary,
            args: w.args,
            launch,
            threads: w.threads ?? availableParallelism(),
            logFile: join(options.dataDir, 'logs', `${name}.log`),
          })
        : null;
    this.worker_ = engine('worker');
    this.trainer_ = engine('trainer');
    this.adapters = new AdapterLibrary(this.db, adapterCacheDir(options.dataDir));
    this.mixer = new Mixer(this.db, this.adapters, () => this.worker_);
    this.ort = new OrtService({ dataDir: options.dataDir, worker: () => this.worker_, threads: options.worker?.threads ?? availableParallelism() });
    this.generations = new Generations(this.db, this.mixer, this.adapters, () => this.worker_, this.ort, (fn) => this.serial(fn), join(options.dataDir, 'tmp'), (e) => this.events.emit(e));
    this.words_ = new WordChecker(this.db);
    this.concept = new ConceptService(this.db, this.adapters, this.mixer, () => this.worker_, join(options.dataDir, 'tmp'), (e) => this.events.emit(e));
    this.training = new TrainingQueue(this.db, this.adapters, this.events, this.log, join(options.dataDir, 'jobs'), this.trainer_);
    this.registry = new ApiRegistry(this.handlers(options.host), (method, error) => this.log.error(`internal error in ${method}`, error));
    this.log.info(`core started (${options.host}) with library ${dbFile}, schema v${schemaVersion(this.db)}`);
    this.training.start();
  }

  /** Images by URL for both hosts (`/media/<kind>/<id>` and `shira-media://<kind>/<id>`). */
  media(kind: MediaKind, id: number): Media | null {
    const bytes =
      kind === 'generation' || kind === 'generation-thumb'
        ? this.generations.media(id, kind === 'generation-thumb')
        : kind === 'training-sample'
          ? this.training.sampleMedia(id)
          : this.datasets_.media(kind, id);
    if (!bytes) return null;
    return { bytes, mime: kind === 'thumb' || kind === 'generation-thumb' ? 'image/webp' : 'image/png' };
  }

  /** The supervised native worker, or null when none is built. */
  get worker(): WorkerSupervisor | null {
    return this.worker_;
  }

  /**
   * Work on the mixing/generation engine runs one call at a time: the worker answers "busy" to a
   * model-changing op while it samples, and a slider dragged during a generation must wait, not fail.
   */
  private lane_: Promise<unknown> = Promise.resolve();
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lane_.then(fn, fn);
    this.lane_ = run.catch(() => {});
    return run;
  }

  /** The training engine process (tests kill it to check crash recovery). */
  get trainer(): WorkerSupervisor | null {
    return this.trainer_;
  }

  async close(): Promise<void> {
    await this.checker_.close();
    await this.training.close();
    await this.ort.close();
    await this.trainer_?.close();
    await this.worker_?.close();
    this.db.close();
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
  private async setDevice(device: DevicePreference): Promise<WorkerStatus> {
    if (this.training.list('running').length) throw conflict('A training job is running. Change the device when it has finished, or cancel it first.');
    writeSettings(this.dataDir, { device });
    this.choice_ = null;
    await this.serial(async () => {
      await this.worker_?.stop();
      await this.trainer_?.stop();
    });
    return this.workerStatus(true);
  }

  /** The self-check behind `app.health`: in-process modules (the host's start-up check), then the engine. */
  private async nativeReport(): Promise<NativeReport> {
    this.nativeChecks_ ??= checkModules(this.checkContext_);
    const binary = (await this.engineChoice())?.binary ?? (this.workerBinary_ && this.probe_.exists(this.workerBinary_) ? this.workerBinary_ : null);
    let engine: NativeCheck;
    if (!binary) {
      engine = failedCheck('engine', { problem: 'missing-binary', detail: `${this.workerBinary_ ?? 'shira-worker'} does not exist` }, this.checkContext_, false, this.workerBinary_);
    } else if (this.worker_?.state === 'ready') {
      // Its readiness line already proved it loads; no second process just to ask.
      engine = { module: 'engine', ok: true, required: false, path: binary };
    } else {
      const probe = await this.probe_.workerInfo(binary);
      engine = probe.ok ? { module: 'engine', ok: true, required: false, path: binary } : failedCheck('engine', probe, this.checkContext_, false, binary);
    }
    return nativeReport(this.checkContext_, [...this.nativeChecks_, engine]);
  }

  private async workerStatus(start: boolean): Promise<WorkerStatus> {
    const w = this.worker_;
    if (!w) {
      return {
        available: false,
        state: 'stopped',
        binary: this.workerBinary_,
        reason: this.workerBinary_
          ? `The native engine is not built (${this.workerBinary_} is missing). Run \`npm start\` once to build it.`
          : 'No native engine is configured for this host.',
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
      binary: choice ? choice.binary : this.workerBinary_,
      ...(choice ? { selection: choice.selection } : {}),
      ...(typeof info.version === 'string' ? { version: info.version } : {}),
      ...(typeof info.device === 'string' ? { device: info.device } : {}),
      ...(typeof info.torch === 'string' ? { torch: info.torch } : {}),
      ...(typeof info.cuda === 'boolean' ? { cuda: info.cuda } : {}),
      ...(w.state === 'failed' ? { reason: 'The native engine failed to start or kept crashing; see logs/worker.log.' } : {}),
    };
  }

  private handlers(host: HostKind): Handlers {
    const datasets = this.datasets_;
    return {
      'app.info': () => ({
        name: APP_NAME,
        version: APP_VERSION,
        host,
        dataDir: this.dataDir,
        schemaVersion: schemaVersion(this.db),
        platform: `${process.platform}-${process.arch}`,
        limits: { maxInputPixels: MAX_INPUT_PIXELS, maxImportFiles: MAX_IMPORT_FILES, imageFormats: FORMAT_LABELS },
      }),
      'app.health': async ({ full }) => ({ ...(await this.checker_.check(full ?? false)), native: await this.nativeReport() }),
      'models.list': () => listModels(this.db),
      'worker.status': ({ start }) => this.workerStatus(start ?? false),
      'worker.setDevice': ({ device }) => this.setDevice(device),
      'datasets.list': () => datasets.list(),
      'datasets.get': ({ id }) => datasets.get(id),
      'datasets.import': (input) => this.importer_.run(input),
      'datasets.cancelImport': ({ importId }) => ({ cancelled: this.importer_.cancel(importId) }),
      'datasets.update': ({ id, ...patch }) => {
        const result = datasets.update(id, patch);
        this.events.emit({ type: 'library.changed', what: 'datasets', id });
        return result;
      },
      'datasets.setCaption': ({ imageId, caption }) => datasets.setCaption(imageId, caption),
      'datasets.removeImage': ({ imageId }) => {
        const { datasetId } = datasets.image(imageId);
        const removed = datasets.removeImage(imageId);
        this.events.emit({ type: 'library.changed', what: 'datasets', id: datasetId });
        return { removed };
      },
      'datasets.delete': ({ id }) => {
        const deleted = datasets.delete(id);
        this.events.emit({ type: 'library.changed', what: 'datasets', id });
        return { deleted };
      },
      'adapters.list': (filter) => this.adapters.list(filter),
      'adapters.get': ({ id }) => this.adapters.detail(id),
      'adapters.update': ({ id, ...patch }) => {
        const summary = this.adapters.update(id, patch);
        this.events.emit({ type: 'library.changed', what: 'adapters', id });
        return summary;
      },
      'adapters.duplicate': ({ id, name }) => {
        const summary = this.adapters.duplicate(id, name);
        this.events.emit({ type: 'library.changed', what: 'adapters', id: summary.id });
        return summary;
      },
      'adapters.delete': async ({ id }) => {
        await this.serial(() => this.mixer.forget(id));
        const deleted = this.adapters.delete(id);
        if (deleted) this.events.emit({ type: 'library.changed', what: 'adapters', id });
        return { deleted };
      },
      'adapters.export': ({ id, dir }) => {
        // A studio-server client is not the server machine's user: it gets downloads
        // (/download/adapter/…), or the data folder's exports, never a path of its choosing.
        if (dir !== undefined && host === 'server') {
          throw badInput(`The studio server does not write exports to folders a client names; leave out "dir" to export into ${exportsDir(this.dataDir)}, or download the adapter from the browser.`, { path: 'dir' });
        }
        return this.adapters.exportPackage(id, dir ?? exportsDir(this.dataDir));
      },
      'adapters.import': async ({ path, name, baseModelId }) => {
        const w = this.worker_;
        const tmp = join(this.dataDir, 'tmp');
        const converted: string[] = [];
        // What the worker finds wrong with the user's file (a bad checksum, an unknown layout) is
        // the file's problem, not an internal error; the core has checked the container before.
        const onFile = async <T>(work: () => Promise<T>): Promise<T> => {
          try {
            return await work();
          } catch (error) {
            if (error instanceof WorkerError && error.error.type !== 'internal') {
              throw badInput(`${basename(path)}: ${error.error.message.replace(/^adapter '[^']*': /, '')}`);
            }
            throw error;
          }
        };
        try {
          const summary = await this.adapters.importPackage(path, {
            name,
            baseModelId,
            convert: w
              ? async (src) => {
                  // PEFT files store no layer shapes: the worker takes them from the loaded base model.
                  await this.serial(() => this.mixer.ensureBase(baseModelId));
                  mkdirSync(tmp, { recursive: true });
                  const out = join(tmp, `convert-${process.pid}-${Date.now()}.safetensors`);
                  converted.push(out);
                  await onFile(() => w.request('adapter_convert', { path: src, out }));
                  return out;
                }
              : undefined,
            // The worker decodes every index and checks its checksum before anything is stored.
            verify: w ? (file) => onFile(async () => void (await w.request('adapter_inspect', { path: file }))) : undefined,
          });
          this.events.emit({ type: 'library.changed', what: 'adapters', id: summary.id });
          return summary;
        } finally {
          for (const f of converted) rmSync(f, { force: true });
        }
      },
      'mix.apply': async ({ entries, mixId }) => {
        if ((entries === undefined) === (mixId === undefined)) throw badInput('Give either entries or mixId.');
        const chosen = entries ?? this.mixer.mixEntries(mixId!);
        return this.serial(() => this.mixer.apply(chosen));
      },
      'mix.current': () => this.mixer.current(),
      'mixes.list': () => this.mixer.listMixes(),
      'mixes.save': (input) => {
        const mix = this.mixer.saveMix(input);
        this.events.emit({ type: 'library.changed', what: 'mixes', id: mix.id });
        return mix;
      },
      'mixes.delete': ({ id }) => {
        const deleted = this.mixer.deleteMix(id);
        if (deleted) this.events.emit({ type: 'library.changed', what: 'mixes', id });
        return { deleted };
      },
      'training.start': (req) => {
        if (!this.trainer_) throw unsupported('The native engine is not built, so nothing can be trained. Run `npm start` once to build it.');
        return this.training.enqueue(req);
      },
      'training.list': ({ status }) => this.training.list(status),
      'training.get': ({ id }) => this.training.get(id),
      'training.cancel': ({ id }) => this.training.cancel(id),
      'training.samples': ({ id }) => this.training.samples(id),
      'generate': async (req) => {
        const images = await this.generations.generate(req);
        this.events.emit({ type: 'library.changed', what: 'generations' });
        return images;
      },
      'concept.evaluate': (req) => this.serial(() => this.concept.evaluate(req)),
      'concept.latest': ({ adapterIds }) => this.concept.latest(adapterIds),
      'engines.choice': async ({ remeasure }) => {
        const base = this.mixer.resolveBase([]);
        if (!base.weights_path) throw unsupported(`Base model "${base.name}" has no weights file.`);
        return this.serial(() => this.ort.chooseEngine(base.weights_path!, remeasure ?? false));
      },
      'generations.list': (o) => this.generations.list(o),
      'generations.get': ({ id }) => this.generations.get(id),
      'generations.setFavourite': ({ id, favourite }) => this.generations.setFavourite(id, favourite),
      'generations.delete': ({ id }) => {
        const deleted = this.generations.delete(id);
        if (deleted) this.events.emit({ type: 'library.changed', what: 'generations', id });
        return { deleted };
      },
      // ---- issue 24 ----
      'models.checkWords': ({ text, baseModelId, suggest }) => this.words_.check(text, baseModelId, suggest ?? false),
      'datasets.setCaptions': ({ datasetId, captions }) => {
        const dataset = datasets.setCaptions(datasetId, captions);
        this.events.emit({ type: 'library.changed', what: 'datasets', id: datasetId });
        return dataset;
      },
      'training.loss': ({ id }) => this.training.loss(id),
      'gallery.list': (o) => this.generations.gallery(o),
      'generations.setPixelArt': ({ id, pixelArt }) => this.generations.setPixelArt(id, pixelArt),
      'grids.save': (input) => {
        const grid = this.generations.saveGrid(input);
        this.events.emit({ type: 'library.changed', what: 'generations' });
        return grid;
      },
      'grids.get': ({ id }) => this.generations.grid(id),
      'grids.delete': ({ id }) => {
        const deleted = this.generations.deleteGrid(id);
        if (deleted) this.events.emit({ type: 'library.changed', what: 'generations' });
        return { deleted };
      },
    };
  }
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

function listModels(db: Db): BaseModel[] {
  const rows = db.prepare('SELECT * FROM base_models ORDER BY is_default DESC, name').all() as {
    id: number;
    name: string;
    family: string;
    resolution: number;
    weights_hash: string | null;
    is_default: number;
    created_at: string;
  }[];
  return rows.map((r) => ({ id: r.id, name: r.name, family: r.family, resolution: r.resolution, weightsHash: r.weights_hash, isDefault: r.is_default === 1, createdAt: r.created_at }));
}
