// Mix & generate: which adapters at which α, the prompt and sampling settings, and the run.
// A batch is generated one image per call (seed, seed+1, … exactly as the core does for a batch),
// so the view can show each image as it lands and Cancel takes effect before the next one.
import type { AdapterSummary, GenerateEngine, Generation, MixEntry, MixResult, SamplerName } from '../../../../shared/api';
import { ALPHA, SAMPLING, SEED } from '../../../../shared/ranges';
import { withTriggerWords } from '../captions';
import { errorMessage } from '../errors';
import type { ApiClient } from '../transport';
import type { Toasts } from './toasts.svelte';

export interface MixSlot {
  adapterId: number;
  alpha: number;
  /** Off keeps the slot and its α but leaves it out of the blend: quick A/B without losing the setting. */
  enabled: boolean;
}

/**
 * An α from the slider or the number field: to hundredths (slider steps carry float noise, and α is part of what
 * identifies a generation) and within the range the API takes. Stored weights (a recipe, an adapter's preferred
 * weight) are already in range and are used as they are.
 */
export function inputAlpha(alpha: number): number {
  if (!Number.isFinite(alpha)) return ALPHA.default;
  return Math.min(ALPHA.max, Math.max(ALPHA.min, Math.round(alpha * 100) / 100));
}

export function randomSeed(): number {
  return Math.floor(Math.random() * SEED.max);
}

export class MixState {
  slots = $state<MixSlot[]>([]);
  prompt = $state('');
  negativePrompt = $state('');
  seed = $state(randomSeed());
  /**
   * Locked: every Generate uses `seed`. Unlocked ("Random each run", shown as such): each Generate rolls a new one
   * and shows it. A seed the user types or rolls locks it: a typed seed is never thrown away for a random one.
   */
  seedLocked = $state(false);
  steps = $state<number>(SAMPLING.steps.default);
  guidance = $state<number>(SAMPLING.guidance.default);
  sampler = $state<SamplerName>(SAMPLING.sampler.default);
  batch = $state(4);
  /** Auto: whichever engine the core measured faster here; ONNX Runtime patches SHiRA mixes in place. */
  engine = $state<GenerateEngine>('auto');

  generating = $state(false);
  cancelRequested = $state(false);
  done = $state(0);
  total = $state(0);
  results = $state.raw<Generation[]>([]);
  error = $state<string | null>(null);

  applying = $state(false);
  lastBlend = $state.raw<MixResult | null>(null);

  readonly entries: MixEntry[] = $derived(this.slots.filter((s) => s.enabled).map(({ adapterId, alpha }) => ({ adapterId, alpha })));

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  #applyTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(api: ApiClient, toasts: Toasts) {
    this.#api = api;
    this.#toasts = toasts;
  }

  /** The seed field: a whole number in range is used from now on (locked); anything else is ignored. */
  typeSeed(value: number): void {
    if (!Number.isInteger(value) || value < SEED.min || value > SEED.max) return;
    this.seed = value;
    this.seedLocked = true;
  }

  has(adapterId: number): boolean {
    return this.slots.some((s) => s.adapterId === adapterId);
  }

  add(adapter: AdapterSummary): void {
    if (this.has(adapter.id)) return;
    this.slots.push({ adapterId: adapter.id, alpha: adapter.preferredWeight, enabled: true });
    this.prompt = withTriggerWords(this.prompt, adapter.triggerWords);
    this.applySoon();
  }

  remove(adapterId: number): void {
    this.slots = this.slots.filter((s) => s.adapterId !== adapterId);
    this.applySoon();
  }

  setAlpha(adapterId: number, alpha: number): void {
    const slot = this.slots.find((s) => s.adapterId === adapterId);
    if (slot) slot.alpha = inputAlpha(alpha);
  }

  toggle(adapterId: number): void {
    const slot = this.slots.find((s) => s.adapterId === adapterId);
    if (slot) slot.enabled = !slot.enabled;
    this.applySoon();
  }

  /** Drops slots whose adapter was deleted: the core would refuse the whole mix for one of them. */
  prune(existing: ReadonlySet<number>): void {
    if (this.slots.some((s) => !existing.has(s.adapterId))) this.slots = this.slots.filter((s) => existing.has(s.adapterId));
  }

  /**
   * Blends the current mix into the model shortly after the last change, so the switch time is
   * on screen before anyone presses Generate. Skipped mid-run: each generation applies its own mix.
   */
  applySoon(delayMs = 250): void {
    clearTimeout(this.#applyTimer);
    this.#applyTimer = setTimeout(() => {
      if (!this.generating) void this.apply();
    }, delayMs);
  }

  async apply(): Promise<MixResult | null> {
    this.applying = true;
    try {
      const result = await this.#api.call('mix.apply', { entries: this.entries });
      // Re-applying an unchanged mix costs nothing; the time worth showing is the last real switch.
      if (result.layersReblended > 0 || result.cacheMisses > 0 || this.lastBlend === null) this.lastBlend = result;
      this.error = null;
      return result;
    } catch (error) {
      this.error = errorMessage(error);
      return null;
    } finally {
      this.applying = false;
    }
  }

  async generate(): Promise<Generation[]> {
    if (this.generating) return [];
    clearTimeout(this.#applyTimer);
    if (!this.seedLocked) this.seed = randomSeed();
    const entries = this.entries;
    const batch = Math.max(SAMPLING.batch.min, Math.min(SAMPLING.batch.max, Math.round(this.batch)));
    const request = {
      prompt: this.prompt,
      negativePrompt: this.negativePrompt,
      steps: this.steps,
      guidance: this.guidance,
      sampler: this.sampler,
      engine: this.engine,
    };
    const seed0 = this.seed;
    this.generating = true;
    this.cancelRequested = false;
    this.error = null;
    this.done = 0;
    this.total = batch;
    this.results = [];
    const made: Generation[] = [];
    try {
      if (!(await this.apply())) return [];
      for (let i = 0; i < batch && !this.cancelRequested; i++) {
        // The mix goes with every call: another window may have re-blended the model in between.
        const [image] = await this.#api.call('generate', { ...request, seed: (seed0 + i) % (SEED.max + 1), batch: 1, mix: entries });
        if (image) made.push(image);
        this.results = [...made];
        this.done = i + 1;
      }
      if (this.cancelRequested && made.length < batch) this.#toasts.show('info', `Stopped after ${made.length} of ${batch} images`);
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      this.generating = false;
      this.cancelRequested = false;
    }
    return made;
  }

  cancel(): void {
    if (this.generating) this.cancelRequested = true;
  }

  /** Puts a gallery image's recipe back in the form, seed locked so it comes out the same. */
  loadRecipe(g: Generation): void {
    this.slots = g.mix.map((e) => ({ adapterId: e.adapterId, alpha: e.alpha, enabled: true }));
    this.prompt = g.prompt;
    this.negativePrompt = g.negativePrompt;
    this.seed = g.seed;
    this.seedLocked = true;
    this.steps = g.steps;
    this.guidance = g.guidance;
    this.sampler = g.sampler;
    this.batch = 1;
  }
}
