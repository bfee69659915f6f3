// The ranges and defaults of mixing, sampling and training, defined once. The API's schema (api.ts) checks input
// against them, the renderer's fields (Mix, Compare, Train, a gallery recipe loaded back) offer them, and the core
// fills in the same defaults before it asks the worker, so a value the API accepts is never clamped or refused
// anywhere else. The native worker's own checks are wider (steps ≤ 1000, guidance ≤ 100, |α| ≤ 100): they guard
// the process, these are the product's.

/** α, an adapter's weight in a mix (W = W0 + Σ αᵢ·Sᵢ, paper §3.2); also the database's CHECK on mix_entries.alpha. */
export const ALPHA = { min: -4, max: 4, step: 0.05, default: 1 } as const;
/** The slider spans the weights artists reach for; the number field beside it takes all of ALPHA. */
export const ALPHA_SLIDER = { min: -1, max: 2 } as const;
/** Adapters in one mix. */
export const MIX_MAX_ADAPTERS = 32;

/** Seeds fit a signed 32-bit integer: what A1111 and ComfyUI show and what every PNG recipe round-trips. */
export const SEED = { min: 0, max: 2 ** 31 - 1 } as const;

export const SAMPLING = {
  steps: { min: 1, max: 200, default: 25 },
  guidance: { min: 0, max: 30, step: 0.5, default: 5 },
  /** A request without a batch makes one image. */
  batch: { min: 1, max: 16, default: 1 },
  sampler: { default: 'ddim' },
} as const;

/** The concept-loss measurement (concept.evaluate): its judge's limits and its own lighter sampling defaults. */
export const CONCEPT = {
  maxAdapters: 4,
  /** Weights the judge measures at (at most `count` of them); below `min` a style is too faint to score. */
  alpha: { min: 0.05, max: 2, count: 4, default: 1 },
  steps: { ...SAMPLING.steps, default: 20 },
  guidance: { ...SAMPLING.guidance, default: 4 },
} as const;

export const TRAINING = {
  steps: { min: 1, max: 200_000, default: 500 },
  lr: { min: 1e-7, max: 1, default: 1e-3 },
  batch: { min: 1, max: 64, default: 4 },
  seed: { ...SEED, default: 0 },
  /** SHiRA's share of each targeted weight it trains (and a matched LoRA's). */
  density: { min: 0.0001, max: 0.5, default: 0.02 },
  rank: { min: 1, max: 256 },
  /** kohya's caption_tag_dropout_rate. */
  tagDropout: { min: 0, max: 0.9 },
  checkpointEvery: { min: 1, max: 100_000, default: 50 },
  sampleEvery: { min: 1, max: 100_000 },
  maxPreviewPrompts: 8,
} as const;
