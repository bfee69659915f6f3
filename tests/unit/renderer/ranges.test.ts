// The renderer and the API agree on every mixing, sampling and training range (src/shared/ranges.ts): what the
// API accepts comes back into Mix, Compare and Train unchanged, and what those send the API accepts. The fake
// core here checks each call with the real API schema, so a renderer that clamps or overshoots fails.
import { beforeAll, describe, expect, it } from 'vitest';
import { api, type GenerateRequest, type MethodName } from '../../../src/shared/api';
import { ALPHA, SAMPLING, SEED, TRAINING } from '../../../src/shared/ranges';
import { openDatabase } from '../../../src/main/core/db/database';
import { adapterSummary, generation } from './fixtures';
import { loadRendererModules } from './svelte-modules';

let m: Awaited<ReturnType<typeof loadRendererModules>>;

beforeAll(async () => {
  m = await loadRendererModules([
    'src/renderer/src/lib/state/toasts.svelte.ts',
    'src/renderer/src/lib/state/mix.svelte.ts',
    'src/renderer/src/lib/state/compare.svelte.ts',
    'src/renderer/src/lib/state/training.svelte.ts',
  ]);
}, 60_000);

/** Answers like the core, after validating the input exactly as the core's registry does. */
function checkingApi(answers: Partial<Record<MethodName, (input: never) => unknown>>) {
  const calls: { method: MethodName; input: unknown }[] = [];
  return {
    calls,
    flavour: 'browser',
    mediaUrl: (kind: string, id: number) => `/media/${kind}/${id}`,
    async call(method: MethodName, input: unknown) {
      const parsed = api[method].input.parse(input, '');
      calls.push({ method, input: parsed });
      return answers[method]!(parsed as never);
    },
  };
}

const blend = { baseModelId: 1, entries: [], switchMs: 1, loadMs: 0, totalMs: 1, cacheHits: 0, cacheMisses: 0, layersReblended: 1, layersUnchanged: 0 };

