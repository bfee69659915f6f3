import type { Dataset, DatasetImage, DatasetSummary } from '../../../../shared/api';
import { errorMessage } from '../errors';
import type { ApiClient } from '../transport';
import type { Toasts } from './toasts.svelte';

/** `library.changed` arrives once per imported file; one refresh per burst is enough. */
const REFRESH_COALESCE_MS = 150;

export class DatasetsState {
  list = $state.raw<DatasetSummary[]>([]);
  listLoaded = $state(false);
  listError = $state<string | null>(null);

  openId = $state<number | null>(null);
  detail = $state.raw<Dataset | null>(null);
  detailError = $state<string | null>(null);

  /** The dataset waiting for the user to confirm its deletion. */
  pendingDelete = $state.raw<DatasetSummary | null>(null);
  deleting = $state(false);

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  #listRequest = 0;
  #detailRequest = 0;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  async loadList(): Promise<void> {
    const request = ++this.#listRequest;
    try {
      const list = await this.#api.call('datasets.list', {});
      if (request !== this.#listRequest) return;
      this.list = list;
      this.listError = null;
    } catch (error) {
      if (request === this.#listRequest) this.listError = errorMessage(error);
    } finally {
      if (request === this.#listRequest) this.listLoaded = true;
    }
  }

  async open(id: number): Promise<void> {
    if (this.openId !== id) this.detail = null;
    this.openId = id;
    await this.#loadDetail();
  }

  close(): void {
    this.openId = null;
    this.detail = null;
    this.detailError = null;
  }

  async #loadDetail(): Promise<void> {
    const id = this.openId;
    if (id === null) return;
    const request = ++this.#detailRequest;
    try {
      const dataset = await this.#api.call('datasets.get', { id });
      if (request !== this.#detailRequest || this.openId !== id) return;
      this.detail = dataset;
      this.detailError = null;
    } catch (error) {
      if (request !== this.#detailRequest || this.openId !== id) return;
      this.detailError = errorMessage(error);
    }
  }

  /** Called for `library.changed` and after reconnecting, when events may have been missed. */
  refreshSoon(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => {
      void this.loadList();
      void this.#loadDetail();
    }, REFRESH_COALESCE_MS);
  }

  async rename(name: string): Promise<void> {
    await this.#update({ name });
  }

  async setTriggerWord(triggerWord: string): Promise<void> {
    // An empty field means "no trigger word", which the core stores as null.
    await this.#update({ triggerWord: triggerWord.trim() === '' ? null : triggerWord });
  }

  /** Mark the dataset as pixel art: its images show with nearest-neighbour scaling at any size. */
  async setPixelArt(pixelArt: boolean): Promise<void> {
    try {
      await this.#update({ pixelArt });
    } catch (error) {
      this.#toasts.error('mark the dataset as pixel art', error);
    }
  }

  /** A bulk caption edit (the caption editor), stored in one transaction. Throws, so the editor keeps its preview. */
  async setCaptions(captions: { imageId: number; caption: string }[]): Promise<void> {
    const detail = this.detail;
    if (!detail || captions.length === 0) return;
    const dataset = await this.#api.call('datasets.setCaptions', { datasetId: detail.id, captions });
    if (this.detail?.id === dataset.id) this.detail = dataset;
  }

  async #update(change: { name?: string; triggerWord?: string | null; pixelArt?: boolean }): Promise<void> {
    const detail = this.detail;
    if (!detail) return;
    const summary = await this.#api.call('datasets.update', { id: detail.id, ...change });
    if (this.detail?.id === summary.id) this.detail = { ...this.detail, ...summary };
    this.list = this.list.map((d) => (d.id === summary.id ? summary : d));
  }

  async setCaption(imageId: number, caption: string): Promise<void> {
    const image = await this.#api.call('datasets.setCaption', { imageId, caption });
    this.#replaceImage(image);
  }

  #replaceImage(image: DatasetImage): void {
    const detail = this.detail;
    if (!detail || detail.id !== image.datasetId) return;
    this.detail = { ...detail, images: detail.images.map((i) => (i.id === image.id ? image : i)) };
  }

  async removeImage(image: DatasetImage): Promise<void> {
    try {
      await this.#api.call('datasets.removeImage', { imageId: image.id });
      const detail = this.detail;
      if (detail && detail.id === image.datasetId) {
        this.detail = { ...detail, images: detail.images.filter((i) => i.id !== image.id), imageCount: detail.imageCount - 1 };
      }
      this.#toasts.show('info', `Removed ${image.relPath} from the dataset`);
      this.refreshSoon();
    } catch (error) {
      this.#toasts.error(`remove ${image.relPath}`, error);
    }
  }

  askDelete(dataset: DatasetSummary): void {
    this.pendingDelete = dataset;
  }

  cancelDelete(): void {
    if (!this.deleting) this.pendingDelete = null;
  }

  async confirmDelete(): Promise<void> {
    const dataset = this.pendingDelete;
    if (!dataset || this.deleting) return;
    this.deleting = true;
    try {
      await this.#api.call('datasets.delete', { id: dataset.id });
      this.pendingDelete = null;
      if (this.openId === dataset.id) this.close();
      this.list = this.list.filter((d) => d.id !== dataset.id);
      this.#toasts.show('info', `Deleted the dataset “${dataset.name}”`);
    } catch (error) {
      this.pendingDelete = null;
      this.#toasts.error(`delete “${dataset.name}”`, error);
    } finally {
      this.deleting = false;
    }
  }
}
