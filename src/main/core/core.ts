// The plain-Node core: one database, one API registry, one event stream. Hosts (Electron's
// utility process, the studio server, tests) construct it and relay messages; that is all they do.
// Each domain (app, worker, models, datasets, adapters + mixes, training, generations, concept, engines) owns its
// classes and exports its API handlers; this file builds the domains and assembles their handlers, nothing more.
// This folder must never import `electron` (tests/unit/layering.test.ts enforces it).
import { join } from 'node:path';
import type { HostKind, MediaKind, NativeCheck } from '../../shared/api';
import { openDatabase, schemaVersion, type Db } from './db/database';
import { LibraryChecker } from './db/checker';
import { removeLeftovers } from './leftovers';
import { EventBus } from './events';
import { Logger } from './logger';
import { exportsDir, uploadsDir } from './paths';
import { ApiRegistry, type Handlers } from './registry';
import { appHandlers } from './app/handlers';
import { Engines, engineHandlers, type EngineOptions } from './worker/engines';
import { checkContext } from './runtime/native-check';
import { findBuiltinModels, registerBuiltinModels } from './models/builtin';
import { Checkpoints } from './models/checkpoints';
import { modelHandlers } from './models/handlers';
import { WordChecker } from './models/words';
import { DatasetImporter } from './datasets/import';
import { DatasetRepo } from './datasets/repo';
import { datasetHandlers } from './datasets/handlers';
import { AdapterFileCache, adapterCacheDir } from './adapters/cache';
import { AdapterLibrary } from './adapters/library';
import { AdapterPackages } from './adapters/packages';
import { Mixer } from './adapters/mixer';
import { SavedMixes } from './adapters/mixes';
import { adapterHandlers, mixHandlers } from './adapters/handlers';
import { TrainingQueue } from './jobs/training';
import { trainingHandlers } from './jobs/handlers';
import { Generations } from './generate/generations';
import { generationHandlers } from './generate/handlers';
import { ConceptService } from './concept/service';
import { conceptHandlers } from './concept/handlers';
import { OrtService } from './ort/service';
import { ortHandlers } from './ort/handlers';

export interface CoreOptions {
  dataDir: string;
  host: HostKind;
  /** Overrides `<dataDir>/library.sqlite`; `:memory:` for tests. */
  databaseFile?: string;
  /** Where the shipped base models live (`<resources>/models/<name>/`); registered at start. */
  resourcesDir?: string;
  /** The native shira-worker and how its build is chosen (worker/engines.ts); null when none is built. */
  worker?: EngineOptions['worker'];
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
  readonly engines: Engines;
  readonly adapters: AdapterLibrary;
  readonly packages: AdapterPackages;
  readonly mixer: Mixer;
  readonly training: TrainingQueue;
  readonly generations: Generations;
  readonly ort: OrtService;
  readonly concept: ConceptService;
  readonly checkpoints: Checkpoints;
  private readonly datasets_: DatasetRepo;
  private readonly checker_: LibraryChecker;

  constructor(options: CoreOptions) {
    const dataDir = (this.dataDir = options.dataDir);
    const tmp = join(dataDir, 'tmp');
    const emit = this.events.emit.bind(this.events);
    const dbFile = options.databaseFile ?? join(dataDir, 'library.sqlite');
    this.log = new Logger(options.databaseFile === ':memory:' ? null : join(dataDir, 'logs', 'core.log'), this.events);
    this.db = openDatabase(dbFile, undefined, options.sqliteBinding ?? null);
    this.checker_ = new LibraryChecker(this.db, dbFile === ':memory:' ? null : dbFile, (message, error) => this.log.warn(message, error), options.sqliteBinding ?? null);
    const leftovers = removeLeftovers(
      { tmp, adapterCache: adapterCacheDir(dataDir), exports: exportsDir(dataDir) },
      (sha256) => this.db.prepare('SELECT 1 FROM adapters WHERE file_sha256 = ?').get(sha256) !== undefined,
    );
    if (leftovers.length) this.log.info(`removed ${leftovers.length} leftover(s) of interrupted work: ${leftovers.join(', ')}`);
    if (options.resourcesDir) registerBuiltinModels(this.db, findBuiltinModels(options.resourcesDir));

    const packaged = options.packaged ?? false;
    const engines = (this.engines = new Engines(dataDir, { worker: options.worker, packaged }, checkContext(packaged, options.sqliteBinding ?? null), options.nativeChecks ?? null, this.log));
    const worker = () => engines.worker;
    this.datasets_ = new DatasetRepo(this.db);
    const importer = new DatasetImporter(this.db, this.datasets_, this.events, tmp, uploadsDir(dataDir));
    const cache = new AdapterFileCache(adapterCacheDir(dataDir));
    this.adapters = new AdapterLibrary(this.db, cache);
    this.packages = new AdapterPackages(this.db, this.adapters, cache);
    this.mixer = new Mixer(this.db, this.adapters, worker);
    const mixes = new SavedMixes(this.db, this.adapters);
    this.ort = new OrtService({ dataDir, worker, threads: engines.threads });
    this.generations = new Generations(this.db, this.mixer, this.adapters, worker, this.ort, (fn) => engines.serial(fn), tmp, emit);
    this.concept = new ConceptService(this.db, this.adapters, this.mixer, worker, tmp, emit);
    this.checkpoints = new Checkpoints(this.db, emit, this.log);
    this.training = new TrainingQueue(this.db, this.adapters, this.events, this.log, join(dataDir, 'jobs'), engines.trainer);

    const adapterDomain = { library: this.adapters, packages: this.packages, mixer: this.mixer, mixes, engines, events: this.events, host: options.host, dataDir };
    const handlers: Handlers = {
      ...appHandlers({ host: options.host, dataDir, db: this.db, checker: this.checker_, engines }),
      ...engineHandlers(engines, () => this.training.list('running').length > 0),
      ...modelHandlers(this.checkpoints, new WordChecker(this.db)),
      ...datasetHandlers(this.datasets_, importer, this.events),
      ...adapterHandlers(adapterDomain),
      ...mixHandlers(adapterDomain),
      ...trainingHandlers(this.training, engines.trainer !== null),
      ...generationHandlers(this.generations, this.events),
      ...conceptHandlers(this.concept, engines),
      ...ortHandlers(this.ort, this.mixer, engines),
    };
    this.registry = new ApiRegistry(handlers, (method, error) => this.log.error(`internal error in ${method}`, error));
    this.log.info(`core started (${options.host}) with library ${dbFile}, schema v${schemaVersion(this.db)}`);
    this.training.start();
    this.checkpoints.start();
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

  /** The supervised mixing/generation engine, or null when none is built. */
  get worker() {
    return this.engines.worker;
  }

  /** The training engine process (tests kill it to check crash recovery). */
  get trainer() {
    return this.engines.trainer;
  }

  async close(): Promise<void> {
    await this.checker_.close();
    await this.checkpoints.close();
    await this.training.close();
    await this.ort.close();
    await this.engines.close();
    this.db.close();
  }
}
