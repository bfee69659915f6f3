// The Models view's state: the base models (the built-in one and the artist's Stable Diffusion checkpoints), the
// add-by-path form, and each checkpoint's background hash as `models.hash` events report it.
import type { BaseModel, CoreEvent, HashProgress, Prediction } from '../../../../shared/api';
import { errorMessage } from '../errors';
import type { ApiClient } from '../transport';
import type { Toasts } from './toasts.svelte';

type HashEvent = Extract<CoreEvent, { type: 'models.hash' }>;

export class ModelsState {
  list = $state.raw<BaseModel[]>([]);
  loaded = $state(false);
  listError = $state<string | null>(null);

  /** The add form: a .safetensors file or a diffusers folder, an optional VAE file and name. */
  path = $state('');
  vaePath = $state('');
  name = $state('');
  adding = $state(false);
  /** Why the last add was refused, shown under the form (the core's message names the problem). */
  addError = $state<string | null>(null);
  /** The checkpoint whose removal waits for a second click. */
  confirmRemoveId = $state<number | null>(null);
  /** Live hash progress by model id, newer than the list's (events arrive between loads). */
  progress = $state.raw<ReadonlyMap<number, HashProgress>>(new Map());

  readonly #api: ApiClient;
  readonly #toasts: Toasts;

  readonly defaultModel = $derived(this.list.find((m) => m.isDefault) ?? null);
  readonly checkpoints = $derived(this.list.filter((m) => m.source === 'user'));

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  /** The hash as the latest event or load says it; null for built-in models. */
  hashOf(model: BaseModel): HashProgress | null {
    if (!model.checkpoint) return null;
    return this.progress.get(model.id) ?? model.checkpoint.hash;
  }

  async load(): Promise<void> {
    try {
      this.list = await this.#api.call('models.list', {});
      this.listError = null;
      // A loaded list is the truth for every model it has hashed; live progress stays for the others.
      this.progress = new Map([...this.progress].filter(([id]) => this.list.some((m) => m.id === id && m.weightsHash === null)));
    } catch (error) {
      this.listError = errorMessage(error);
    } finally {
      this.loaded = true;
    }
  }

  async add(): Promise<void> {
    const path = this.path.trim();
    if (!path || this.adding) return;
    this.adding = true;
    this.addError = null;
    try {
      const vaePath = this.vaePath.trim();
      const name = this.name.trim();
      const model = await this.#api.call('models.add', { path, ...(vaePath ? { vaePath } : {}), ...(name ? { name } : {}) });
      this.path = this.vaePath = this.name = '';
      this.#toasts.show('success', `Added "${model.name}"`, `${model.familyLabel}; its SHA-256 is computed in the background.`);
      await this.load();
    } catch (error) {
      this.addError = errorMessage(error);
    } finally {
      this.adding = false;
    }
  }

  async remove(id: number): Promise<void> {
    if (this.confirmRemoveId !== id) {
      this.confirmRemoveId = id;
      return;
    }
    this.confirmRemoveId = null;
    await this.#run('remove the model', () => this.#api.call('models.remove', { id }));
  }

  async setPrediction(id: number, prediction: Prediction | null): Promise<void> {
    await this.#run('change the prediction type', () => this.#api.call('models.setPrediction', { id, prediction }));
  }

  async rehash(id: number): Promise<void> {
    await this.#run('re-hash the model', () => this.#api.call('models.rehash', { id }));
  }

  async cancelHash(id: number): Promise<void> {
    await this.#run('stop the hash', () => this.#api.call('models.cancelHash', { id }));
  }

  onEvent(event: HashEvent): void {
    const next = new Map(this.progress);
    next.set(event.modelId, { state: event.state, done: event.done, total: event.total, error: event.error });
    this.progress = next;
    if (event.state !== 'running') void this.load();
  }

  async #run(doing: string, action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (error) {
      this.#toasts.error(doing, error);
    }
    await this.load();
  }
}
