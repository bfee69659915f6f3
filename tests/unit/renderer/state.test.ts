// The renderer's state classes against a fake core: what they ask for, in which order, and what
// they show while answers and events arrive. Compiled with the Svelte plugin (see svelte-modules.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import type {
  AdapterSummary,
  CoreEvent,
  Dataset,
  DatasetImage,
  GalleryEntry,
  GalleryPage,
  Generation,
  Grid,
  GridInput,
  MixEntry,
  MixResult,
  TrainingJob,
  TrainingRequest,
  WordCheck,
} from '../../../src/shared/api';
import { loadRendererModules, settle } from './svelte-modules';
import { adapterSummary, generation } from './fixtures';

let m: Awaited<ReturnType<typeof loadRendererModules>>;

beforeAll(async () => {
  m = await loadRendererModules([
    'src/renderer/src/lib/state/toasts.svelte.ts',
    'src/renderer/src/lib/state/mix.svelte.ts',
    'src/renderer/src/lib/state/training.svelte.ts',
    'src/renderer/src/lib/state/gallery.svelte.ts',
    'src/renderer/src/lib/state/library.svelte.ts',
    'src/renderer/src/lib/state/compare.svelte.ts',
    'src/renderer/src/lib/state/datasets.svelte.ts',
    'src/renderer/src/lib/state/importer.svelte.ts',
    'src/renderer/src/lib/state/words.svelte.ts',
    'src/renderer/src/lib/state/captions.svelte.ts',
    // The error class must be the bundle's own, or `instanceof` checks inside it fail.
    'src/shared/errors.ts',
  ]);
}, 60_000);

type Handler = (input: never) => unknown;

/** A stand-in for ApiClient: records every call and answers from `handlers`. */
function fakeApi(handlers: Record<string, Handler>, files?: unknown) {
  const calls: { method: string; input: unknown }[] = [];
  return {
    calls,
    flavour: 'browser',
    files,
    mediaUrl: (kind: string, id: number) => `/media/${kind}/${id}`,
    async call(method: string, input: unknown) {
      calls.push({ method, input });
      const handler = handlers[method];
      if (!handler) throw new Error(`unexpected call ${method}`);
      return handler(input as never);
    },
  };
}

const summary = adapterSummary;

const blend = (over: Partial<MixResult> = {}): MixResult => ({
  baseModelId: 1,
  entries: [],
  switchMs: 1.5,
  loadMs: 0,
  totalMs: 2,
  cacheHits: 0,
  cacheMisses: 1,
  layersReblended: 12,
  layersUnchanged: 0,
  ...over,
});

