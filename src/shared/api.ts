// The one UI↔core contract. Each entry: method name → input schema (checked by the core's
// registry before any handler runs) and the result type. Hosts relay messages; they never
// add methods of their own. Adding a capability = one entry here + one handler + (often) a migration.
import { v, type Infer, type Schema } from './schema';

declare const resultBrand: unique symbol;
/** Phantom carrier of a method's result type; nothing exists at run time. */
export interface Result<T> {
  readonly [resultBrand]?: T;
}
function method<I extends Schema<unknown>, R>(input: I): { input: I; result: Result<R> } {
  return { input, result: {} };
}

// ---- Domain shapes (plain data: they cross structured clone and JSON unchanged) ----

export type HostKind = 'electron' | 'server' | 'test';

export interface AppInfo {
  name: string;
  version: string;
  host: HostKind;
  dataDir: string;
  schemaVersion: number;
  platform: string;
  /** Limits the import enforces, so the UI can say them up front. */
  limits: { maxInputPixels: number; maxImportFiles: number; imageFormats: string[] };
}

export interface HealthReport {
  ok: boolean;
  /** `PRAGMA integrity_check` rows; exactly ['ok'] when healthy. */
  integrity: string[];
  foreignKeyViolations: number;
  journalMode: string;
  schemaVersion: number;
}

export type WorkerState = 'stopped' | 'starting' | 'ready' | 'closed' | 'failed';

export interface WorkerStatus {
  /** False when no worker binary is built here; `reason` says what to do. */
  available: boolean;
  state: WorkerState;
  binary: string | null;
  reason?: string;
  /** From the worker's readiness line once it has started. */
  version?: string;
  device?: string;
  torch?: string;
  cuda?: boolean;
}

export interface BaseModel {
  id: number;
  name: string;
  family: string;
  resolution: number;
  weightsHash: string | null;
  isDefault: boolean;
  createdAt: string;
}

export interface DatasetSummary {
  id: number;
  name: string;
  triggerWord: string | null;
  sourcePath: string | null;
  imageCount: number;
  /** Σ repeats over images: what one epoch sees, kohya-style. */
  weightedCount: number;
  coverImageId: number | null;
  createdAt: string;
  updatedAt: string;
}

export type CaptionSource = 'sidecar' | 'folder' | 'none' | 'user';

export interface DatasetImage {
  id: number;
  datasetId: number;
  /** Path relative to the imported folder (or the file name for a file list). */
  relPath: string;
  width: number;
  height: number;
  /** Format of the original file as sharp identified it. */
  format: string;
  bytes: number;
  sha256: string;
  caption: string;
  captionSource: CaptionSource;
  repeats: number;
  classTokens: string | null;
}

export interface Dataset extends DatasetSummary {
  images: DatasetImage[];
}

export type ImportFileStatus = 'imported' | 'skipped';

export interface ImportFileReport {
  /** Path as given or found, relative to the chosen folder when there is one. */
  path: string;
  status: ImportFileStatus;
  /** Why a file was skipped, in plain words (e.g. "empty file (0 bytes)"). */
  reason?: string;
  imageId?: number;
}

export interface ImportReport {
  importId: string;
  /** null when nothing could be imported (no dataset is created for an all-rejected import). */
  datasetId: number | null;
  imported: number;
  skipped: number;
  files: ImportFileReport[];
}

export type AdapterKind = 'shira' | 'lora';

export interface AdapterSummary {
  id: number;
  name: string;
  kind: AdapterKind;
  method: Record<string, unknown>;
  baseModelId: number | null;
  triggerWords: string[];
  preferredWeight: number;
  tags: string[];
  sizeBytes: number;
  createdAt: string;
  updatedAt: string;
}

// ---- Input schemas ----

const id = v.int({ min: 1 });
const importSource = v.variant('kind', {
  folder: v.object({ kind: v.literal('folder'), path: v.string({ min: 1, max: 4096 }) }),
  files: v.object({ kind: v.literal('files'), paths: v.array(v.string({ min: 1, max: 4096 }), { min: 1, max: 10_000 }) }),
});

export const api = {
  'app.info': method<Schema<Record<string, never>>, AppInfo>(v.empty()),
  'app.health': method<Schema<Record<string, never>>, HealthReport>(v.empty()),
  'models.list': method<Schema<Record<string, never>>, BaseModel[]>(v.empty()),
  /** The native engine's state; `start: true` launches it if it is not running. */
  'worker.status': method<Schema<{ start?: boolean }>, WorkerStatus>(v.object({ start: v.optional(v.boolean()) })),
  'datasets.list': method<Schema<Record<string, never>>, DatasetSummary[]>(v.empty()),
  'datasets.get': method<Schema<{ id: number }>, Dataset>(v.object({ id })),
  'datasets.import': method<Schema<ImportInput>, ImportReport>(
    v.object({
      source: importSource,
      /** Append to this dataset instead of creating one. */
      datasetId: v.optional(id),
      name: v.optional(v.string({ min: 1, max: 200, trim: true })),
      triggerWord: v.optional(v.string({ max: 100, trim: true })),
      /** Client-chosen id so progress events and cancel can name this import. */
      importId: v.optional(v.string({ min: 1, max: 100 })),
    }) as Schema<ImportInput>,
  ),
  'datasets.cancelImport': method<Schema<{ importId: string }>, { cancelled: boolean }>(v.object({ importId: v.string({ min: 1, max: 100 }) })),
  'datasets.update': method<Schema<{ id: number; name?: string; triggerWord?: string | null }>, DatasetSummary>(
    v.object({ id, name: v.optional(v.string({ min: 1, max: 200, trim: true })), triggerWord: v.optional(v.nullable(v.string({ max: 100, trim: true }))) }),
  ),
  'datasets.setCaption': method<Schema<{ imageId: number; caption: string }>, DatasetImage>(
    v.object({ imageId: id, caption: v.string({ max: 2000 }) }),
  ),
  'datasets.removeImage': method<Schema<{ imageId: number }>, { removed: boolean }>(v.object({ imageId: id })),
  'datasets.delete': method<Schema<{ id: number }>, { deleted: boolean }>(v.object({ id })),
  'adapters.list': method<Schema<{ query?: string; kind?: AdapterKind }>, AdapterSummary[]>(
    v.object({ query: v.optional(v.string({ max: 200 })), kind: v.optional(v.enum(['shira', 'lora'] as const)) }),
  ),
} as const;

export interface ImportInput {
  source: { kind: 'folder'; path: string } | { kind: 'files'; paths: string[] };
  datasetId?: number;
  name?: string;
  triggerWord?: string;
  importId?: string;
}

export type Api = typeof api;
export type MethodName = keyof Api;
export type InputOf<M extends MethodName> = Infer<Api[M]['input']>;
export type ResultOf<M extends MethodName> = Api[M]['result'] extends Result<infer R> ? R : never;

// ---- Events: the core's one-way stream to every connected client ----

export type CoreEvent =
  /** reading: cheap checks and hashing, over every file found; decoding: sharp, over the files that passed. */
  | { type: 'import.progress'; importId: string; phase: 'reading' | 'decoding'; done: number; total: number; current: string }
  | { type: 'library.changed'; what: 'datasets' | 'adapters' | 'models'; id?: number }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string; time: string };

export type CoreEventType = CoreEvent['type'];

// ---- Media: images are fetched by URL, never shipped inside API results ----

export type MediaKind = 'thumb' | 'image';
export const MEDIA_KINDS: readonly MediaKind[] = ['thumb', 'image'];
