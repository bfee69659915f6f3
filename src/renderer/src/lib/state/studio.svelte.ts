// The root of the renderer's state: one instance per window, shared with components via context.
// It owns the subscriptions to the core and routes events to the parts that care.
import type { AdapterSummary, AppInfo, CoreEvent, Generation, HealthReport, WorkerStatus } from '../../../../shared/api';
import { errorMessage } from '../errors';
import type { ApiClient, ConnectionStatus } from '../transport';
import { VIEWS, type ViewId } from '../views';
import { CompareState } from './compare.svelte';
import { DatasetsState } from './datasets.svelte';
import { GalleryState } from './gallery.svelte';
import { ImporterState } from './importer.svelte';
import { LibraryState } from './library.svelte';
import { MixState } from './mix.svelte';
import { ModelsState } from './models.svelte';
import { Toasts } from './toasts.svelte';
import { TrainingState } from './training.svelte';
import { WelcomeState } from './welcome.svelte';

export type HealthState = { kind: 'unknown' } | { kind: 'ok' } | { kind: 'bad'; message: string };

function describeHealth(report: HealthReport): HealthState {
  if (report.ok) return { kind: 'ok' };
  const problems = report.integrity.filter((row) => row !== 'ok');
  if (report.foreignKeyViolations > 0) problems.push(`${report.foreignKeyViolations} broken reference(s) between records`);
  return { kind: 'bad', message: problems.join('; ') || 'The database reported a problem.' };
}

export class Studio {
  readonly api: ApiClient;
  readonly toasts = new Toasts();
  readonly library: LibraryState;
  readonly datasets: DatasetsState;
  readonly importer: ImporterState;
  readonly training: TrainingState;
  readonly mix: MixState;
  readonly gallery: GalleryState;
  readonly compare: CompareState;
  readonly welcome: WelcomeState;
  /** The base models: the built-in one and the artist's Stable Diffusion checkpoints (Models view). */
  readonly models: ModelsState;

  view = $state<ViewId>('library');
  info = $state.raw<AppInfo | null>(null);
  health = $state.raw<HealthState>({ kind: 'unknown' });
  /** The native engine; started in the background so the first generation does not wait for it. */
  engine = $state.raw<WorkerStatus | null>(null);
  connection = $state<ConnectionStatus>('connecting');
  /** Failed reconnects in a row: after a few, the banner also suggests re-opening the link. */
  reconnectAttempts = $state(0);

  readonly #unsubscribe: (() => void)[] = [];

  constructor(api: ApiClient) {
    this.api = api;
    this.library = new LibraryState(api, this.toasts);
    this.datasets = new DatasetsState(api, this.toasts);
    this.importer = new ImporterState(api, this.datasets, this.toasts, () => this.info);
    this.training = new TrainingState(api, this.toasts);
    this.mix = new MixState(api, this.toasts);
    this.gallery = new GalleryState(api, this.toasts);
    this.compare = new CompareState(api, () => this.library.byId);
    this.welcome = new WelcomeState(api, this.toasts, (status) => (this.engine = status));
    this.models = new ModelsState(api, this.toasts);
  }

  get defaultModel() {
    return this.models.defaultModel;
  }

  get modalOpen(): boolean {
    return this.welcome.isOpen || this.importer.isOpen || this.datasets.pendingDelete !== null || this.library.pendingDelete !== null || this.gallery.openIndex !== null;
  }

  /** Resolution every adapter of the default model trains and generates at (the model's, not a choice). */
  get resolution(): number | null {
    return this.defaultModel?.resolution ?? null;
  }