describe('MixState', () => {
  it('adds an adapter at its preferred weight (any the API accepts; typed ones kept in −4…4) and puts its trigger word in the prompt', () => {
    const mix = new m.MixState(fakeApi({}), new m.Toasts());
    mix.prompt = 'a lighthouse';
    mix.add(summary({ id: 1, preferredWeight: 3, triggerWords: ['neonfx'] }));
    mix.add(summary({ id: 1 }));
    mix.add(summary({ id: 2, preferredWeight: 0.7, triggerWords: ['NEONFX', 'inkfx'] }));
    expect(mix.slots).toEqual([
      { adapterId: 1, alpha: 3, enabled: true },
      { adapterId: 2, alpha: 0.7, enabled: true },
    ]);
    expect(mix.prompt).toBe('a lighthouse, neonfx, inkfx');
    mix.toggle(2);
    mix.setAlpha(1, -5);
    expect(mix.entries).toEqual([{ adapterId: 1, alpha: -4 }]);
    mix.prune(new Set([2]));
    expect(mix.slots.map((s: { adapterId: number }) => s.adapterId)).toEqual([2]);
  });

  it('blends first, then draws one image per call with consecutive seeds, showing each as it lands', async () => {
    const seen: number[] = [];
    let mix: InstanceType<typeof m.MixState>;
    const api = fakeApi({
      'mix.apply': () => blend(),
      generate: (input: { seed: number; batch: number; mix: MixEntry[] }) => {
        seen.push(mix.results.length);
        return [generation(100 + input.seed, { seed: input.seed, mix: input.mix })];
      },
    });
    mix = new m.MixState(api, new m.Toasts());
    mix.add(summary({ id: 5, preferredWeight: 0.8 }));
    mix.seed = 41;
    mix.seedLocked = true;
    mix.batch = 3;
    const made = await mix.generate();
    expect(made.map((g: Generation) => g.seed)).toEqual([41, 42, 43]);
    expect(seen).toEqual([0, 1, 2]);
    expect(api.calls.map((c) => c.method)).toEqual(['mix.apply', 'generate', 'generate', 'generate']);
    expect(api.calls[1].input).toMatchObject({ batch: 1, mix: [{ adapterId: 5, alpha: 0.8 }], steps: 25, guidance: 5 });
    expect(mix).toMatchObject({ generating: false, done: 3, total: 3 });
    expect(mix.lastBlend.switchMs).toBe(1.5);
  });

  it('rolls a new seed per run unless locked, stops between images on cancel, and keeps the last real switch time', async () => {
    let mix: InstanceType<typeof m.MixState>;
    let applied = 0;
    const api = fakeApi({
      'mix.apply': () => (applied++ === 0 ? blend({ switchMs: 3 }) : blend({ switchMs: 0.01, layersReblended: 0, cacheMisses: 0 })),
      generate: (input: { seed: number }) => {
        if (mix.done === 0) mix.cancel();
        return [generation(input.seed)];
      },
    });
    const toasts = new m.Toasts();
    mix = new m.MixState(api, toasts);
    mix.seed = 7;
    mix.batch = 4;
    await mix.apply();
    const made = await mix.generate();
    expect(made).toHaveLength(1);
    expect(mix.seed).not.toBe(7);
    expect(toasts.items[0].title).toBe('Stopped after 1 of 4 images');
    // The no-op re-blend before generating does not replace the time of the real switch.
    expect(mix.lastBlend.switchMs).toBe(3);
  });

  it('uses a seed the user typed without any lock to click; random each run is a choice the user makes', async () => {
    const seeds: number[] = [];
    const api = fakeApi({
      'mix.apply': () => blend(),
      generate: (input: { seed: number }) => {
        seeds.push(input.seed);
        return [generation(input.seed, { seed: input.seed })];
      },
    });
    const mix = new m.MixState(api, new m.Toasts());
    mix.batch = 1;
    expect(mix.seedLocked).toBe(false);
    mix.typeSeed(42);
    await mix.generate();
    await mix.generate();
    expect(seeds).toEqual([42, 42]);
    expect(mix.seedLocked).toBe(true);
    // Not a seed: ignored, the typed one stays.
    mix.typeSeed(Number.NaN);
    mix.typeSeed(-3);
    expect(mix.seed).toBe(42);
    mix.seedLocked = false;
    await mix.generate();
    expect(seeds[2]).not.toBe(42);
    expect(mix.seed).toBe(seeds[2]);
  });

  it('says why in plain words when the core refuses, and can re-run a gallery recipe exactly', async () => {
    const api = fakeApi({
      'mix.apply': () => {
        throw new m.ApiCallError({ type: 'bad_input', message: '"a" and "b" were trained on different base models and cannot be mixed.' });
      },
    });
    const mix = new m.MixState(api, new m.Toasts());
    expect(await mix.generate()).toEqual([]);
    expect(mix.error).toMatch(/different base models/);
    mix.loadRecipe(generation(9, { seed: 1234, steps: 30, guidance: 4, sampler: 'euler', prompt: 'p', negativePrompt: 'n', mix: [{ adapterId: 3, alpha: 0.5 }] }));
    expect(mix).toMatchObject({ seed: 1234, seedLocked: true, steps: 30, guidance: 4, sampler: 'euler', prompt: 'p', negativePrompt: 'n', batch: 1 });
    expect(mix.entries).toEqual([{ adapterId: 3, alpha: 0.5 }]);
  });
});

function job(over: Partial<TrainingJob> & { id: number }): TrainingJob {
  return {
    name: `job ${over.id}`,
    kind: 'shira',
    status: 'queued',
    datasetId: 1,
    baseModelId: 1,
    adapterId: null,
    step: 0,
    steps: 100,
    attempts: 0,
    config: { datasetId: 1, method: 'shira' },
    error: null,
    result: null,
    createdAt: '2026-01-01T00:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    ...over,
  };
}

