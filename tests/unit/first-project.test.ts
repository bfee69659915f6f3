// The core side of issue 24 (what an artist tripped over on a first real project): kohya folder naming, the word
// tokenizer's unknown and colliding words, bulk caption edits, a run's loss history, and the gallery's grids, one
// row per identical generation and pixel-art marks (the last through the real worker when it is built).
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { GridInput } from '../../src/shared/api';
import { uploadsDir } from '../../src/main/core/paths';
import { fnv1a64, WordTokenizer } from '../../src/main/core/ort/model';
import { limitations, sharedRowChance } from '../../tools/model-card';
import { makeCore, solidImage, tempDir, writeTree, type Caller } from './helpers';

const ROOT = resolve(__dirname, '../..');
const RESOURCES = join(ROOT, 'resources');
const WORKER = join(ROOT, 'native', 'build', 'shira-worker');
const runnable = existsSync(WORKER) || process.env.CI === 'true';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function setup(options: Parameters<typeof makeCore>[0] = {}) {
  const env = makeCore(options);
  const folder = tempDir('shira-images-');
  cleanups.push(env.cleanup, folder.cleanup);
  return { ...env, folder: folder.path };
}

const png = (n: number) => solidImage(16, 16, 'png', { r: n, g: 2 * n, b: 3 * n });

describe('kohya folders name the dataset and suggest its trigger word', () => {
  it('drops the repeat prefix, takes the class words as the trigger, and says so in the report', async () => {
    const { call, folder } = setup();
    const kohya = join(folder, '10_painted portrait');
    writeTree(kohya, { 'a.png': await png(1), 'b.png': await png(2), 'b.txt': 'painted portrait, a knight' });
    const report = await call('datasets.import', { source: { kind: 'folder', path: kohya } });
    expect(report.naming).toEqual({ name: 'painted portrait', triggerWord: 'painted portrait', kohyaFolder: '10_painted portrait' });
    const dataset = await call('datasets.get', { id: report.datasetId! });
    expect(dataset).toMatchObject({ name: 'painted portrait', triggerWord: 'painted portrait', weightedCount: 20 });

    // The usual kohya layout: a training folder holding one `N_name` folder.
    writeTree(join(folder, 'train', '4_pixel_sprite'), { 'c.png': await png(3) });
    const nested = await call('datasets.import', { source: { kind: 'folder', path: join(folder, 'train') } });
    expect(nested.naming).toEqual({ name: 'pixel sprite', triggerWord: 'pixel sprite', kohyaFolder: '4_pixel_sprite' });
  });

  it('keeps what the user typed, names mixed folders after the folder, and sees kohya folders through browser uploads', async () => {
    const { call, folder, dataDir } = setup();
    writeTree(join(folder, 'mixed'), { '10_painted portrait/a.png': await png(1), '5_pixel sprite/b.png': await png(2) });
    const mixed = await call('datasets.import', { source: { kind: 'folder', path: join(folder, 'mixed') } });
    expect(mixed.naming).toEqual({ name: 'mixed', triggerWord: null, kohyaFolder: null });
    writeTree(join(folder, '3_inkfx'), { 'a.png': await png(4) });
    const typed = await call('datasets.import', { source: { kind: 'folder', path: join(folder, '3_inkfx') }, name: 'Ink', triggerWord: 'inkwash' });
    expect(typed.naming).toEqual({ name: 'Ink', triggerWord: 'inkwash', kohyaFolder: null });
    // A dropped folder is uploaded as its contents into a staging folder named by a random id: the folder's name
    // comes along separately, and still gives the repeats, the name and the trigger.
    const staged = join(uploadsDir(dataDir), 'u1');
    mkdirSync(staged, { recursive: true });
    writeTree(staged, { 'a.png': await png(5), 'b.png': await png(6) });
    const uploaded = await call('datasets.import', { source: { kind: 'folder', path: staged }, folderName: '8_watercolour' });
    expect(uploaded.naming).toMatchObject({ name: 'watercolour', triggerWord: 'watercolour', kohyaFolder: '8_watercolour' });
    const dataset = await call('datasets.get', { id: uploaded.datasetId! });
    expect(dataset).toMatchObject({ sourcePath: null, weightedCount: 16 });
    // Appending names nothing.
    writeTree(join(folder, 'more'), { 'z.png': await png(7) });
    expect((await call('datasets.import', { source: { kind: 'folder', path: join(folder, 'more') }, datasetId: uploaded.datasetId! })).naming).toBeNull();
  });
});

