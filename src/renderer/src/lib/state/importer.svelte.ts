import type { AppInfo, CoreEvent, ImportInput, ImportReport } from '../../../../shared/api';
import { ApiCallError } from '../../../../shared/errors';
import { entriesOf, pickedFromEntries, pickedFromFiles, type Picked } from '../drop';
import { errorMessage, fieldErrorMessage, fieldOf, isCancelled } from '../errors';
import { newId, type ApiClient, type ImportSource, type PickedFile } from '../transport';
import type { DatasetsState } from './datasets.svelte';
import type { Toasts } from './toasts.svelte';

export type ImportPhase = 'form' | 'uploading' | 'importing' | 'done';
export type ImportField = 'folder' | 'name' | 'triggerWord';

interface Progress {
  phase: 'reading' | 'decoding';
  done: number;
  total: number;
  current: string;
}

/** Maps the core's input paths (`source.path`, `name`, …) onto the dialog's fields. */
function formFieldOf(path: string | null): ImportField | null {
  if (path === null) return null;
  if (path.startsWith('source')) return 'folder';
  if (path === 'name') return 'name';
  if (path === 'triggerWord') return 'triggerWord';
  return null;
}

export class ImporterState {
  isOpen = $state(false);
  /** Set when adding images to an existing dataset rather than creating one. */
  target = $state.raw<{ id: number; name: string } | null>(null);

  folderPath = $state('');
  name = $state('');
  triggerWord = $state('');
  staged = $state.raw<PickedFile[]>([]);
  /** Name of a dropped or chosen folder: the dataset's name unless the user types one. */
  suggestedName = $state<string | null>(null);

  phase = $state<ImportPhase>('form');
  upload = $state.raw<{ done: number; total: number } | null>(null);
  progress = $state.raw<Progress | null>(null);
  report = $state.raw<ImportReport | null>(null);
  readonly skipped = $derived(this.report?.files.filter((f) => f.status === 'skipped') ?? []);
  readonly imported = $derived(this.report?.files.filter((f) => f.status === 'imported') ?? []);
  cancelling = $state(false);
  fieldErrors = $state<Partial<Record<ImportField, string>>>({});
  formError = $state<string | null>(null);

  readonly #api: ApiClient;
  readonly #datasets: DatasetsState;
  readonly #toasts: Toasts;
  readonly #info: () => AppInfo | null;
  #importId: string | null = null;
  #abort: AbortController | null = null;
  /** Who opened the dialog and wants the new dataset (the Train view picks it to train on). */
  #onImported: ((datasetId: number) => void) | null = null;

  constructor(api: ApiClient, datasets: DatasetsState, toasts: Toasts, info: () => AppInfo | null) {
    this.#api = api;
    this.#datasets = datasets;
    this.#toasts = toasts;
    this.#info = info;
  }

  /** Whether the finished import hands its dataset to whoever opened the dialog. */
  get forCaller(): boolean {
    return this.#onImported !== null;
  }

  get busy(): boolean {
    return this.phase === 'uploading' || this.phase === 'importing';
  }

  get canPickFolder(): boolean {
    return this.#api.files.canPickFolder;
  }

  open(target: { id: number; name: string } | null = null, onImported: ((datasetId: number) => void) | null = null): void {
    if (this.isOpen) return;
    this.#onImported = onImported;
    this.target = target;
    this.folderPath = '';
    this.name = '';
    this.triggerWord = '';
    this.staged = [];
    this.suggestedName = null;
    this.phase = 'form';
    this.upload = null;
    this.progress = null;
    this.report = null;
    this.cancelling = false;
    this.fieldErrors = {};
    this.formError = null;
    this.isOpen = true;
  }

  /** Closing is refused mid-import: the user must cancel first, so nothing runs on unseen. */
  close(): void {
    if (!this.busy) this.isOpen = false;
  }

  setFolderPath(path: string): void {
    this.folderPath = path;
    this.staged = [];
    this.suggestedName = null;
    this.fieldErrors = { ...this.fieldErrors, folder: undefined };
  }

  async browse(): Promise<void> {
    try {
      const folder = await this.#api.files.pickFolder();
      if (folder) this.setFolderPath(folder);
    } catch (error) {
      this.formError = errorMessage(error);
    }
  }

  clearStaged(): void {
    this.staged = [];
    this.suggestedName = null;
  }

  async drop(transfer: DataTransfer): Promise<void> {
    const { entries, files } = entriesOf(transfer);
    if (entries.length === 1 && entries[0].isDirectory && files[0]) {
      // In Electron a dropped folder has a real path: import it in place, like a typed path.
      const path = this.#api.files.folderPath(files[0]);
      if (path) {
        this.setFolderPath(path);
        return;
      }
    }
    try {
      // Drops from other apps (and synthetic ones) can carry files without file-system entries.
      this.#stage(entries.length > 0 ? await pickedFromEntries(entries) : pickedFromFiles(files));
    } catch (error) {
      this.formError = `Could not read what was dropped: ${errorMessage(error)}`;
    }
  }