describe('TrainingState', () => {
  it('asks for a SHiRA and a LoRA matched to its density for "both", with the sample prompts', () => {
    const training = new m.TrainingState(fakeApi({}), new m.Toasts());
    training.datasetId = 3;
    training.method = 'both';
    training.density = 0.05;
    training.steps = 8;
    training.batch = 2;
    training.samplePrompts = 'neonfx, a ring\n\n  neonfx, a box ';
    training.sampleEvery = 4;
    training.name = 'Neon';
    const [shira, lora] = training.requests() as TrainingRequest[];
    const common = { datasetId: 3, steps: 8, batch: 2, lr: 0.001, seed: 0, samplePrompts: ['neonfx, a ring', 'neonfx, a box'], sampleEvery: 4 };
    expect(shira).toEqual({ ...common, method: 'shira', mask: 'struct', density: 0.05, name: 'Neon · SHiRA' });
    expect(lora).toEqual({ ...common, method: 'lora', matchDensity: 0.05, name: 'Neon · LoRA' });
    training.method = 'lora';
    training.samplePrompts = '';
    expect(training.requests()).toEqual([{ datasetId: 3, steps: 8, batch: 2, lr: 0.001, seed: 0, method: 'lora', rank: 4, name: 'Neon' }]);
    // Augmentation goes to both halves of a pair, and only when asked for.
    training.method = 'both';
    training.tagDropout = 0.25;
    training.flip = true;
    for (const r of training.requests()) expect(r).toMatchObject({ tagDropout: 0.25, flip: true });
  });

  it('keeps tag dropout within 0–90 % before asking the core', async () => {
    const api = fakeApi({ 'training.start': () => [] });
    const training = new m.TrainingState(api, new m.Toasts());
    training.datasetId = 1;
    training.tagDropout = 0.95;
    expect(await training.start()).toEqual([]);
    expect(training.fieldErrors.tagDropout).toMatch(/0 % to 90 %/);
    expect(api.calls).toHaveLength(0);
  });

  it('checks the form before asking the core, and puts the core’s field errors beside the field', async () => {
    const api = fakeApi({
      'training.start': () => {
        throw new m.ApiCallError({ type: 'bad_input', message: 'training.start: steps: expected at most 200000', details: { path: 'steps', expected: 'at most 200000' } });
      },
    });
    const training = new m.TrainingState(api, new m.Toasts());
    training.samplePrompts = 'a ring';
    expect(await training.start()).toEqual([]);
    expect(training.fieldErrors.dataset).toMatch(/Choose a dataset/);
    expect(api.calls).toHaveLength(0);
    training.datasetId = 1;
    training.steps = 0;
    await training.start();
    expect(training.fieldErrors.steps).toMatch(/whole number/);
    training.steps = 10;
    await training.start();
    expect(training.fieldErrors).toEqual({ steps: 'Expected at most 200000.' });
  });

  it('draws previews by default, with prompts made from the dataset’s trigger word and captions, until the artist edits them', async () => {
    const images = ['neonfx, a ring', 'a box', 'a star'].map((caption, i) => ({ id: i + 1, caption }) as DatasetImage);
    const datasets: Record<number, Dataset> = {
      1: { id: 1, name: 'neon', triggerWord: 'neonfx', images, imageCount: 3 } as Dataset,
      2: { id: 2, name: 'ink', triggerWord: null, images: [{ id: 9, caption: 'a fox' } as DatasetImage], imageCount: 1 } as Dataset,
    };
    const api = fakeApi({ 'datasets.get': ({ id }: { id: number }) => datasets[id], 'training.start': (r: TrainingRequest) => job({ id: 1, config: r }) });
    const training = new m.TrainingState(api, new m.Toasts());
    expect(training.previews).toBe(true);
    await training.selectDataset(1);
    expect(training.samplePromptList).toEqual(['neonfx', 'neonfx, a ring', 'neonfx, a box', 'neonfx, a star']);
    expect(training.requests()[0]).toMatchObject({ samplePrompts: training.samplePromptList, sampleEvery: 100 });
    // Another dataset, other prompts; the artist's own prompts survive a refresh of the same dataset.
    await training.selectDataset(2);
    expect(training.samplePromptList).toEqual(['a fox']);
    training.setSamplePrompts('a fox in snow');
    await training.selectDataset(2);
    expect(training.samplePromptList).toEqual(['a fox in snow']);
    training.setSamplePrompts('');
    await training.start();
    expect(training.fieldErrors.samplePrompts).toMatch(/at least one preview prompt, or turn previews off/);
    training.previews = false;
    expect(training.requests()[0]).not.toHaveProperty('samplePrompts');
  });

  it('opened mid-run, shows the run’s loss history first and continues it with live points', async () => {
    let answer: (points: { step: number; loss: number }[]) => void = () => {};
    const api = fakeApi({
      'training.list': () => [job({ id: 3, status: 'running', step: 40 })],
      'training.samples': () => [],
      'training.loss': () => new Promise((r) => (answer = r)),
    });
    const training = new m.TrainingState(api, new m.Toasts());
    await training.loadJobs();
    // A live point arrives while the history is on its way; it must not be lost or put first.
    training.onEvent({ type: 'training.progress', jobId: 3, step: 41, steps: 100, loss: 0.5, itS: 1, etaS: 59 });
    answer([
      { step: 1, loss: 0.9 },
      { step: 20, loss: 0.7 },
      { step: 40, loss: 0.6 },
    ]);
    await settle();
    expect(training.lossOf(3).map((p: { step: number }) => p.step)).toEqual([1, 20, 40, 41]);
  });

  it('follows progress, previews and status events: fraction, loss curve, samples, and a toast when done', async () => {
    const api = fakeApi({
      'training.list': () => [job({ id: 7, status: 'completed', adapterId: 4, step: 100 })],
      'training.samples': () => [],
      'training.loss': () => [{ step: 100, loss: 0.2 }],
    });
    const toasts = new m.Toasts();
    const training = new m.TrainingState(api, toasts);
    training.jobs = [job({ id: 7, status: 'running' })];
    const events: CoreEvent[] = [
      { type: 'training.progress', jobId: 7, step: 10, steps: 100, loss: 0.9, itS: 5, etaS: 18 },
      { type: 'training.progress', jobId: 7, step: 20, steps: 100, loss: 0.7, itS: 5, etaS: 16 },
      { type: 'training.sample', jobId: 7, step: 20, sampleId: 3 },
      { type: 'training.sample', jobId: 7, step: 20, sampleId: 3 },
    ];
    for (const e of events) training.onEvent(e);
    expect(training.fractionOf(training.jobs[0])).toBeCloseTo(0.2);
    expect(training.runningJob.id).toBe(7);
    expect(training.lossOf(7)).toEqual([
      { step: 10, loss: 0.9 },
      { step: 20, loss: 0.7 },
    ]);
    // A chart receiving the curve must see a new value per event to redraw.
    expect(training.lossOf(7)).not.toBe(training.lossOf(7));
    expect(training.samples[7]).toEqual([{ id: 3, step: 20 }]);
    training.onEvent({ type: 'training.changed', jobId: 7, status: 'completed', adapterId: 4, error: null });
    expect(training.jobs[0].status).toBe('completed');
    expect(toasts.items.map((t: { title: string }) => t.title)).toEqual(['“job 7” finished']);
    await new Promise((r) => setTimeout(r, 150));
    await settle();
    expect(api.calls.map((c) => c.method)).toEqual(['training.list', 'training.samples', 'training.loss']);
    expect(training.lossOf(7)).toEqual([{ step: 100, loss: 0.2 }]);
    training.onEvent({ type: 'training.changed', jobId: 7, status: 'failed', adapterId: null, error: 'out of memory' });
    expect(toasts.items.at(-1)).toMatchObject({ tone: 'error', message: 'out of memory' });
  });
});

