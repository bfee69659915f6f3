// The Models view's state against a fake core: the add form's call and refusal, live hash progress from events, the
// two-click removal, and the prediction override's call.
import { beforeAll, describe, expect, it } from 'vitest';
import type { BaseModel, CheckpointInfo } from '../../../src/shared/api';
import { loadRendererModules, settle } from './svelte-modules';

let m: Awaited<ReturnType<typeof loadRendererModules>>;
beforeAll(async () => {
  m = await loadRendererModules(['src/renderer/src/lib/state/models.svelte.ts', 'src/renderer/src/lib/state/toasts.svelte.ts', 'src/shared/errors.ts']);
}, 60_000);

const builtin: BaseModel = {
  id: 1,
  name: 'clipart-64',
  family: 'shira-studio-pixel-unet',
  resolution: 64,
  weightsHash: 'a'.repeat(64),
  isDefault: true,
  createdAt: '2026-01-01T00:00:00Z',
  source: 'builtin',
  familyLabel: 'Built-in pixel-space model',
  runnable: true,
  checkpoint: null,
};
const info: CheckpointInfo = {
  path: '/m/wide.safetensors',
  layout: 'ldm',
  prediction: null,
  detectedPrediction: null,
  predictionSource: 'undetermined',
  predictionNote: 'an SD-2.x file does not say',
  dtype: 'fp16',
  emaKeys: 0,
  weights: 'model',
  variant: null,
  sizeBytes: 1000,
  autoV2: null,
  hash: { state: 'pending', done: 0, total: 1000, error: null },
  status: 'ok',
  statusMessage: null,
  evidence: [],
  metadata: {},
  files: [],
  vae: null,
};
const wide: BaseModel = {
  ...builtin,
  id: 2,
  name: 'wide',
  family: 'stable-diffusion-2',
  resolution: 512,
  weightsHash: null,
  isDefault: false,
  source: 'user',
  familyLabel: 'SD-2.x (512 ε or 768 v?)',
  runnable: false,
  checkpoint: info,
};

function setup(list: () => BaseModel[], handlers: Record<string, (input: never) => unknown> = {}) {
  const calls: { method: string; input: unknown }[] = [];
  const api = {
    async call(method: string, input: unknown) {
      calls.push({ method, input });
      if (method === 'models.list') return list();
      const handler = handlers[method];
      if (!handler) throw new Error(`unexpected call ${method}`);
      return handler(input as never);
    },
  };
  const toasts = new m.Toasts();
  return { state: new m.ModelsState(api, toasts), calls, toasts };
}

describe('Models view state', () => {
  it('adds by path with only the fields given, clears the form, and keeps a refusal under it', async () => {
    let models = [builtin];
    const { state, calls } = setup(() => models, {
      'models.add': (input: { path: string }) => {
        if (input.path.endsWith('.ckpt')) throw new m.ApiCallError({ type: 'unsupported', message: '"old.ckpt" is a PyTorch pickle file.' });
        models = [builtin, wide];
        return wide;
      },
    });
    await state.load();
    expect(state.defaultModel.name).toBe('clipart-64');
    state.path = ' /m/old.ckpt ';
    await state.add();
    expect(state.addError).toBe('"old.ckpt" is a PyTorch pickle file.');
    expect(state.path).toBe(' /m/old.ckpt ');
    state.path = '/m/wide.safetensors';
    state.name = '  ';
    await state.add();
    expect(calls.filter((c) => c.method === 'models.add').map((c) => c.input)).toEqual([{ path: '/m/old.ckpt' }, { path: '/m/wide.safetensors' }]);
    expect(state.addError).toBeNull();
    expect(state.path).toBe('');
    expect(state.checkpoints.map((c: BaseModel) => c.name)).toEqual(['wide']);
  });

  it('shows hash progress from events, then reloads when the hash ends', async () => {
    let models = [builtin, wide];
    const { state, calls } = setup(() => models);
    await state.load();
    expect(state.hashOf(builtin)).toBeNull();
    expect(state.hashOf(wide)).toEqual(info.hash);
    state.onEvent({ type: 'models.hash', modelId: 2, state: 'running', done: 400, total: 1000, error: null });
    expect(state.hashOf(wide)).toEqual({ state: 'running', done: 400, total: 1000, error: null });
    expect(calls.filter((c) => c.method === 'models.list')).toHaveLength(1);
    models = [builtin, { ...wide, weightsHash: 'b'.repeat(64), checkpoint: { ...info, autoV2: 'bbbbbbbbbb', hash: { state: 'done', done: 1000, total: 1000, error: null } } }];
    state.onEvent({ type: 'models.hash', modelId: 2, state: 'done', done: 1000, total: 1000, error: null });
    await settle();
    expect(calls.filter((c) => c.method === 'models.list')).toHaveLength(2);
    expect(state.hashOf(state.list[1])).toMatchObject({ state: 'done' });
    expect(state.progress.size).toBe(0);
  });

  it('removes on the second click only, and sends the prediction override (null = detected)', async () => {
    const { state, calls } = setup(() => [builtin, wide], { 'models.remove': () => ({ removed: true }), 'models.setPrediction': () => wide });
    await state.load();
    await state.remove(2);
    expect(state.confirmRemoveId).toBe(2);
    expect(calls.some((c) => c.method === 'models.remove')).toBe(false);
    await state.remove(2);
    expect(calls.filter((c) => c.method === 'models.remove').map((c) => c.input)).toEqual([{ id: 2 }]);
    await state.setPrediction(2, 'v');
    await state.setPrediction(2, null);
    expect(calls.filter((c) => c.method === 'models.setPrediction').map((c) => c.input)).toEqual([
      { id: 2, prediction: 'v' },
      { id: 2, prediction: null },
    ]);
  });
});
