import type { AdapterSummary, Generation } from '../../../src/shared/api';

/** An adapter as `adapters.list` returns it: a 2 % SHiRA-Struct on clipart-64 unless `over` says otherwise. */
export function adapterSummary(over: Partial<AdapterSummary> & { id: number }): AdapterSummary {
  return {
    name: `adapter ${over.id}`,
    kind: 'shira',
    method: { method: 'shira', mask: 'struct', density: 0.02 },
    baseModelId: 1,
    baseModelName: 'clipart-64',
    baseWeightsHash: null,
    datasetId: 1,
    triggerWords: [],
    preferredWeight: 1,
    tags: [],
    notes: '',
    coverGenerationId: null,
    cover: null,
    sizeBytes: 1000,
    trainable: 500,
    bytesPerValue: 2,
    contentHash: null,
    fileSha256: null,
    autoV2: null,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    ...over,
  };
}

/** A generation as the core returns it: 64×64, DDIM 25 steps, guidance 5, no mix, unless `over` says otherwise. */
export function generation(id: number, over: Partial<Generation> = {}): Generation {
  return {
    id,
    baseModelId: 1,
    baseModelName: 'clipart-64',
    prompt: 'a ring',
    negativePrompt: '',
    seed: id,
    sampler: 'ddim',
    steps: 25,
    guidance: 5,
    width: 64,
    height: 64,
    mix: [],
    favourite: false,
    durationMs: 100,
    createdAt: '2026-01-01T00:00:00.000Z',
    engine: 'worker',
    pixelArt: false,
    ...over,
  };
}