describe('GalleryState', () => {
  const all: GalleryEntry[] = Array.from({ length: 10_000 }, (_, i) => ({ type: 'image', ...generation(10_000 - i) }));
  const gallery = () => {
    const api = fakeApi({
      'gallery.list': ({ offset = 0, limit = 100, favourite }: { offset?: number; limit?: number; favourite?: boolean }): GalleryPage => {
        const items = favourite ? all.filter((g) => g.type === 'image' && g.favourite) : all;
        return { total: items.length, items: items.slice(offset, offset + limit) };
      },
      'generations.setFavourite': ({ id, favourite }: { id: number; favourite: boolean }) => ({ ...generation(id), favourite }),
    });
    return { api, state: new m.GalleryState(api, new m.Toasts()) };
  };

  it('reads 10,000 images page by page, only the pages the window shows', async () => {
    const { api, state } = gallery();
    state.setViewport({ width: 1000, height: 600, scrollTop: 0 });
    await state.load();
    await settle();
    expect(state.total).toBe(10_000);
    const pages = () => api.calls.map((c) => (c.input as { offset: number }).offset / m.PAGE_SIZE);
    expect(pages()).toEqual([0]);
    expect(state.window.end - state.window.start).toBeLessThan(100);
    expect(state.itemAt(0).id).toBe(10_000);
    expect(state.itemAt(5000)).toBeUndefined();

    state.setViewport({ width: 1000, height: 600, scrollTop: state.window.rowPitch * 1000 });
    await settle();
    const wanted = Math.floor(state.window.start / m.PAGE_SIZE);
    expect(pages()).toContain(wanted);
    expect(pages().length).toBeLessThanOrEqual(3);
    expect(state.itemAt(state.window.start).id).toBe(10_000 - state.window.start);
  });

  it('updates a favourite in place, opens and steps through images, and resets on a filter change', async () => {
    const { state } = gallery();
    state.setViewport({ width: 1000, height: 600, scrollTop: 0 });
    await state.load();
    await settle();
    await state.setFavourite(state.itemAt(1), true);
    expect(state.itemAt(1).favourite).toBe(true);
    state.open(1);
    expect(state.openItem.id).toBe(9_999);
    state.step(-1);
    state.step(-1);
    expect(state.openIndex).toBe(0);
    state.setFavouritesOnly(true);
    expect(state.openIndex).toBeNull();
    await settle();
    expect(state.total).toBe(0);
  });

  it('shows a Compare grid as one entry that opens to its cells; arrows step through the cells, back returns to the grid', async () => {
    const cells = [generation(11, { width: 512, height: 512 }), generation(12), generation(13)];
    const grid: Grid = {
      id: 4,
      title: 'Combine · a ring',
      mode: 'combine',
      rows: [{ label: 'a ring' }],
      columns: [{ label: 'Base model', kind: 'base' }, { label: 'S', kind: 'shira' }, { label: 'All fused' }],
      cells: [[11, 12, 13]],
      prompts: ['a ring, neonfx'],
      seed: 7,
      steps: 8,
      guidance: 5,
      negativePrompt: '',
      createdAt: '2026-01-02T00:00:00.000Z',
      generations: cells,
    };
    const { generations, ...summary } = grid;
    const entries: GalleryEntry[] = [
      { type: 'grid', ...summary },
      { type: 'image', ...generation(5) },
    ];
    const api = fakeApi({
      'gallery.list': (): GalleryPage => ({ total: 2, items: entries }),
      'grids.get': () => grid,
      'generations.setPixelArt': ({ id, pixelArt }: { id: number; pixelArt: boolean }) => ({ ...cells.find((g) => g.id === id)!, pixelArt }),
    });
    const state = new m.GalleryState(api, new m.Toasts());
    await state.load();
    expect(state.total).toBe(2);
    expect(state.indexOf(5)).toBe(1);
    state.open(0);
    expect(state.openItem).toBeUndefined();
    await settle();
    expect(state.grid.generations).toHaveLength(3);
    state.openCell(12);
    expect(state.openItem.id).toBe(12);
    state.step(1);
    state.step(1);
    expect(state.openItem.id).toBe(13);
    state.step(-2);
    expect(state.openItem.id).toBe(11);
    await state.setPixelArt(state.openItem, true);
    expect(state.openItem.pixelArt).toBe(true);
    state.closeCell();
    expect(state.openItem).toBeUndefined();
    expect(state.openIndex).toBe(0);
    expect(generations).toBe(cells);
  });
});