describe('the built-in model’s words', () => {
  it('hashes unknown words like the worker: the published FNV-1a 64 vectors, vocab.size() + hash % spare rows', () => {
    // The same vectors tests/native/test_native.cpp checks fnv1a64 against.
    expect(fnv1a64('')).toBe(14695981039346656037n);
    expect(fnv1a64('a')).toBe(0xaf63dc4c8601ec8cn);
    const tok = new WordTokenizer(['red', 'square'], 64);
    expect(tok.idOf('red')).toBe(4);
    expect(tok.idOf('inkfx')).toBe(6 + Number(fnv1a64('inkfx') % 64n));
    expect(new WordTokenizer(['red'], 0).idOf('inkfx')).toBe(1);
  });

  it('marks words the model does not know and words sharing a spare row with a trigger or caption word, and suggests a free trigger', async () => {
    const { call, folder } = setup({ resourcesDir: RESOURCES });
    writeTree(join(folder, '4_sprite'), { 'a.png': await png(1), 'a.txt': 'sprite, painterly hero' });
    await call('datasets.import', { source: { kind: 'folder', path: join(folder, '4_sprite') } });

    const check = await call('models.checkWords', { text: 'A knight, in a red coat; knight', suggest: true });
    expect(check).toMatchObject({ model: 'clipart-64', applies: true, spareRows: 64 });
    const word = Object.fromEntries(check.words.map((w) => [w.word, w]));
    expect(Object.keys(word)).toEqual(['a', 'knight', 'in', 'red', 'coat']);
    expect(word.red).toMatchObject({ known: true, spareRow: null, sharesWith: [] });
    // "knight" is not in clipart-64's vocabulary and lands on the row of the dataset's trigger word "sprite".
    expect(word.knight).toMatchObject({ known: false, spareRow: Number(fnv1a64('knight') % 64n), triggerOf: [] });
    expect(word.knight!.sharesWith).toEqual([{ word: 'sprite', where: 'trigger of dataset “sprite”' }]);

    const pixel = await call('models.checkWords', { text: 'pixel sprite' });
    const pw = Object.fromEntries(pixel.words.map((w) => [w.word, w]));
    expect(pw.pixel!.sharesWith).toEqual([{ word: 'painterly', where: 'in captions of “sprite”' }]);
    expect(pw.sprite).toMatchObject({ triggerOf: ['dataset “sprite”'], sharesWith: [] });

    // The suggestion is outside the vocabulary and alone on its row.
    const suggestion = check.suggestion!;
    expect(suggestion).toMatchObject({ known: false, sharesWith: [] });
    expect(suggestion.word.startsWith('aknightinredcoat')).toBe(true);
    const again = await call('models.checkWords', { text: suggestion.word });
    expect(again.words[0]).toMatchObject({ known: false, sharesWith: [] });
  });

  it('the model card says what the few spare rows cost, and that a future model should have far more', () => {
    expect(sharedRowChance(2, 64)).toBeCloseTo(1 / 64, 12);
    expect(sharedRowChance(10, 64)).toBeGreaterThan(0.5);
    expect(sharedRowChance(10, 4096)).toBeLessThan(0.02);
    const text = limitations(1188, 64).join('\n');
    expect(text).toMatch(/one of only 64 spare embedding rows/);
    expect(text).toMatch(/15 % of the time for 5 new words, 52 % for 10/);
    expect(text).toMatch(/A future built-in model should have far more spare rows/);
    // The shipped card says it too.
    expect(readFileSync(join(RESOURCES, 'models', 'clipart-64', 'MODEL_CARD.md'), 'utf8')).toContain(text);
  });

  it('marks nothing for a model that does not tokenize by words', async () => {
    const { call, core } = setup({ resourcesDir: RESOURCES });
    const id = Number(core.db.prepare(`INSERT INTO base_models (name, family, resolution) VALUES ('sd15', 'stable-diffusion-1', 512)`).run().lastInsertRowid);
    expect(await call('models.checkWords', { text: 'a knight', baseModelId: id, suggest: true })).toEqual({ model: 'sd15', applies: false, spareRows: 0, words: [], suggestion: null });
    await expect(call('models.checkWords', { text: 'x', baseModelId: 999 })).rejects.toMatchObject({ type: 'not_found' });
  });
});

