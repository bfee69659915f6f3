// The Train view: the form for a new run, the dataset it trains on, and every job with its live
// progress, loss curve and preview grids. Progress arrives as core events and lands in `$state.raw`
// records, so the view redraws per event without the state class copying long histories around.
import type { CoreEvent, Dataset, MaskKind, TrainingJob, TrainingRequest } from '../../../../shared/api';
import { ApiCallError } from '../../../../shared/errors';
import { TRAINING } from '../../../../shared/ranges';
import { MAX_PREVIEW_PROMPTS, previewPrompts } from '../captions';
import type { Point } from '../chart';
import { errorMessage, fieldErrorMessage, fieldOf } from '../errors';
import type { ApiClient } from '../transport';
import type { Toasts } from './toasts.svelte';

export type MethodChoice = 'shira' | 'lora' | 'both';
export type TrainField = 'dataset' | 'steps' | 'lr' | 'batch' | 'seed' | 'density' | 'rank' | 'samplePrompts' | 'sampleEvery' | 'name' | 'tagDropout';

export interface LiveProgress {
  step: number;
  steps: number;
  loss: number;
  itS: number;
  etaS: number;
}

export interface SampleRef {
  id: number;
  step: number;
}

/** A live curve longer than this is halved (every other point kept): memory stays flat on long runs. */
const MAX_LIVE_POINTS = 2000;
const REFRESH_COALESCE_MS = 100;