describe('LibraryState', () => {
  it('filters on the client, and imports adapter files through the upload staging folder', async () => {
    const staged: string[][] = [];
    const api = fakeApi(
      {
        'adapters.list': () => [summary({ id: 1, name: 'Ink', tags: ['ink'] }), summary({ id: 2, name: 'Neon', kind: 'lora', tags: ['neon'] })],
        'adapters.import': ({ path }: { path: string }) => summary({ id: 3, name: path }),
      },
      {
        sourceFor: async (files: { relativePath: string }[]) => {
          staged.push(files.map((f) => f.relativePath));
          return { kind: 'folder', path: '/data/uploads/abc' };
        },
      },
    );
    const toasts = new m.Toasts();
    const library = new m.LibraryState(api, toasts);
    await library.load();
    library.setKind('lora');
    expect(library.adapters.map((a: AdapterSummary) => a.id)).toEqual([2]);
    library.setKind('all');
    library.tag = 'ink';
    expect(library.adapters.map((a: AdapterSummary) => a.id)).toEqual([1]);
    expect(library.tags).toEqual(['ink', 'neon']);
    expect(library.nameOf(2)).toBe('Neon');
    expect(library.nameOf(99)).toBe('Deleted adapter #99');

    const file = (name: string) => new File([new Uint8Array(4)], name);
    await library.importFiles([file('Neon.safetensors'), file('Neon.shira.json')]);
    expect(staged).toEqual([['Neon.safetensors', 'Neon.shira.json']]);
    expect(api.calls.filter((c) => c.method === 'adapters.import').map((c) => c.input)).toEqual([{ path: '/data/uploads/abc/Neon.safetensors' }]);
    expect(library.all[0].id).toBe(3);
    await library.importFiles([file('notes.txt')]);
    expect(toasts.items.at(-1)).toMatchObject({ tone: 'error', title: 'Nothing to import' });
  });
});