  choose(list: FileList | null): void {
    if (list && list.length > 0) this.#stage(pickedFromFiles([...list]));
  }

  #stage(picked: Picked): void {
    if (picked.files.length === 0) {
      this.fieldErrors = { ...this.fieldErrors, folder: 'There were no files in what was dropped.' };
      return;
    }
    this.staged = picked.files;
    this.suggestedName = picked.folderName;
    this.folderPath = '';
    this.fieldErrors = { ...this.fieldErrors, folder: undefined };
    this.formError = null;
  }

  onEvent(event: CoreEvent): void {
    if (event.type === 'import.progress' && event.importId === this.#importId) {
      this.progress = { phase: event.phase, done: event.done, total: event.total, current: event.current };
    }
  }

  async start(): Promise<void> {
    if (this.busy) return;
    this.fieldErrors = {};
    this.formError = null;
    const folderPath = this.folderPath.trim();
    if (this.staged.length === 0 && folderPath === '') {
      this.fieldErrors = { folder: 'Type the path of a folder of images, or drop images here.' };
      return;
    }
    const limit = this.#info()?.limits.maxImportFiles;
    if (limit !== undefined && this.staged.length > limit) {
      this.fieldErrors = { folder: `That is ${this.staged.length} files; one import takes at most ${limit}.` };
      return;
    }

    const importId = newId();
    this.#importId = importId;
    this.progress = null;
    this.upload = null;
    this.cancelling = false;
    try {
      let source: ImportSource;
      if (this.staged.length > 0) {
        this.phase = 'uploading';
        this.#abort = new AbortController();
        source = await this.#api.files.sourceFor(this.staged, (done, total) => (this.upload = { done, total }), this.#abort.signal);
        // A cancel pressed during the last upload has nothing left to stop; honour it here.
        if (this.cancelling) throw new ApiCallError({ type: 'cancelled', message: 'Import cancelled.' });
      } else {
        source = { kind: 'folder', path: folderPath };
      }
      this.phase = 'importing';
      const input: ImportInput = { source, importId };
      if (this.target) input.datasetId = this.target.id;
      else {
        const name = this.name.trim();
        if (name) input.name = name;
        // Uploads land in a staging folder named by a random id: the picked folder's name goes along, and the core
        // names the dataset from it (a kohya `10_name` folder: "name", with 10 repeats and "name" as trigger).
        if (this.suggestedName) input.folderName = this.suggestedName;
      }
      const triggerWord = this.triggerWord.trim();
      if (triggerWord && !this.target) input.triggerWord = triggerWord;

      const report = await this.#api.call('datasets.import', input);
      this.report = report;
      this.phase = 'done';
      void this.#datasets.loadList();
      // No dataset exists when every file was rejected; the report alone says why.
      if (report.datasetId !== null) {
        if (this.#onImported) this.#onImported(report.datasetId);
        else void this.#datasets.open(report.datasetId);
      }
    } catch (error) {
      this.phase = 'form';
      if (isCancelled(error)) {
        this.#toasts.show('info', errorMessage(error));
        this.#datasets.refreshSoon();
        return;
      }
      const field = formFieldOf(fieldOf(error));
      if (field) this.fieldErrors = { [field]: fieldErrorMessage(error) };
      else if (error instanceof ApiCallError && error.type === 'not_found' && this.staged.length === 0) {
        this.fieldErrors = { folder: errorMessage(error) };
      } else this.formError = errorMessage(error);
    } finally {
      this.#abort = null;
      this.cancelling = false;
    }
  }

  /** The trigger word, edited in the report (a kohya folder's class words are only a suggestion). */
  async setTriggerWord(word: string): Promise<void> {
    const report = this.report;
    if (!report?.naming || report.datasetId === null) return;
    const summary = await this.#api.call('datasets.update', { id: report.datasetId, triggerWord: word.trim() === '' ? null : word.trim() });
    this.report = { ...report, naming: { ...report.naming, triggerWord: summary.triggerWord } };
    void this.#datasets.loadList();
  }

  async cancel(): Promise<void> {
    if (!this.busy || this.cancelling) return;
    this.cancelling = true;
    if (this.phase === 'uploading') {
      this.#abort?.abort();
      return;
    }
    const importId = this.#importId;
    if (!importId) return;
    try {
      await this.#api.call('datasets.cancelImport', { importId });
    } catch (error) {
      this.cancelling = false;
      this.#toasts.error('cancel the import', error);
    }
  }
}
