// The gallery: every generation and every kept Compare grid, newest first, read page by page as the virtual grid
// scrolls. Pages live in a plain Map behind a version counter; the grid asks for the pages its window covers, and a
// change in the library reloads only what is on screen. A grid entry opens to its cells, each of which opens large.
import type { GalleryEntry, Generation, Grid } from '../../../../shared/api';
import { errorMessage } from '../errors';
import type { ApiClient } from '../transport';
import { gridWindow, pagesFor, type GridWindow } from '../virtual';
import type { Toasts } from './toasts.svelte';

export const PAGE_SIZE = 120;
export const MIN_CELL = 148;
export const GAP = 8;
const OVERSCAN_ROWS = 3;
const REFRESH_COALESCE_MS = 150;

export interface Viewport {
  width: number;
  height: number;
  scrollTop: number;
}

export class GalleryState {
  total = $state(0);
  loaded = $state(false);
  error = $state<string | null>(null);
  favouritesOnly = $state(false);
  adapterFilter = $state<number | null>(null);

  viewport = $state.raw<Viewport>({ width: 0, height: 0, scrollTop: 0 });
  readonly window: GridWindow = $derived(gridWindow({ ...this.viewport, count: this.total, minCell: MIN_CELL, gap: GAP, overscan: OVERSCAN_ROWS }));

  /** Roving keyboard position in the grid. */
  focusIndex = $state(0);
  /** The entry open large, by index into the current order. */
  openIndex = $state<number | null>(null);
  readonly openEntry: GalleryEntry | undefined = $derived(this.openIndex === null ? undefined : this.itemAt(this.openIndex));
  /** The open entry's grid with its images, once loaded (a grid entry opens to its cells). */
  grid = $state.raw<Grid | null>(null);
  /** A cell of the open grid shown large, by index into `grid.generations`. */
  cellIndex = $state<number | null>(null);
  /** The image shown large: the open image entry, or the open cell of a grid. */
  readonly openItem: Generation | undefined = $derived.by(() => {
    const entry = this.openEntry;
    if (entry?.type === 'image') return entry;
    if (entry?.type === 'grid' && this.grid?.id === entry.id && this.cellIndex !== null) return this.grid.generations[this.cellIndex];
    return undefined;
  });

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  #pages = new Map<number, GalleryEntry[]>();
  /** Pages from before a refresh, shown until their replacement arrives: no flash of empty cells. */
  #stale = new Map<number, GalleryEntry[]>();
  #version = $state(0);
  readonly #loading = new Set<number>();
  /** Bumped by every refresh and filter change; answers from an older epoch are dropped. */
  #epoch = 0;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #gridLoading: number | null = null;

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  itemAt(index: number): GalleryEntry | undefined {
    void this.#version;
    const page = Math.floor(index / PAGE_SIZE);
    const offset = index % PAGE_SIZE;
    return this.#pages.get(page)?.[offset] ?? this.#stale.get(page)?.[offset];
  }

  indexOf(id: number): number {
    void this.#version;
    for (const [page, items] of this.#pages) {
      const i = items.findIndex((g) => g.type === 'image' && g.id === id);
      if (i >= 0) return page * PAGE_SIZE + i;
    }
    return -1;
  }

  setViewport(viewport: Viewport): void {
    const v = this.viewport;
    if (v.width === viewport.width && v.height === viewport.height && v.scrollTop === viewport.scrollTop) return;
    this.viewport = viewport;
    this.#ensureWindow();
  }

  async load(): Promise<void> {
    await this.#loadPage(0, this.#epoch);
    this.#ensureWindow();
  }

  setFavouritesOnly(on: boolean): void {
    this.favouritesOnly = on;
    this.#reset();
  }

  setAdapterFilter(id: number | null): void {
    this.adapterFilter = id;
    this.#reset();
  }