describe('CompareState', () => {
  it('generates each distinct cell once with the same seed, and shows concept numbers only for the measured set', async () => {
    const adapters = new Map([
      [1, summary({ id: 1, name: 'S', createdAt: '2026-01-02T00:00:00.000Z' })],
      [2, summary({ id: 2, name: 'L', kind: 'lora', createdAt: '2026-01-03T00:00:00.000Z' })],
      [3, summary({ id: 3, name: 'old S' })],
    ]);
    let next = 1;
    const api = fakeApi({
      generate: (input: { seed: number; mix: MixEntry[] }) => [generation(next++, { seed: input.seed, mix: input.mix })],
      'grids.save': (input: GridInput) => ({ id: 1, createdAt: '', ...input }),
      'concept.latest': ({ adapterIds }: { adapterIds: number[] }) =>
        adapterIds.length === 2
          ? {
              id: 1,
              adapterIds: [1, 2],
              alphas: [1],
              judge: { classes: [], heldoutAccuracy: 1, heldoutAccuracyPerClass: [] },
              single: [
                { adapterId: 1, name: 'S', score: 0.5, baseScore: 0, drift: 0 },
                { adapterId: 2, name: 'L', score: 0.5, baseScore: 0, drift: 0 },
              ],
              fused: [],
              overlaps: [],
              seconds: 1,
              createdAt: '2026-01-01T00:00:00.000Z',
            }
          : null,
    });
    const compare = new m.CompareState(api, () => adapters);
    compare.suggest([...adapters.values()], 'a ring');
    expect(compare.adapterIds).toEqual([1, 2]);
    expect(compare.promptsText).toBe('a ring');
    compare.seed = 5;
    compare.alphasText = '0.5, 1';
    await compare.run();
    const generates = api.calls.filter((c) => c.method === 'generate').map((c) => c.input as { seed: number; mix: MixEntry[] });
    expect(generates).toHaveLength(5);
    expect(new Set(generates.map((g) => g.seed))).toEqual(new Set([5]));
    expect(generates[0].mix).toEqual([]);
    const layout = compare.layout;
    expect(compare.resultFor(layout.cells[0][1]).status).toBe('done');
    await settle();
    // The base row and each adapter's row get their own numbers.
    expect(Object.keys(compare.numbers.byAxis)).toEqual(['base', 'a1', 'a2']);
    compare.toggleAdapter(2);
    await settle();
    expect(compare.report).toBeNull();
    expect(compare.numbers.byAxis).toEqual({});
  });

  it('combine: draws with the trigger words added as Mix adds them, keeps the grid as one gallery entry, or not', async () => {
    const adapters = new Map([
      [1, summary({ id: 1, name: 'Neon · SHiRA', triggerWords: ['neonfx'] })],
      [2, summary({ id: 2, name: 'Ink · LoRA', kind: 'lora', triggerWords: ['inkfx'] })],
    ]);
    let next = 1;
    const saved: GridInput[] = [];
    const api = fakeApi({
      generate: (input: { prompt: string; mix: MixEntry[] }) => [generation(next++, { prompt: input.prompt, mix: input.mix })],
      'grids.save': (input: GridInput) => (saved.push(input), { id: 9, createdAt: '', ...input }),
      'grids.delete': () => ({ deleted: true }),
      'concept.latest': () => null,
    });
    const compare = new m.CompareState(api, () => adapters);
    compare.adapterIds = [1, 2];
    compare.mode = 'combine';
    compare.promptsText = 'a glowing ring';
    compare.seed = 7;
    await compare.run();
    const drawn = api.calls.filter((c) => c.method === 'generate').map((c) => c.input as { prompt: string; forGrid: boolean });
    expect(drawn).toHaveLength(4);
    expect(new Set(drawn.map((d) => d.prompt))).toEqual(new Set(['a glowing ring, neonfx, inkfx']));
    expect(drawn.every((d) => d.forGrid)).toBe(true);
    // Kept as one grid entry, the cells by row and column, the headers with each adapter's kind.
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatchObject({ mode: 'combine', cells: [[1, 2, 3, 4]], prompts: ['a glowing ring, neonfx, inkfx'], seed: 7 });
    expect(saved[0]!.columns.map((c) => c.kind)).toEqual(['base', 'shira', 'lora', undefined]);
    expect(compare.savedGrid.id).toBe(9);
    // Not keeping it removes the entry; the next run is not kept at all.
    await compare.setKeep(false);
    expect(api.calls.at(-1)).toEqual({ method: 'grids.delete', input: { id: 9 } });
    await compare.run();
    expect(saved).toHaveLength(1);
  });

  it('refuses to measure adapters that have no training images, in words', () => {
    const adapters = new Map([[1, summary({ id: 1, name: 'Imported', datasetId: null })]]);
    const compare = new m.CompareState(fakeApi({ 'concept.latest': () => null }), () => adapters);
    compare.adapterIds = [1];
    expect(compare.measureProblem).toMatch(/“Imported” was imported without its training images/);
  });
});