function fieldFromPath(path: string | null): TrainField | null {
  if (!path) return null;
  if (path === 'datasetId') return 'dataset';
  if (path === 'matchDensity') return 'density';
  const head = path.split(/[.[]/)[0];
  const fields: readonly TrainField[] = ['steps', 'lr', 'batch', 'seed', 'density', 'rank', 'samplePrompts', 'sampleEvery', 'name', 'tagDropout'];
  return fields.find((f) => f === head) ?? null;
}

export class TrainingState {
  // ---- the form ----
  datasetId = $state<number | null>(null);
  dataset = $state.raw<Dataset | null>(null);
  datasetError = $state<string | null>(null);
  name = $state('');
  method = $state<MethodChoice>('shira');
  mask = $state<MaskKind>('struct');
  /** SHiRA's share of each layer's weights; "both" gives the LoRA the same number of values. */
  density = $state<number>(TRAINING.density.default);
  rank = $state(4);
  steps = $state<number>(TRAINING.steps.default);
  lr = $state<number>(TRAINING.lr.default);
  batch = $state<number>(TRAINING.batch.default);
  seed = $state<number>(TRAINING.seed.default);
  /** Preview grids while training: on unless the artist turns them off. */
  previews = $state(true);
  /** One prompt per line; filled from the chosen dataset (trigger word, a few captions) until the artist edits it. */
  samplePrompts = $state('');
  sampleEvery = $state(100);
  /** Caption tag dropout, 0–0.9 (the trigger's tag always stays). */
  tagDropout = $state(0);
  /** Mirror images left–right on half the draws. */
  flip = $state(false);
  starting = $state(false);
  fieldErrors = $state<Partial<Record<TrainField, string>>>({});
  formError = $state<string | null>(null);

  // ---- jobs ----
  jobs = $state.raw<TrainingJob[]>([]);
  jobsLoaded = $state(false);
  progress = $state.raw<Record<number, LiveProgress>>({});
  samples = $state.raw<Record<number, SampleRef[]>>({});
  /** The job the run panel shows; null means "the one running now, else the newest". */
  shownJobId = $state<number | null>(null);
  cancelling = $state<number | null>(null);

  readonly samplePromptList = $derived(
    this.samplePrompts
      .split('\n')
      .map((p) => p.trim())
      .filter(Boolean),
  );
  readonly runningJob = $derived(this.jobs.find((j) => j.status === 'running') ?? null);
  readonly activeCount = $derived(this.jobs.filter((j) => j.status === 'running' || j.status === 'queued').length);
  readonly shownJob = $derived((this.shownJobId !== null ? this.jobs.find((j) => j.id === this.shownJobId) : undefined) ?? this.runningJob ?? this.jobs[0] ?? null);

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  /** Loss points per job; plain arrays behind a version counter (appending must not copy them). */
  readonly #losses = new Map<number, Point[]>();
  #lossVersion = $state(0);
  #datasetRequest = 0;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #datasetTimer: ReturnType<typeof setTimeout> | undefined;
  /** The preview prompts were typed by the artist for the dataset shown: a refresh must not replace them. */
  #promptsEdited = false;
  /** Jobs whose history (samples, finished curve) was fetched already. */
  readonly #hydrated = new Set<number>();

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  /** A fresh array per version, so a chart that receives it sees a new value and redraws. */
  lossOf(jobId: number): readonly Point[] {
    void this.#lossVersion;
    return [...(this.#losses.get(jobId) ?? [])];
  }

  /** Fraction done of a job, from live progress when there is some. */
  fractionOf(job: TrainingJob): number {
    if (job.status === 'completed') return 1;
    const live = this.progress[job.id];
    const step = live?.step ?? job.step;
    const steps = live?.steps ?? job.steps;
    return steps > 0 ? Math.min(1, step / steps) : 0;
  }

  async loadJobs(): Promise<void> {
    try {
      this.jobs = await this.#api.call('training.list', {});
    } catch (error) {
      this.#toasts.error('list the training runs', error);
    } finally {
      this.jobsLoaded = true;
    }
    const shown = this.shownJob;
    if (shown) void this.#hydrate(shown);
  }

  showJob(id: number): void {
    this.shownJobId = id;
    const job = this.jobs.find((j) => j.id === id);
    if (job) void this.#hydrate(job);
  }

  /**
   * Samples and the loss curve so far, from the library: a chart opened mid-run (a new window, a reload) starts
   * with the run's history and live points continue it. A finished job is read once more for its final curve.
   */
  async #hydrate(job: TrainingJob): Promise<void> {
    const complete = job.status === 'completed' && job.adapterId !== null;
    if (this.#hydrated.has(job.id) && !complete) return;
    this.#hydrated.add(job.id);
    try {
      const [samples, history] = await Promise.all([this.#api.call('training.samples', { id: job.id }), this.#api.call('training.loss', { id: job.id })]);
      this.samples = { ...this.samples, [job.id]: samples };
      // Points that arrived while the history was on its way come after it.
      const last = history.at(-1)?.step ?? -1;
      const live = (this.#losses.get(job.id) ?? []).filter((p) => p.step > last);
      if (history.length > 0 || live.length > 0) {
        this.#losses.set(job.id, [...history, ...live]);
        this.#lossVersion++;
      }
    } catch {
      // History is a nicety: the live view works without it, and the next event fills it in.
      this.#hydrated.delete(job.id);
    }
  }

  async selectDataset(id: number | null): Promise<void> {
    this.datasetId = id;
    this.fieldErrors = { ...this.fieldErrors, dataset: undefined };
    if (id === null) {
      this.dataset = null;
      return;
    }
    if (this.dataset?.id !== id) this.dataset = null;
    const request = ++this.#datasetRequest;
    try {
      const dataset = await this.#api.call('datasets.get', { id });
      if (request !== this.#datasetRequest) return;
      if (this.dataset?.id !== dataset.id) this.#promptsEdited = false;
      this.dataset = dataset;
      this.datasetError = null;
      if (!this.#promptsEdited) this.samplePrompts = previewPrompts(dataset).join('\n');
    } catch (error) {
      if (request !== this.#datasetRequest) return;
      // Deleted in the Datasets view meanwhile: nothing to train on, and nothing to complain about.
      if (error instanceof ApiCallError && error.type === 'not_found') {
        this.datasetId = null;
        this.dataset = null;
      } else this.datasetError = errorMessage(error);
    }
  }

  /** Called when datasets change elsewhere (once per file during an import, hence the coalescing). */
  refreshDataset(): void {
    clearTimeout(this.#datasetTimer);
    this.#datasetTimer = setTimeout(() => {
      if (this.datasetId !== null) void this.selectDataset(this.datasetId);
    }, REFRESH_COALESCE_MS);
  }

  /** The preview prompts as the artist types them; from then on they are the artist's, not the dataset's. */
  setSamplePrompts(text: string): void {
    this.samplePrompts = text;
    this.#promptsEdited = true;
  }

  async setCaption(imageId: number, caption: string): Promise<void> {
    const image = await this.#api.call('datasets.setCaption', { imageId, caption });
    const dataset = this.dataset;
    if (dataset && dataset.id === image.datasetId) this.dataset = { ...dataset, images: dataset.images.map((i) => (i.id === image.id ? image : i)) };
  }

  /** What the form asks the core for: one request, or a SHiRA and a size-matched LoRA. */
  requests(): TrainingRequest[] {
    const datasetId = this.datasetId;
    if (datasetId === null) return [];
    const common: Omit<TrainingRequest, 'method'> = { datasetId, steps: this.steps, lr: this.lr, batch: this.batch, seed: this.seed };
    if (this.tagDropout > 0) common.tagDropout = this.tagDropout;
    if (this.flip) common.flip = true;
    const prompts = this.samplePromptList;
    if (this.previews && prompts.length > 0) {
      common.samplePrompts = prompts;
      common.sampleEvery = this.sampleEvery;
    }
    const name = this.name.trim();
    const shira: TrainingRequest = { ...common, method: 'shira', mask: this.mask, density: this.density };
    if (this.method === 'shira') return [{ ...shira, ...(name ? { name } : {}) }];
    if (this.method === 'lora') return [{ ...common, method: 'lora', rank: this.rank, ...(name ? { name } : {}) }];
    // Parameter-matched: the LoRA gets the rank whose size equals SHiRA's at this density.
    const lora: TrainingRequest = { ...common, method: 'lora', matchDensity: this.density };
    return name
      ? [
          { ...shira, name: `${name} · SHiRA` },
          { ...lora, name: `${name} · LoRA` },
        ]
      : [shira, lora];
  }

  #validate(): boolean {
    const errors: Partial<Record<TrainField, string>> = {};
    if (this.datasetId === null) errors.dataset = 'Choose a dataset to train on, or import a folder of images.';
    else if (this.dataset && this.dataset.imageCount === 0) errors.dataset = 'This dataset has no images. Add some in Datasets first.';
    const T = TRAINING;
    const whole = (x: number, r: { min: number; max: number }) => Number.isInteger(x) && x >= r.min && x <= r.max;
    const pct = (x: number) => `${+(x * 100).toFixed(2)} %`;
    if (!whole(this.steps, T.steps)) errors.steps = `Steps must be a whole number from ${T.steps.min} to ${T.steps.max.toLocaleString('en')}.`;
    if (!(this.lr >= T.lr.min && this.lr <= T.lr.max)) errors.lr = `Learning rate must be from ${T.lr.min} to ${T.lr.max} (try ${T.lr.default}).`;
    if (!whole(this.batch, T.batch)) errors.batch = `Batch must be a whole number from ${T.batch.min} to ${T.batch.max}.`;
    if (!whole(this.seed, T.seed)) errors.seed = `Seed must be a whole number from ${T.seed.min} to ${T.seed.max}.`;
    if (this.method !== 'lora' && !(this.density >= T.density.min && this.density <= T.density.max)) errors.density = `Density must be between ${pct(T.density.min)} and ${pct(T.density.max)}.`;
    if (this.method === 'lora' && !whole(this.rank, T.rank)) errors.rank = `Rank must be a whole number from ${T.rank.min} to ${T.rank.max}.`;
    if (!(this.tagDropout >= T.tagDropout.min && this.tagDropout <= T.tagDropout.max)) errors.tagDropout = `Tag dropout must be from ${pct(T.tagDropout.min)} to ${pct(T.tagDropout.max)}.`;
    if (this.previews) {
      if (this.samplePromptList.length === 0) errors.samplePrompts = 'Write at least one preview prompt, or turn previews off.';
      else if (this.samplePromptList.length > T.maxPreviewPrompts)
        errors.samplePrompts = `Up to ${T.maxPreviewPrompts} preview prompts, one per line (${MAX_PREVIEW_PROMPTS} fit one row of the preview).`;
      if (!whole(this.sampleEvery, T.sampleEvery)) errors.sampleEvery = `Preview every ${T.sampleEvery.min} to ${T.sampleEvery.max.toLocaleString('en')} steps.`;
    }
    this.fieldErrors = errors;
    return Object.keys(errors).length === 0;
  }

  async start(): Promise<TrainingJob[]> {
    if (this.starting) return [];
    this.formError = null;
    if (!this.#validate()) return [];
    this.starting = true;
    const started: TrainingJob[] = [];
    try {
      for (const request of this.requests()) started.push(await this.#api.call('training.start', request));
      this.jobs = [...started.toReversed(), ...this.jobs.filter((j) => !started.some((s) => s.id === j.id))];
      this.shownJobId = started[0]?.id ?? null;
      const what = started.length > 1 ? `${started.length} training runs` : `“${started[0]?.name}”`;
      this.#toasts.show('info', `Training ${what}`, 'It keeps going while you do other things; the adapter appears in the Library when it is done.');
    } catch (error) {
      const field = fieldFromPath(fieldOf(error));
      if (field) this.fieldErrors = { [field]: fieldErrorMessage(error) };
      else this.formError = errorMessage(error);
      // A "both" run whose second half failed still has its first half running: show it.
      if (started.length > 0) this.jobs = [...started, ...this.jobs];
    } finally {
      this.starting = false;
    }
    return started;
  }

  async cancel(job: TrainingJob): Promise<void> {
    if (this.cancelling !== null) return;
    this.cancelling = job.id;
    try {
      const updated = await this.#api.call('training.cancel', { id: job.id });
      this.jobs = this.jobs.map((j) => (j.id === updated.id ? updated : j));
    } catch (error) {
      // Finishing in the meantime is not a failure worth a red toast.
      if (!(error instanceof ApiCallError && error.type === 'conflict')) this.#toasts.error(`cancel “${job.name}”`, error);
    } finally {
      this.cancelling = null;
    }
  }

  onEvent(event: CoreEvent): void {
    switch (event.type) {
      case 'training.progress': {
        const { jobId, step, steps, loss, itS, etaS } = event;
        this.progress = { ...this.progress, [jobId]: { step, steps, loss, itS, etaS } };
        let points = this.#losses.get(jobId);
        if (!points) this.#losses.set(jobId, (points = []));
        if (points.length === 0 || points[points.length - 1].step < step) points.push({ step, loss });
        if (points.length > MAX_LIVE_POINTS)
          this.#losses.set(
            jobId,
            points.filter((_, i) => i % 2 === 1 || i === points.length - 1),
          );
        this.#lossVersion++;
        this.jobs = this.jobs.map((j) => (j.id === jobId ? { ...j, step, steps, status: 'running' } : j));
        break;
      }
      case 'training.sample': {
        const list = this.samples[event.jobId] ?? [];
        if (!list.some((s) => s.id === event.sampleId)) {
          this.samples = { ...this.samples, [event.jobId]: [...list, { id: event.sampleId, step: event.step }] };
        }
        break;
      }
      case 'training.changed': {
        const job = this.jobs.find((j) => j.id === event.jobId);
        if (job && job.status !== event.status) this.#announce(job, event.status, event.error);
        this.jobs = this.jobs.map((j) => (j.id === event.jobId ? { ...j, status: event.status, adapterId: event.adapterId, error: event.error } : j));
        this.#refreshSoon();
        break;
      }
    }
  }

  #announce(job: TrainingJob, status: TrainingJob['status'], error: string | null): void {
    if (status === 'completed') this.#toasts.show('success', `“${job.name}” finished`, 'The adapter is in the Library, ready to mix.');
    else if (status === 'failed') this.#toasts.show('error', `Training “${job.name}” failed`, error ?? 'The engine gave no reason; see logs/worker.log in the data folder.');
  }

  #refreshSoon(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => void this.loadJobs(), REFRESH_COALESCE_MS);
  }
}
