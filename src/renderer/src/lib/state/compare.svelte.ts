// Compare: a same-prompt, same-seed grid. The layout (which cell runs which mix) is pure data from
// `compareLayout`; this class runs the distinct cells one at a time, so the grid fills in as it
// goes and Cancel stops before the next cell. A finished grid is kept in the Gallery as one entry (unless the
// artist says not to); its cells are not gallery images of their own, and a cell drawn before is not drawn again.
import type { AdapterSummary, ConceptReport, CoreEvent, Generation, GridSummary } from '../../../../shared/api';
import { compareLayout, conceptNumbers, type CellSpec, type CompareLayout, type CompareMode } from '../compare';
import { errorMessage } from '../errors';
import { parseNumbers } from '../format';
import type { ApiClient } from '../transport';
import { ALPHA, CONCEPT, SAMPLING } from '../../../../shared/ranges';
import { randomSeed } from './mix.svelte';

export type CellResult = { status: 'running' } | { status: 'done'; generation: Generation } | { status: 'failed'; error: string };

const setKey = (ids: readonly number[]) => JSON.stringify([...new Set(ids)].sort((a, b) => a - b));

export class CompareState {
  mode = $state<CompareMode>('alpha');
  adapterIds = $state<number[]>([]);
  includeBase = $state(true);
  alphasText = $state('0.5, 1, 1.5');
  /** One prompt per line; the α mode uses the first. */
  promptsText = $state('');
  negativePrompt = $state('');
  weight = $state<number>(ALPHA.default);
  seed = $state(randomSeed());
  steps = $state<number>(SAMPLING.steps.default);
  guidance = $state<number>(SAMPLING.guidance.default);

  results = $state.raw<Record<string, CellResult>>({});
  /** The exact settings the results were made with: changing the form must not relabel old images. */
  ranWith = $state.raw<{ seed: number; steps: number; guidance: number; negativePrompt: string } | null>(null);
  running = $state(false);
  cancelRequested = $state(false);
  done = $state(0);
  total = $state(0);
  error = $state<string | null>(null);
  /** Keep finished grids in the Gallery (one entry each). Unticking it after a run removes that grid again. */
  keep = $state(true);
  /** The gallery entry of the last grid made, while it is kept. */
  savedGrid = $state.raw<GridSummary | null>(null);

  /** The newest concept-loss report for exactly the chosen adapters, when one was ever measured. */
  report = $state.raw<ConceptReport | null>(null);
  measuring = $state(false);
  measureProgress = $state.raw<{ phase: string; done: number; total: number } | null>(null);
  measureError = $state<string | null>(null);

  readonly alphas = $derived(parseNumbers(this.alphasText, ALPHA.min, ALPHA.max));
  readonly prompts = $derived(this.promptsText.split('\n'));

  readonly #api: ApiClient;
  readonly #adapters: () => ReadonlyMap<number, AdapterSummary>;
  /** The layout the results belong to (the form may have changed since). */
  #ran: CompareLayout | null = null;

  constructor(api: ApiClient, adapters: () => ReadonlyMap<number, AdapterSummary>) {
    this.#api = api;
    this.#adapters = adapters;
  }

  readonly layout = $derived.by(() => {
    const byId = this.#adapters();
    const adapters = this.adapterIds
      .map((id) => byId.get(id))
      .filter((a): a is AdapterSummary => a !== undefined)
      .map((a) => ({ id: a.id, name: a.name, kind: a.kind, triggerWords: a.triggerWords }));
    return compareLayout({
      mode: this.mode,
      adapters,
      includeBase: this.includeBase,
      alphas: this.alphas,
      prompts: this.mode === 'alpha' ? this.prompts.slice(0, 1) : this.prompts,
      weight: this.weight,
    });
  });

  /** Concept-loss numbers once per adapter beside the grid: only what the report measured, so nothing is made up. */
  readonly numbers = $derived(conceptNumbers(this.layout, this.report && setKey(this.report.adapterIds) === setKey(this.adapterIds) ? this.report : null));

  /** Why a measurement cannot run for the chosen adapters, or null when it can. */
  readonly measureProblem = $derived.by(() => {
    const byId = this.#adapters();
    const chosen = this.adapterIds.map((id) => byId.get(id)).filter((a) => a !== undefined);
    if (chosen.length === 0) return 'Pick the adapters to measure.';
    if (chosen.length > CONCEPT.maxAdapters) return `Measure at most ${CONCEPT.maxAdapters} adapters at once.`;
    const imported = chosen.find((a) => a.datasetId === null);
    if (imported) return `“${imported.name}” was imported without its training images, so its style cannot be judged.`;
    return null;
  });

  has(adapterId: number): boolean {
    return this.adapterIds.includes(adapterId);
  }

  toggleAdapter(adapterId: number): void {
    this.adapterIds = this.has(adapterId) ? this.adapterIds.filter((id) => id !== adapterId) : [...this.adapterIds, adapterId];
    void this.loadReport();
  }