describe('WordCheckState', () => {
  const knight: WordCheck = {
    model: 'clipart-64',
    applies: true,
    spareRows: 64,
    words: [{ word: 'knight', known: false, spareRow: 60, sharesWith: [{ word: 'sprite', where: 'trigger of “Pixel”' }], triggerOf: [] }],
    suggestion: { word: 'knightfx', known: false, spareRow: 7, sharesWith: [], triggerOf: [] },
  };

  it('asks once typing pauses, marks the colliding word and offers a free trigger word', async () => {
    const api = fakeApi({ 'models.checkWords': () => knight });
    const words = new m.WordCheckState(api, () => 'trigger', 5);
    words.watch('k');
    words.watch('knight');
    await new Promise((r) => setTimeout(r, 20));
    await settle();
    expect(api.calls).toEqual([{ method: 'models.checkWords', input: { text: 'knight', suggest: true } }]);
    expect(words.marks.map((x: { word: string; tone: string }) => [x.word, x.tone])).toEqual([['knight', 'warn']]);
    expect(words.suggestion).toBe('knightfx');
    // An empty trigger field still offers a word, made from the fallback (the dataset's name).
    words.watch('', 'knight');
    expect(words.marks).toEqual([]);
    expect(words.suggestion).toBe('knightfx');
    expect(api.calls).toHaveLength(1);
  });

  it('in a prompt field offers no word and asks without a suggestion', async () => {
    const api = fakeApi({ 'models.checkWords': () => ({ ...knight, suggestion: undefined }) });
    const words = new m.WordCheckState(api, () => 'prompt', 1);
    words.watch('a knight');
    await new Promise((r) => setTimeout(r, 10));
    await settle();
    expect(api.calls[0]!.input).toEqual({ text: 'a knight' });
    expect(words.marks).toHaveLength(1);
    expect(words.suggestion).toBeNull();
  });
});