  start(): void {
    this.#unsubscribe.push(
      this.api.on((event) => this.#onEvent(event)),
      this.api.onStatus((status) => this.#onStatus(status)),
    );
    this.#loadAll();
  }

  dispose(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
  }

  navigate(view: ViewId): void {
    this.view = view;
  }

  openImport(): void {
    this.view = 'datasets';
    this.importer.open();
  }

  /** Import from the Train view: the new dataset becomes the one to train on. */
  importForTraining(): void {
    this.importer.open(null, (datasetId) => {
      void this.training.selectDataset(datasetId);
      void this.datasets.loadList();
    });
  }

  /** Mix & generate with a gallery image's recipe, and run it again. */
  rerun(generation: Generation): void {
    this.gallery.close();
    this.mix.loadRecipe(generation);
    this.navigate('mix');
    void this.mix.generate();
  }

  useInMix(adapter: AdapterSummary): void {
    this.mix.add(adapter);
    this.navigate('mix');
  }

  /** The main action of the view in front: Ctrl/Cmd+Enter. */
  runPrimary(): boolean {
    switch (this.view) {
      case 'train':
        void this.training.start();
        return true;
      case 'mix':
        void this.mix.generate();
        return true;
      case 'compare':
        void this.compare.run();
        return true;
      default:
        return false;
    }
  }

  /** Global shortcuts: Ctrl/Cmd+1…7 switch views, Ctrl/Cmd+I imports, Ctrl/Cmd+Enter runs. Returns whether it was handled. */
  handleShortcut(event: KeyboardEvent): boolean {
    if (!(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey || this.modalOpen) return false;
    if (event.key === 'Enter') return this.runPrimary();
    // `code`, not `key`: on AZERTY and similar layouts the digit row needs Shift to type digits.
    const digit = /^(?:Digit|Numpad)([1-9])$/.exec(event.code);
    if (digit) {
      const view = VIEWS[Number(digit[1]) - 1];
      if (!view) return false;
      this.navigate(view.id);
      return true;
    }
    if (event.key.toLowerCase() === 'i') {
      this.openImport();
      return true;
    }
    return false;
  }

  async refreshHealth(): Promise<HealthReport | null> {
    try {
      const report = await this.api.call('app.health', {});
      this.health = describeHealth(report);
      this.welcome.native = report.native ?? null;
      return report;
    } catch (error) {
      this.health = { kind: 'bad', message: errorMessage(error) };
      return null;
    }
  }

  #loadAll(): void {
    const info = this.api.call('app.info', {}).then(
      (info) => (this.info = info),
      (error) => void this.toasts.error('read the app information', error),
    );
    void Promise.all([info, this.refreshHealth()]).then(([info, health]) => info && this.welcome.maybeOpen(info, health?.native ?? null));
    void this.api.call('worker.status', { start: true }).then(
      (status) => (this.engine = status),
      () => (this.engine = null),
    );
    void this.models.load();
    void this.library.load();
    void this.datasets.loadList();
    void this.training.loadJobs();
    void this.gallery.load();
  }

  #onStatus(status: ConnectionStatus): void {
    const wasDown = this.connection === 'reconnecting';
    this.reconnectAttempts = status === 'reconnecting' ? this.reconnectAttempts + 1 : 0;
    this.connection = status;
    // Events sent while the socket was down are lost: reload what they would have changed.
    if (status === 'open' && wasDown) {
      void this.refreshHealth();
      void this.library.load();
      void this.models.load();
      this.datasets.refreshSoon();
      void this.training.loadJobs();
      this.gallery.refresh();
    }
  }

  #onEvent(event: CoreEvent): void {
    switch (event.type) {
      case 'import.progress':
        this.importer.onEvent(event);
        break;
      case 'library.changed':
        if (event.what === 'datasets') {
          this.datasets.refreshSoon();
          if (event.id === undefined || event.id === this.training.datasetId) this.training.refreshDataset();
        } else if (event.what === 'adapters') {
          void this.library.load().then(() => this.mix.prune(new Set(this.library.byId.keys())));
        } else if (event.what === 'generations') {
          this.gallery.refreshSoon();
        } else if (event.what === 'models') {
          void this.models.load();
        }
        break;
      case 'training.progress':
      case 'training.sample':
      case 'training.changed':
        this.training.onEvent(event);
        break;
      case 'models.hash':
        this.models.onEvent(event);
        break;
      case 'concept.progress':
        this.compare.onEvent(event);
        break;
      case 'log':
        // A failing call already reports its own error where it happened; repeating the core's
        // log line as a toast would say the same thing twice. A log panel can show these later.
        break;
    }
  }
}
