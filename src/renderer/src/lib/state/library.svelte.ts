import type { AdapterKind, AdapterSummary, InputOf } from '../../../../shared/api';
import { errorMessage } from '../errors';
import type { ApiClient } from '../transport';

export type KindFilter = AdapterKind | 'all';

const SEARCH_DEBOUNCE_MS = 200;

export class LibraryState {
  query = $state('');
  kind = $state<KindFilter>('all');
  adapters = $state.raw<AdapterSummary[]>([]);
  loaded = $state(false);
  error = $state<string | null>(null);

  readonly #api: ApiClient;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Only the newest request may write results: typing fast must not show an older search. */
  #latest = 0;

  constructor(api: ApiClient) {
    this.#api = api;
  }

  get isFiltered(): boolean {
    return this.query.trim() !== '' || this.kind !== 'all';
  }

  setQuery(query: string): void {
    this.query = query;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.load(), SEARCH_DEBOUNCE_MS);
  }

  setKind(kind: KindFilter): void {
    this.kind = kind;
    void this.load();
  }

  async load(): Promise<void> {
    const request = ++this.#latest;
    const input: InputOf<'adapters.list'> = {};
    const query = this.query.trim();
    if (query) input.query = query;
    if (this.kind !== 'all') input.kind = this.kind;
    try {
      const adapters = await this.#api.call('adapters.list', input);
      if (request !== this.#latest) return;
      this.adapters = adapters;
      this.error = null;
    } catch (error) {
      if (request !== this.#latest) return;
      this.error = errorMessage(error);
    } finally {
      if (request === this.#latest) this.loaded = true;
    }
  }
}