describe('CaptionEditorState', () => {
  it('previews a bulk edit over the whole dataset, then stores only the captions that change, in one call', async () => {
    const images = ['knight, painted portrait', 'painted portrait, armour', 'squire'].map((caption, i) => ({ id: i + 1, relPath: `${i}.png`, caption, datasetId: 1 }) as DatasetImage);
    const dataset = { id: 1, name: 'portraits', triggerWord: 'painted portrait', images, imageCount: 3 } as Dataset;
    const api = fakeApi({
      'datasets.get': () => dataset,
      'datasets.setCaptions': ({ captions }: { captions: { imageId: number; caption: string }[] }) => ({
        ...dataset,
        images: images.map((i) => ({ ...i, caption: captions.find((c) => c.imageId === i.id)?.caption ?? i.caption })),
      }),
    });
    const datasets = new m.DatasetsState(api, new m.Toasts());
    await datasets.open(1);
    const editor = new m.CaptionEditorState(datasets);
    expect(editor.frequency.map((t: { tag: string; count: number }) => [t.tag, t.count])).toEqual([
      ['painted portrait', 2],
      ['armour', 1],
      ['knight', 1],
      ['squire', 1],
    ]);
    editor.preview({ kind: 'remove', tag: 'knight' }, 'Remove “knight” everywhere');
    expect(editor.pending.proposals).toEqual([{ imageId: 1, path: '0.png', before: 'knight, painted portrait', after: 'painted portrait' }]);
    editor.preview({ kind: 'triggerFirst' }, 'Trigger first');
    expect(editor.pending.proposals.map((p: { after: string }) => p.after)).toEqual(['painted portrait, knight', 'painted portrait, squire']);
    await editor.apply();
    expect(api.calls.at(-1)).toEqual({
      method: 'datasets.setCaptions',
      input: {
        datasetId: 1,
        captions: [
          { imageId: 1, caption: 'painted portrait, knight' },
          { imageId: 3, caption: 'painted portrait, squire' },
        ],
      },
    });
    expect(editor.pending).toBeNull();
    expect(datasets.detail.images[2].caption).toBe('painted portrait, squire');
  });
});

describe('ImporterState', () => {
  it('sends the picked folder’s name for the core to name the dataset from (kohya-aware), and edits the trigger from the report', async () => {
    const report = { importId: 'x', datasetId: 3, imported: 2, skipped: 0, files: [], naming: { name: 'painted portrait', triggerWord: 'painted portrait', kohyaFolder: '10_painted portrait' } };
    const api = fakeApi(
      {
        'datasets.import': () => report,
        'datasets.list': () => [],
        'datasets.get': () => ({ id: 3, images: [] }),
        'datasets.update': ({ triggerWord }: { triggerWord: string | null }) => ({ id: 3, triggerWord }),
      },
      { sourceFor: async () => ({ kind: 'folder', path: '/data/uploads/u1' }) },
    );
    const datasets = new m.DatasetsState(api, new m.Toasts());
    const importer = new m.ImporterState(api, datasets, new m.Toasts(), () => null);
    importer.open();
    importer.staged = [{ file: new File([new Uint8Array(4)], 'a.png'), relativePath: 'a.png' }];
    importer.suggestedName = '10_painted portrait';
    await importer.start();
    expect(api.calls.find((c) => c.method === 'datasets.import')!.input).toMatchObject({ source: { kind: 'folder', path: '/data/uploads/u1' }, folderName: '10_painted portrait' });
    expect(api.calls.find((c) => c.method === 'datasets.import')!.input).not.toHaveProperty('name');
    expect(importer.report.naming.triggerWord).toBe('painted portrait');
    await importer.setTriggerWord(' paintfx ');
    expect(api.calls.find((c) => c.method === 'datasets.update')!.input).toEqual({ id: 3, triggerWord: 'paintfx' });
    expect(importer.report.naming.triggerWord).toBe('paintfx');
  });
});