describe('bulk caption edits and run history', () => {
  it('sets many captions in one transaction, refusing an image of another dataset without changing anything', async () => {
    const { call, folder } = setup();
    writeTree(join(folder, 'one'), { 'a.png': await png(1), 'b.png': await png(2) });
    writeTree(join(folder, 'two'), { 'c.png': await png(3) });
    const one = await call('datasets.get', { id: (await call('datasets.import', { source: { kind: 'folder', path: join(folder, 'one') } })).datasetId! });
    const two = await call('datasets.get', { id: (await call('datasets.import', { source: { kind: 'folder', path: join(folder, 'two') } })).datasetId! });
    const [a, b] = one.images;
    const edited = await call('datasets.setCaptions', {
      datasetId: one.id,
      captions: [
        { imageId: a!.id, caption: ' neonfx, a ring ' },
        { imageId: b!.id, caption: 'neonfx, a box' },
      ],
    });
    expect(edited.images.map((i) => [i.caption, i.captionSource])).toEqual([
      ['neonfx, a ring', 'user'],
      ['neonfx, a box', 'user'],
    ]);
    await expect(
      call('datasets.setCaptions', {
        datasetId: one.id,
        captions: [
          { imageId: a!.id, caption: 'x' },
          { imageId: two.images[0]!.id, caption: 'y' },
        ],
      }),
    ).rejects.toMatchObject({
      type: 'bad_input',
      message: expect.stringMatching(/not in this dataset.*nothing was changed/),
    });
    expect((await call('datasets.get', { id: one.id })).images[0]!.caption).toBe('neonfx, a ring');
  });

  it('gives a run’s loss curve so far, thinned to about 2000 points and ending at the last step', async () => {
    const { call, core, folder } = setup({ resourcesDir: RESOURCES });
    writeTree(folder, { 'a.png': await png(1) });
    const datasetId = (await call('datasets.import', { source: { kind: 'folder', path: folder } })).datasetId!;
    // No engine in this core: the job stays queued, and the curve is written the way a running job writes it.
    const runId = Number(core.db.prepare(`INSERT INTO training_runs (kind, name, dataset_id, status, steps) VALUES ('shira', 'r', ?, 'running', 5001)`).run(datasetId).lastInsertRowid);
    const put = core.db.prepare('INSERT INTO training_loss (run_id, step, loss) VALUES (?, ?, ?)');
    for (let step = 1; step <= 5001; step++) put.run(runId, step, 1 / step);
    const curve = await call('training.loss', { id: runId });
    expect(curve.length).toBeLessThanOrEqual(2001);
    expect(curve.length).toBeGreaterThan(1000);
    expect(curve[0]).toEqual({ step: 1, loss: 1 });
    expect(curve.at(-1)).toEqual({ step: 5001, loss: 1 / 5001 });
    await expect(call('training.loss', { id: 999 })).rejects.toMatchObject({ type: 'not_found' });
  });
});