  /** A sensible first grid: the newest SHiRA and the newest LoRA, the classic pairing to judge. */
  suggest(adapters: readonly AdapterSummary[], prompt: string): void {
    if (this.adapterIds.length === 0) {
      const newest = [...adapters].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id - a.id);
      const shira = newest.find((a) => a.kind === 'shira');
      const lora = newest.find((a) => a.kind === 'lora');
      this.adapterIds = [shira, lora].filter((a) => a !== undefined).map((a) => a.id);
    }
    void this.loadReport();
    if (this.promptsText.trim() === '' && prompt.trim() !== '') this.promptsText = prompt;
  }

  resultFor(cell: CellSpec): CellResult | undefined {
    return this.results[cell.key];
  }

  async run(): Promise<void> {
    if (this.running) return;
    const layout = this.layout;
    if (layout.problem) {
      this.error = layout.problem;
      return;
    }
    const settings = { seed: this.seed, steps: this.steps, guidance: this.guidance, negativePrompt: this.negativePrompt };
    this.running = true;
    this.cancelRequested = false;
    this.error = null;
    this.results = {};
    this.ranWith = settings;
    this.savedGrid = null;
    this.done = 0;
    this.total = layout.unique.length;
    try {
      for (const cell of layout.unique) {
        if (this.cancelRequested) break;
        this.results = { ...this.results, [cell.key]: { status: 'running' } };
        try {
          const [generation] = await this.#api.call('generate', { ...settings, prompt: cell.prompt, mix: cell.mix, batch: 1, forGrid: true });
          this.results = { ...this.results, [cell.key]: generation ? { status: 'done', generation } : { status: 'failed', error: 'No image came back.' } };
        } catch (error) {
          this.results = { ...this.results, [cell.key]: { status: 'failed', error: errorMessage(error) } };
        }
        this.done++;
      }
      this.#ran = layout;
      if (this.keep) await this.#save();
    } finally {
      this.running = false;
      this.cancelRequested = false;
    }
  }

  /** Keep or drop the last grid's gallery entry (the images stay on screen here either way). */
  async setKeep(keep: boolean): Promise<void> {
    this.keep = keep;
    if (this.running) return;
    if (keep && !this.savedGrid) await this.#save();
    else if (!keep && this.savedGrid) {
      const grid = this.savedGrid;
      this.savedGrid = null;
      try {
        await this.#api.call('grids.delete', { id: grid.id });
      } catch (error) {
        this.savedGrid = grid;
        this.error = `Couldn't remove the grid from the Gallery: ${errorMessage(error)}`;
      }
    }
  }

  async #save(): Promise<void> {
    const layout = this.#ran;
    const settings = this.ranWith;
    if (!layout || !settings) return;
    const idOf = (cell: CellSpec) => {
      const r = this.results[cell.key];
      return r?.status === 'done' ? r.generation.id : null;
    };
    const cells = layout.cells.map((row) => row.map(idOf));
    if (cells.flat().every((c) => c === null)) return;
    const axis = ({ label, sub, kind }: CompareLayout['rows'][number]) => ({ label, ...(sub ? { sub } : {}), ...(kind ? { kind } : {}) });
    const mode = { alpha: 'α sweep', prompts: 'Prompts', combine: 'Combine' }[layout.mode];
    try {
      this.savedGrid = await this.#api.call('grids.save', {
        title: `${mode} · ${layout.prompts[0]}`.slice(0, 300),
        mode: layout.mode,
        rows: layout.rows.map(axis),
        columns: layout.columns.map(axis),
        cells,
        prompts: layout.prompts,
        ...settings,
      });
    } catch (error) {
      this.error = `The grid was made but not kept in the Gallery: ${errorMessage(error)}`;
    }
  }

  cancel(): void {
    if (this.running) this.cancelRequested = true;
  }

  async loadReport(): Promise<void> {
    const ids = this.adapterIds;
    if (ids.length === 0 || ids.length > CONCEPT.maxAdapters) {
      this.report = null;
      return;
    }
    try {
      const report = await this.#api.call('concept.latest', { adapterIds: ids });
      // The selection may have changed while the answer was on its way.
      if (setKey(ids) === setKey(this.adapterIds)) this.report = report;
    } catch {
      // Numbers are an extra: the grid is still worth looking at without them.
      this.report = null;
    }
  }

  /** Trains a style judge on the adapters' own images and scores them alone and fused (minutes on a CPU). */
  async measure(): Promise<void> {
    if (this.measuring || this.measureProblem) return;
    this.measuring = true;
    this.measureError = null;
    this.measureProgress = null;
    const ids = [...this.adapterIds];
    // The grid's weights the judge can measure (a faint or negative α has no style to score), else its default.
    const { min, max, count } = CONCEPT.alpha;
    const alphas = (this.mode === 'alpha' ? this.alphas : [this.weight]).filter((a) => a >= min && a <= max).slice(0, count);
    try {
      const report = await this.#api.call('concept.evaluate', {
        adapterIds: ids,
        alphas: alphas.length > 0 ? alphas : [CONCEPT.alpha.default],
        steps: this.steps,
        guidance: this.guidance,
      });
      if (setKey(ids) === setKey(this.adapterIds)) this.report = report;
    } catch (error) {
      this.measureError = errorMessage(error);
    } finally {
      this.measuring = false;
      this.measureProgress = null;
    }
  }

  onEvent(event: CoreEvent): void {
    if (event.type === 'concept.progress' && this.measuring) this.measureProgress = { phase: event.phase, done: event.done, total: event.total };
  }
}