  /** A filter change is a different list: nothing of the old one may show through. */
  #reset(): void {
    this.#epoch++;
    this.#pages = new Map();
    this.#stale = new Map();
    this.#loading.clear();
    this.#version++;
    this.focusIndex = 0;
    this.close();
    this.viewport = { ...this.viewport, scrollTop: 0 };
    void this.load();
  }

  /** New or deleted images shift every index after them: reload what is on screen, keep the rest as stale. */
  refreshSoon(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => this.refresh(), REFRESH_COALESCE_MS);
  }

  refresh(): void {
    this.#epoch++;
    this.#stale = new Map([...this.#stale, ...this.#pages]);
    this.#pages = new Map();
    this.#loading.clear();
    void this.load();
  }

  #ensureWindow(): void {
    const w = this.window;
    // The first page also carries the total, so it is always wanted.
    const wanted = new Set([0, ...pagesFor(w.start, w.end, PAGE_SIZE)]);
    if (this.openIndex !== null) wanted.add(Math.floor(this.openIndex / PAGE_SIZE));
    for (const page of wanted) {
      if (!this.#pages.has(page) && !this.#loading.has(page)) void this.#loadPage(page, this.#epoch);
    }
  }

  async #loadPage(page: number, epoch: number): Promise<void> {
    if (this.#loading.has(page)) return;
    this.#loading.add(page);
    try {
      const input: { offset: number; limit: number; favourite?: boolean; adapterId?: number } = { offset: page * PAGE_SIZE, limit: PAGE_SIZE };
      if (this.favouritesOnly) input.favourite = true;
      if (this.adapterFilter !== null) input.adapterId = this.adapterFilter;
      const result = await this.#api.call('gallery.list', input);
      if (epoch !== this.#epoch) return;
      this.#pages.set(page, result.items);
      this.#stale.delete(page);
      // Pages past the end are gone for good (images were deleted).
      for (const key of this.#stale.keys()) if (key * PAGE_SIZE >= result.total) this.#stale.delete(key);
      this.total = result.total;
      this.error = null;
      this.#version++;
      this.#loadOpenGrid();
      if (this.focusIndex >= result.total) this.focusIndex = Math.max(0, result.total - 1);
      if (this.openIndex !== null && this.openIndex >= result.total) {
        if (result.total > 0) this.open(result.total - 1);
        else this.close();
      }
    } catch (error) {
      if (epoch === this.#epoch) this.error = errorMessage(error);
    } finally {
      if (epoch === this.#epoch) this.#loading.delete(page);
      this.loaded = true;
    }
  }

  open(index: number): void {
    if (index < 0 || index >= this.total) return;
    if (index !== this.openIndex) {
      this.grid = null;
      this.cellIndex = null;
    }
    this.openIndex = index;
    this.focusIndex = index;
    this.#ensureWindow();
    this.#loadOpenGrid();
  }

  /** An open grid entry needs its cells; its page may arrive only after it was opened. */
  #loadOpenGrid(): void {
    const index = this.openIndex;
    const entry = index === null ? undefined : this.itemAt(index);
    if (index !== null && entry?.type === 'grid' && this.grid?.id !== entry.id) void this.#loadGrid(entry.id, index);
  }

  close(): void {
    this.openIndex = null;
    this.grid = null;
    this.cellIndex = null;
  }

  async #loadGrid(id: number, index: number, again = false): Promise<void> {
    if (this.#gridLoading === id && !again) return;
    this.#gridLoading = id;
    try {
      const grid = await this.#api.call('grids.get', { id });
      if (this.openIndex === index) this.grid = grid;
    } catch (error) {
      if (this.openIndex === index) this.#toasts.error('open the grid', error);
    } finally {
      if (this.#gridLoading === id) this.#gridLoading = null;
    }
  }

  /** Shows one cell of the open grid large (its recipe, favourite, cover, export). */
  openCell(generationId: number): void {
    const i = this.grid?.generations.findIndex((g) => g.id === generationId) ?? -1;
    if (i >= 0) this.cellIndex = i;
  }

  /** From a cell back to its grid. */
  closeCell(): void {
    this.cellIndex = null;
  }

  /** Arrow keys in the viewer: through the grid's cells while one is open, else through the gallery. */
  step(delta: number): void {
    if (this.grid && this.cellIndex !== null) {
      this.cellIndex = Math.min(this.grid.generations.length - 1, Math.max(0, this.cellIndex + delta));
      return;
    }
    if (this.openIndex === null) return;
    this.open(Math.min(this.total - 1, Math.max(0, this.openIndex + delta)));
  }

  #replace(updated: Generation): void {
    for (const pages of [this.#pages, this.#stale]) {
      for (const [page, items] of pages) {
        const i = items.findIndex((g) => g.type === 'image' && g.id === updated.id);
        if (i >= 0) pages.set(page, items.with(i, { type: 'image', ...updated }));
      }
    }
    if (this.grid?.generations.some((g) => g.id === updated.id)) {
      this.grid = { ...this.grid, generations: this.grid.generations.map((g) => (g.id === updated.id ? updated : g)) };
    }
    this.#version++;
  }

  async setFavourite(g: Generation, favourite: boolean): Promise<void> {
    try {
      this.#replace(await this.#api.call('generations.setFavourite', { id: g.id, favourite }));
      // Un-favouriting inside the favourites view removes it from this list.
      if (this.favouritesOnly && !favourite) this.refresh();
    } catch (error) {
      this.#toasts.error(favourite ? 'add the favourite' : 'remove the favourite', error);
    }
  }

  /** Marks an image as pixel art (nearest-neighbour scaling at any size), or unmarks it. */
  async setPixelArt(g: Generation, pixelArt: boolean): Promise<void> {
    try {
      this.#replace(await this.#api.call('generations.setPixelArt', { id: g.id, pixelArt }));
    } catch (error) {
      this.#toasts.error('mark the image as pixel art', error);
    }
  }

  async delete(g: Generation): Promise<void> {
    try {
      await this.#api.call('generations.delete', { id: g.id });
      this.#toasts.show('info', 'Deleted the image', `Seed ${g.seed} · “${g.prompt || 'no prompt'}”`);
      // A deleted cell leaves its grid: back to the grid, which reloads without it.
      if (this.grid && this.cellIndex !== null) {
        this.cellIndex = null;
        const index = this.openIndex;
        if (index !== null) void this.#loadGrid(this.grid.id, index, true);
      }
      this.refresh();
    } catch (error) {
      this.#toasts.error('delete the image', error);
    }
  }

  /** Removes a grid entry (its images go too unless something else keeps them). */
  async deleteGrid(id: number): Promise<void> {
    try {
      await this.#api.call('grids.delete', { id });
      this.close();
      this.#toasts.show('info', 'Removed the grid from the Gallery');
      this.refresh();
    } catch (error) {
      this.#toasts.error('remove the grid', error);
    }
  }
}
