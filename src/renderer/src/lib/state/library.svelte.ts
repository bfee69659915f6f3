import type { AdapterDetail, AdapterSummary, AdapterUpdate } from '../../../../shared/api';
import { SERVER_PATHS } from '../../../../shared/bridge';
import { filterAdapters, tagsOf, type KindFilter, type SortKey } from '../adapters';
import { errorMessage } from '../errors';
import type { ApiClient, PickedFile } from '../transport';
import type { Toasts } from './toasts.svelte';

export type { KindFilter, SortKey } from '../adapters';

/** A package is the .safetensors file; its .shira.json sidecar only travels along with it. */
const PACKAGE = /\.safetensors$/i;

export class LibraryState {
  /** Every adapter; what the grid shows is derived from it, so filtering never waits on the core. */
  all = $state.raw<AdapterSummary[]>([]);
  loaded = $state(false);
  error = $state<string | null>(null);

  query = $state('');
  kind = $state<KindFilter>('all');
  tag = $state<string | null>(null);
  sort = $state<SortKey>('recent');

  readonly adapters = $derived(filterAdapters(this.all, { query: this.query, kind: this.kind, tag: this.tag, sort: this.sort }));
  readonly tags = $derived(tagsOf(this.all));
  readonly byId = $derived(new Map(this.all.map((a) => [a.id, a])));

  selectedId = $state<number | null>(null);
  detail = $state.raw<AdapterDetail | null>(null);
  detailError = $state<string | null>(null);

  pendingDelete = $state.raw<AdapterSummary | null>(null);
  deleting = $state(false);
  exporting = $state<number | null>(null);
  importing = $state(false);

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  /** Only the newest request may write results: a slow old answer must not replace a newer one. */
  #latest = 0;
  #detailRequest = 0;

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  get isFiltered(): boolean {
    return this.query.trim() !== '' || this.kind !== 'all' || this.tag !== null;
  }

  get selected(): AdapterSummary | null {
    return this.selectedId === null ? null : (this.byId.get(this.selectedId) ?? null);
  }

  setQuery(query: string): void {
    this.query = query;
  }

  setKind(kind: KindFilter): void {
    this.kind = kind;
  }

  clearFilters(): void {
    this.query = '';
    this.kind = 'all';
    this.tag = null;
  }

  /** For recipes and mixes that name adapters by id, including ones deleted since. */
  nameOf(id: number): string {
    return this.byId.get(id)?.name ?? `Deleted adapter #${id}`;
  }

