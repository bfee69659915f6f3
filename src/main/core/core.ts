// The plain-Node core: one database, one API registry, one event stream. Hosts (Electron's
// utility process, the studio server, tests) construct it and relay messages; that is all they do.
// This folder must never import `electron` (tests/unit/layering.test.ts enforces it).
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { AdapterSummary, BaseModel, HostKind, MediaKind, WorkerStatus } from '../../shared/api';
import { checkHealth, openDatabase, schemaVersion, type Db } from './db/database';
import { EventBus } from './events';
import { Logger } from './logger';
import { ApiRegistry, type Handlers } from './registry';
import { DatasetImporter } from './datasets/import';
import { DatasetRepo } from './datasets/repo';
import { FORMAT_LABELS, MAX_INPUT_PIXELS } from './datasets/images';
import { MAX_IMPORT_FILES } from './datasets/scan';
import { APP_NAME } from './paths';
import { WorkerSupervisor } from './worker/supervisor';
import { findBuiltinModels, registerBuiltinModels } from './models/builtin';

export const APP_VERSION = '0.1.0';

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
  /** The native shira-worker; null when none is built. Started on first use, not at start-up. */
  worker?: { binary: string; args?: string[]; threads?: number } | null;
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
  private readonly workerBinary_: string | null;

  constructor(options: CoreOptions) {
    this.dataDir = options.dataDir;
    const dbFile = options.databaseFile ?? join(options.dataDir, 'library.sqlite');
    this.log = new Logger(options.databaseFile === ':memory:' ? null : join(options.dataDir, 'logs', 'core.log'), this.events);
    this.db = openDatabase(dbFile);
    if (options.resourcesDir) registerBuiltinModels(this.db, findBuiltinModels(options.resourcesDir));
    this.datasets_ = new DatasetRepo(this.db);
    this.importer_ = new DatasetImporter(this.db, this.datasets_, this.events, join(options.dataDir, 'tmp'), uploadsDir(options.dataDir));
    this.workerBinary_ = options.worker?.binary ?? null;
    this.worker_ =
      options.worker && existsSync(options.worker.binary)
        ? new WorkerSupervisor({
            binary: options.worker.binary,
            args: options.worker.args,
            threads: options.worker.threads ?? availableParallelism(),
            logFile: join(options.dataDir, 'logs', 'worker.log'),
          })
        : null;
    this.registry = new ApiRegistry(this.handlers(options.host), (method, error) => this.log.error(`internal error in ${method}`, error));
    this.log.info(`core started (${options.host}) with library ${dbFile}, schema v${schemaVersion(this.db)}`);
  }

  /** Images by URL for both hosts (`/media/<kind>/<id>` and `shira-media://<kind>/<id>`). */
  media(kind: MediaKind, id: number): Media | null {
    const bytes = this.datasets_.media(kind, id);
    if (!bytes) return null;
    return { bytes, mime: kind === 'thumb' ? 'image/webp' : 'image/png' };
  }

  /** The supervised native worker, or null when none is built. */
  get worker(): WorkerSupervisor | null {
    return this.worker_;
  }

  async close(): Promise<void> {
    await this.worker_?.close();
    this.db.close();
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
    return {
      available: true,
      state: w.state,
      binary: this.workerBinary_,
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
      'app.health': () => checkHealth(this.db),
      'models.list': () => listModels(this.db),
      'worker.status': ({ start }) => this.workerStatus(start ?? false),
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
      'adapters.list': ({ query, kind }) => listAdapters(this.db, query, kind),
    };
  }
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

function listAdapters(db: Db, query: string | undefined, kind: 'shira' | 'lora' | undefined): AdapterSummary[] {
  const like = query ? `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%` : null;
  const rows = db
    .prepare(
      `SELECT a.*,
              (SELECT json_group_array(tag) FROM adapter_tags t WHERE t.adapter_id = a.id) AS tags_json,
              (SELECT coalesce(sum(length(values_blob) + coalesce(length(index_blob), 0)), 0) FROM adapter_tensors x WHERE x.adapter_id = a.id) AS size_bytes
       FROM adapters a
       WHERE (@kind IS NULL OR a.kind = @kind)
         AND (@like IS NULL OR a.name LIKE @like ESCAPE '\\' OR a.trigger_words LIKE @like ESCAPE '\\' OR a.notes LIKE @like ESCAPE '\\'
              OR EXISTS (SELECT 1 FROM adapter_tags t WHERE t.adapter_id = a.id AND t.tag LIKE @like ESCAPE '\\'))
       ORDER BY a.updated_at DESC, a.id DESC`,
    )
    .all({ kind: kind ?? null, like }) as {
    id: number;
    name: string;
    kind: 'shira' | 'lora';
    method_json: string;
    base_model_id: number | null;
    trigger_words: string;
    preferred_weight: number;
    tags_json: string;
    size_bytes: number;
    created_at: string;
    updated_at: string;
  }[];
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    kind: r.kind,
    method: JSON.parse(r.method_json) as Record<string, unknown>,
    baseModelId: r.base_model_id,
    triggerWords: JSON.parse(r.trigger_words) as string[],
    preferredWeight: r.preferred_weight,
    tags: (JSON.parse(r.tags_json) as string[]).sort(),
    sizeBytes: r.size_bytes,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }));
}