describe.runIf(runnable)('gallery: one row per identical image, Compare grids as one entry (real worker)', () => {
  const worker = { binary: WORKER, threads: 1 };
  const draw = (call: Caller, seed: number, forGrid?: boolean) =>
    call('generate', { prompt: 'a red star', seed, steps: 2, guidance: 3, mix: [], engine: 'worker', ...(forGrid === undefined ? {} : { forGrid }) });

  it('stores an identical generation once, keeps grids as one entry and sweeps cells no grid holds at the next start', { timeout: 120_000 }, async () => {
    const dir = tempDir('shira-gallery-');
    cleanups.push(dir.cleanup);
    // Each core gets its own data folder; the library file is the one that lives on across restarts.
    const open = () => {
      const env = makeCore({ resourcesDir: RESOURCES, worker, databaseFile: join(dir.path, 'library.sqlite') });
      cleanups.push(() => rmSync(env.dataDir, { recursive: true, force: true }));
      return env;
    };
    const restart = async (env: ReturnType<typeof open>) => {
      await env.core.close();
      return open();
    };
    let env = open();
    const [image] = await draw(env.call, 1);
    expect((await draw(env.call, 1))[0]!.id).toBe(image!.id);
    // Compare cells: not in the gallery on their own; a cell identical to a gallery image reuses it.
    const [cellA] = await draw(env.call, 2, true);
    const [cellB] = await draw(env.call, 1, true);
    expect(cellB!.id).toBe(image!.id);
    const [unkept] = await draw(env.call, 3, true);
    expect((await env.call('gallery.list', {})).items.map((e) => [e.type, e.id])).toEqual([['image', image!.id]]);
    expect((await env.call('generations.list', {})).total).toBe(1);

    const input: GridInput = {
      title: 'a red star · α sweep',
      mode: 'alpha',
      rows: [{ label: 'Base model', kind: 'base' }],
      columns: [{ label: 'seed 2' }, { label: 'seed 1' }, { label: 'failed' }],
      cells: [[cellA!.id, cellB!.id, null]],
      prompts: ['a red star'],
      seed: 2,
      steps: 2,
      guidance: 3,
      negativePrompt: '',
    };
    const grid = await env.call('grids.save', input);
    const page = await env.call('gallery.list', {});
    expect(page.total).toBe(2);
    expect(page.items[0]).toMatchObject({ type: 'grid', id: grid.id, cells: [[cellA!.id, cellB!.id, null]], rows: [{ label: 'Base model', kind: 'base' }] });
    expect((await env.call('grids.get', { id: grid.id })).generations.map((g) => g.id).sort()).toEqual([cellA!.id, image!.id].sort());
    await expect(env.call('grids.save', { ...input, cells: [[cellA!.id]] })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/1 rows of 3/) });

    // Asked for on its own, a Compare cell joins the gallery instead of being drawn again.
    expect((await draw(env.call, 2))[0]!.id).toBe(cellA!.id);
    expect((await env.call('gallery.list', {})).total).toBe(3);
    // A pixel-art mark sticks to the image.
    expect((await env.call('generations.setPixelArt', { id: image!.id, pixelArt: true })).pixelArt).toBe(true);

    // Restart: the unkept cell is gone, kept ones stay; a deleted grid's own cells go at the start after.
    const [orphan] = await draw(env.call, 4, true);
    const only = await env.call('grids.save', { ...input, columns: [{ label: 'seed 4' }], cells: [[orphan!.id]] });
    env = await restart(env);
    await expect(env.call('generations.get', { id: unkept!.id })).rejects.toMatchObject({ type: 'not_found' });
    expect((await env.call('generations.get', { id: orphan!.id })).id).toBe(orphan!.id);
    expect((await env.call('grids.delete', { id: only.id })).deleted).toBe(true);
    env = await restart(env);
    await expect(env.call('generations.get', { id: orphan!.id })).rejects.toMatchObject({ type: 'not_found' });
    expect((await env.call('gallery.list', {})).items.map((e) => e.type)).toEqual(['grid', 'image', 'image']);
    await env.core.close();
  });
});