  async load(): Promise<void> {
    const request = ++this.#latest;
    try {
      const adapters = await this.#api.call('adapters.list', {});
      if (request !== this.#latest) return;
      this.all = adapters;
      this.error = null;
      if (this.selectedId !== null && !adapters.some((a) => a.id === this.selectedId)) this.close();
      else void this.#loadDetail();
    } catch (error) {
      if (request === this.#latest) this.error = errorMessage(error);
    } finally {
      if (request === this.#latest) this.loaded = true;
    }
  }

  async select(id: number): Promise<void> {
    if (this.selectedId !== id) {
      this.detail = null;
      this.detailError = null;
    }
    this.selectedId = id;
    await this.#loadDetail();
  }

  close(): void {
    this.selectedId = null;
    this.detail = null;
    this.detailError = null;
  }

  async #loadDetail(): Promise<void> {
    const id = this.selectedId;
    if (id === null) return;
    const request = ++this.#detailRequest;
    try {
      const detail = await this.#api.call('adapters.get', { id });
      if (request !== this.#detailRequest || this.selectedId !== id) return;
      this.detail = detail;
      this.detailError = null;
    } catch (error) {
      if (request === this.#detailRequest && this.selectedId === id) this.detailError = errorMessage(error);
    }
  }

  /** Throws, so an inline field can keep the draft and show the reason beside itself. */
  async update(id: number, patch: AdapterUpdate): Promise<AdapterSummary> {
    const summary = await this.#api.call('adapters.update', { id, ...patch });
    this.all = this.all.map((a) => (a.id === summary.id ? summary : a));
    if (this.detail?.id === summary.id) this.detail = { ...this.detail, ...summary };
    return summary;
  }

  async setCover(adapterId: number, generationId: number | null): Promise<void> {
    try {
      const summary = await this.update(adapterId, { coverGenerationId: generationId });
      this.#toasts.show('success', generationId === null ? `Removed the cover of “${summary.name}”` : `New cover for “${summary.name}”`);
    } catch (error) {
      this.#toasts.error('set the cover', error);
    }
  }

  async duplicate(adapter: AdapterSummary): Promise<void> {
    try {
      const copy = await this.#api.call('adapters.duplicate', { id: adapter.id });
      this.all = [copy, ...this.all];
      this.#toasts.show('success', `Duplicated as “${copy.name}”`);
      void this.select(copy.id);
    } catch (error) {
      this.#toasts.error(`duplicate “${adapter.name}”`, error);
    }
  }

  askDelete(adapter: AdapterSummary): void {
    this.pendingDelete = adapter;
  }

  cancelDelete(): void {
    if (!this.deleting) this.pendingDelete = null;
  }

  async confirmDelete(): Promise<void> {
    const adapter = this.pendingDelete;
    if (!adapter || this.deleting) return;
    this.deleting = true;
    try {
      await this.#api.call('adapters.delete', { id: adapter.id });
      this.pendingDelete = null;
      if (this.selectedId === adapter.id) this.close();
      this.all = this.all.filter((a) => a.id !== adapter.id);
      this.#toasts.show('info', `Deleted the adapter “${adapter.name}”`);
    } catch (error) {
      this.pendingDelete = null;
      this.#toasts.error(`delete “${adapter.name}”`, error);
    } finally {
      this.deleting = false;
    }
  }

  /** Electron: into a folder the user picks. Browser: the package arrives as two downloads. */
  async exportAdapter(adapter: AdapterSummary): Promise<void> {
    if (this.exporting !== null) return;
    const files = this.#api.files;
    if (files.exportsTo === 'download') {
      for (const ext of ['safetensors', 'shira.json']) files.download(`${SERVER_PATHS.download}adapter/${adapter.id}.${ext}`);
      this.#toasts.show('success', `Exported “${adapter.name}”`, 'Your browser downloads the .safetensors file and its .shira.json description.');
      return;
    }
    this.exporting = adapter.id;
    try {
      const dir = await files.pickFolder();
      if (dir === null) return;
      const result = await this.#api.call('adapters.export', { id: adapter.id, dir });
      this.#toasts.show('success', `Exported “${adapter.name}”`, `${result.file} (AutoV2 ${result.autoV2})`);
    } catch (error) {
      this.#toasts.error(`export “${adapter.name}”`, error);
    } finally {
      this.exporting = null;
    }
  }

  /**
   * Imports adapter packages the user picked or dropped. The core reads files by path, so in a
   * browser they are first uploaded into a staging folder (the same way dataset images are).
   */
  async importFiles(files: readonly File[]): Promise<void> {
    if (this.importing) return;
    const picked: PickedFile[] = files.map((file) => ({ file, relativePath: file.name }));
    const packages = picked.filter((p) => PACKAGE.test(p.file.name));
    if (packages.length === 0) {
      this.#toasts.show('error', 'Nothing to import', 'Choose an adapter’s .safetensors file (with its .shira.json beside it, when it has one).');
      return;
    }
    this.importing = true;
    try {
      const source = await this.#api.files.sourceFor(picked, () => {}, new AbortController().signal);
      const paths = source.kind === 'folder' ? packages.map((p) => `${source.path}/${p.relativePath}`) : source.paths.filter((path) => PACKAGE.test(path));
      for (const path of paths) {
        const name = path.split(/[/\\]/).pop() ?? path;
        try {
          const summary = await this.#api.call('adapters.import', { path });
          this.all = [summary, ...this.all.filter((a) => a.id !== summary.id)];
          this.#toasts.show('success', `Imported “${summary.name}”`);
        } catch (error) {
          this.#toasts.error(`import ${name}`, error);
        }
      }
    } catch (error) {
      this.#toasts.error('upload the adapter files', error);
    } finally {
      this.importing = false;
    }
  }
}