describe('ranges: renderer and API agree', () => {
  it('a gallery recipe at the edges the API accepts comes back into Mix unchanged and generates as it was', async () => {
    const core = checkingApi({ 'mix.apply': () => blend, generate: (r: GenerateRequest) => [generation(1, { seed: r.seed! })] });
    const mix = new m.MixState(core, new m.Toasts());
    const recipe = generation(9, {
      seed: SEED.max,
      steps: SAMPLING.steps.max,
      guidance: SAMPLING.guidance.max,
      mix: [
        { adapterId: 1, alpha: ALPHA.min },
        { adapterId: 2, alpha: ALPHA.max },
        { adapterId: 3, alpha: 3.333 },
      ],
    });
    // The recipe as stored passed the API's own check.
    api.generate.input.parse({ prompt: recipe.prompt, seed: recipe.seed, steps: recipe.steps, guidance: recipe.guidance, mix: recipe.mix }, '');
    mix.loadRecipe(recipe);
    expect(mix.entries).toEqual(recipe.mix);
    await mix.generate();
    const sent = core.calls.find((c) => c.method === 'generate')!.input as GenerateRequest;
    expect(sent).toMatchObject({ seed: SEED.max, steps: SAMPLING.steps.max, guidance: SAMPLING.guidance.max, mix: recipe.mix });
  });

  it('an adapter’s preferred weight anywhere in the API’s range is used as it is; typed weights stay inside it', () => {
    const mix = new m.MixState(checkingApi({}), new m.Toasts());
    mix.add(adapterSummary({ id: 1, preferredWeight: ALPHA.min }));
    mix.add(adapterSummary({ id: 2, preferredWeight: ALPHA.max }));
    expect(mix.entries.map((e: { alpha: number }) => e.alpha)).toEqual([ALPHA.min, ALPHA.max]);
    for (const typed of [ALPHA.min - 1, ALPHA.max + 1, 0.123456, Number.NaN]) {
      mix.setAlpha(1, typed);
      const alpha = mix.entries[0].alpha as number;
      expect(() => api['mix.apply'].input.parse({ entries: [{ adapterId: 1, alpha }] }, '')).not.toThrow();
    }
  });

  it('Compare sends what the API takes: α values over the whole range, and a measurement at 200 steps', async () => {
    const core = checkingApi({
      generate: (r: GenerateRequest) => [generation(1, { seed: r.seed!, mix: r.mix! })],
      'grids.save': () => ({ id: 1 }),
      'concept.latest': () => null,
      'concept.evaluate': () => ({ adapterIds: [1], alphas: [], singles: [], fused: [] }),
    });
    const adapters = new Map([[1, adapterSummary({ id: 1 })]]);
    const compare = new m.CompareState(core, () => adapters);
    compare.adapterIds = [1];
    compare.includeBase = false;
    compare.promptsText = 'a ring';
    compare.alphasText = `${ALPHA.min}, 0.5, 3.5, ${ALPHA.max}`;
    compare.steps = SAMPLING.steps.max;
    compare.seed = SEED.max;
    expect(compare.alphas).toEqual([ALPHA.min, 0.5, 3.5, ALPHA.max]);
    await compare.run();
    const alphas = core.calls.filter((c) => c.method === 'generate').map((c) => (c.input as GenerateRequest).mix![0]!.alpha);
    expect(alphas).toEqual([ALPHA.min, 0.5, 3.5, ALPHA.max]);
    await compare.measure();
    expect(compare.measureError).toBeNull();
    // The judge measures the grid's weights it can score (CONCEPT.alpha), at the grid's steps.
    expect(core.calls.find((c) => c.method === 'concept.evaluate')!.input).toMatchObject({ alphas: [0.5], steps: SAMPLING.steps.max });
  });

  it('Train refuses exactly what the API refuses, field by field', async () => {
    const core = checkingApi({ 'training.start': () => ({ id: 1 }), 'training.list': () => [] });
    const training = new m.TrainingState(core, new m.Toasts());
    training.datasetId = 1;
    training.previews = false;
    const edges = {
      steps: [TRAINING.steps.min, TRAINING.steps.max],
      lr: [TRAINING.lr.min, TRAINING.lr.max],
      batch: [TRAINING.batch.min, TRAINING.batch.max],
      seed: [TRAINING.seed.min, TRAINING.seed.max],
      density: [TRAINING.density.min, TRAINING.density.max],
      tagDropout: [TRAINING.tagDropout.min, TRAINING.tagDropout.max],
    } as const;
    for (const [field, [lo, hi]] of Object.entries(edges)) {
      const step = Number.isInteger(lo) ? 1 : lo / 2 || 1e-9;
      for (const [value, ok] of [
        [lo, true],
        [hi, true],
        [lo - step, false],
        [hi + step, false],
      ] as const) {
        const before = training[field];
        training[field] = value;
        const asked = core.calls.length;
        const jobs = await training.start();
        // A value out of range is refused by the form itself, naming the field, before anything is sent.
        if (!ok) expect({ field, value, sent: core.calls.length > asked, error: field in training.fieldErrors }).toEqual({ field, value, sent: false, error: true });
        const apiTakes = (() => {
          try {
            api['training.start'].input.parse({ datasetId: 1, method: 'shira', [field]: value }, '');
            return true;
          } catch {
            return false;
          }
        })();
        expect({ field, value, renderer: jobs.length > 0 }).toEqual({ field, value, renderer: ok });
        expect({ field, value, api: apiTakes }).toEqual({ field, value, api: ok });
        training[field] = before;
      }
    }
  });

  it('the database stores every α the API accepts (mix_entries CHECK)', () => {
    const db = openDatabase(':memory:');
    db.prepare("INSERT INTO mixes (name) VALUES ('edges')").run();
    db.prepare("INSERT INTO base_models (name, family, resolution) VALUES ('m', 'clipart', 64)").run();
    db.prepare("INSERT INTO adapters (name, kind, method_json, base_model_id) VALUES ('a', 'shira', '{}', 1), ('b', 'shira', '{}', 1)").run();
    const put = db.prepare('INSERT INTO mix_entries (mix_id, adapter_id, alpha) VALUES (1, ?, ?)');
    expect(() => put.run(1, ALPHA.min)).not.toThrow();
    expect(() => put.run(2, ALPHA.max)).not.toThrow();
    db.prepare('DELETE FROM mix_entries').run();
    expect(() => put.run(1, ALPHA.max + 0.01)).toThrow(/CHECK/);
    db.close();
  });
});
