// Durable training jobs and fused mixing through the real worker binary on the shipped model:
// dataset → queued job (own engine process) → adapter in the library → mix / α change / clear;
// a SIGKILLed engine mid-training and an app restart mid-training both resume from the checkpoint.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CoreEvent, JobStatus, TrainingJob } from '../../src/shared/api';
import sharp from 'sharp';
import { Core } from '../../src/main/core/core';
import { readPngText } from '../../src/main/core/generate/png-text';
import { makeCore, solidImage, tempDir, writeTree, type Caller } from './helpers';

const ROOT = resolve(__dirname, '../..');
const WORKER = join(ROOT, 'native', 'build', 'shira-worker');
const RESOURCES = join(ROOT, 'resources');
const runnable = existsSync(WORKER) || process.env.CI === 'true';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function dataset(call: Caller): Promise<number> {
  const dir = tempDir('shira-style-');
  cleanups.push(dir.cleanup);
  const colours = [
    { r: 250, g: 30, b: 200 },
    { r: 20, g: 240, b: 230 },
    { r: 240, g: 240, b: 20 },
    { r: 120, g: 20, b: 250 },
  ];
  const files: Record<string, Buffer> = {};
  for (const [i, c] of colours.entries()) files[`neon_${i}.png`] = await solidImage(80, 80, 'png', c);
  writeTree(dir.path, files);
  const report = await call('datasets.import', { source: { kind: 'folder', path: dir.path }, name: 'neon', triggerWord: 'neonfx' });
  return report.datasetId!;
}

function waitFor(core: Core, jobId: number, statuses: JobStatus[], timeoutMs = 240_000): Promise<TrainingJob> {
  return new Promise((resolvePromise, reject) => {
    const check = () => {
      const job = core.training.get(jobId);
      if (statuses.includes(job.status)) {
        stop();
        clearTimeout(timer);
        resolvePromise(job);
      }
    };
    const stop = core.events.subscribe((e: CoreEvent) => {
      if (e.type === 'training.changed' && e.jobId === jobId) check();
    });
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`job ${jobId} did not reach ${statuses.join('/')} (now ${core.training.get(jobId).status})`));
    }, timeoutMs);
    check();
  });
}

function waitForStep(core: Core, jobId: number, step: number): Promise<void> {
  return new Promise((resolvePromise) => {
    const stop = core.events.subscribe((e) => {
      if (e.type === 'training.progress' && e.jobId === jobId && e.step >= step) {
        stop();
        resolvePromise();
      }
    });
  });
}

const worker = { binary: WORKER, threads: 1 };

describe.runIf(runnable)('training jobs and mixing (real worker)', () => {
  it('trains SHiRA and a matched LoRA in the queue, stores them compactly, and mixes them with α changes', { timeout: 300_000 }, async () => {
    const { core, call, cleanup, dataDir } = makeCore({ resourcesDir: RESOURCES, worker });
    cleanups.push(cleanup);
    const datasetId = await dataset(call);
    // Out-of-range augmentation is refused by name before anything is queued.
    await expect(call('training.start', { datasetId, method: 'shira', tagDropout: 0.95 })).rejects.toMatchObject({ type: 'bad_input', details: { path: 'tagDropout' } });
    expect(await call('training.list', {})).toEqual([]);
    const progress: number[] = [];
    core.events.subscribe((e) => e.type === 'training.progress' && progress.push(e.step));
    const shiraJob = await call('training.start', {
      datasetId,
      method: 'shira',
      mask: 'rand',
      steps: 6,
      batch: 2,
      checkpointEvery: 2,
      samplePrompts: ['neonfx, bird', 'neonfx, car'],
      sampleEvery: 3,
      tagDropout: 0.3,
      flip: true,
    });
    const loraJob = await call('training.start', { datasetId, method: 'lora', matchDensity: 0.02, steps: 6, batch: 2, checkpointEvery: 2 });
    expect(shiraJob).toMatchObject({ status: expect.stringMatching(/queued|running/), steps: 6, kind: 'shira' });
    // One job at a time: the LoRA waits while SHiRA trains.
    expect((await call('training.get', { id: loraJob.id })).status).toBe('queued');
    const doneShira = await waitFor(core, shiraJob.id, ['completed', 'failed']);
    expect(doneShira.error).toBeNull();
    const doneLora = await waitFor(core, loraJob.id, ['completed', 'failed']);
    expect(doneLora.error).toBeNull();
    expect(progress.length).toBeGreaterThan(0);
    const samples = await call('training.samples', { id: shiraJob.id });
    expect(samples.map((x) => x.step)).toEqual([3, 6]);
    const grid = await sharp(core.media('training-sample', samples[0]!.id)!.bytes).metadata();
    expect([grid.width, grid.height]).toEqual([256, 128]);
    expect(existsSync(join(dataDir, 'jobs', String(shiraJob.id)))).toBe(false);

    const shira = await call('adapters.get', { id: doneShira.adapterId! });
    const lora = await call('adapters.get', { id: doneLora.adapterId! });
    // The augmentation reached the engine: the adapter's recorded recipe keeps the trigger's tag from dropping.
    expect(shira).toMatchObject({
      kind: 'shira',
      name: 'neon · SHiRA rand',
      triggerWords: ['neonfx'],
      method: { mask: 'rand', caption_tag_dropout: 0.3, caption_keep_words: ['neonfx'], flip: true },
    });
    expect(lora.method).not.toHaveProperty('caption_tag_dropout');
    expect(lora.method).toMatchObject({ flip: false });
    // Until an image is made with it, an adapter's card shows its run's last preview (the LoRA drew none).
    expect(shira.cover).toEqual({ media: 'training-sample', id: samples[1]!.id, width: 64, height: 64, pixelArt: false });
    expect(lora.cover).toBeNull();
    // The run's curve is there for a chart opened at any time, ending at the last step.
    expect((await call('training.loss', { id: shiraJob.id })).at(-1)).toMatchObject({ step: 6 });
    // Rand indices are regenerated from the seed: only fp16 values are stored.
    expect(shira.tensors.every((t) => t.encoding === 'f16+rand')).toBe(true);
    expect(shira.bytesPerValue).toBe(2);
    expect(lora.tensors.every((t) => t.encoding === 'lora-f16')).toBe(true);
    expect(shira.training?.loss.length).toBeGreaterThan(0);
    expect(shira.baseWeightsHash).toMatch(/^[0-9a-f]{64}$/);

    const first = await call('mix.apply', { entries: [{ adapterId: shira.id, alpha: 1 }] });
    expect(first).toMatchObject({ cacheMisses: 1, cacheHits: 0, entries: [{ adapterId: shira.id, alpha: 1 }] });
    expect(first.switchMs).toBeGreaterThanOrEqual(0);
    expect(first.layersReblended).toBe(shira.tensors.length);
    const both = await call('mix.apply', {
      entries: [
        { adapterId: shira.id, alpha: 1 },
        { adapterId: lora.id, alpha: 0.5 },
      ],
    });
    expect(both).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
    // Changing one α re-blends only that adapter's layers.
    const alpha = await call('mix.apply', {
      entries: [
        { adapterId: shira.id, alpha: 1 },
        { adapterId: lora.id, alpha: 0.25 },
      ],
    });
    expect(alpha.cacheHits).toBe(2);
    const loraOnly = new Set(lora.tensors.map((t) => t.name).filter((n) => !shira.tensors.some((s) => s.name === n)));
    expect(alpha.layersReblended).toBe(lora.tensors.length);
    expect(alpha.layersUnchanged).toBeGreaterThanOrEqual(shira.tensors.length - (lora.tensors.length - loraOnly.size));
    expect(await call('mix.current', {})).toMatchObject({
      entries: [
        { adapterId: shira.id, alpha: 1 },
        { adapterId: lora.id, alpha: 0.25 },
      ],
    });

    // Generate through the fused mix: one seed per image, the recipe stored and inside the PNG.
    const images = await call('generate', { prompt: 'neonfx, bird', seed: 11, steps: 3, guidance: 3, batch: 2 });
    expect(images.map((g) => g.seed)).toEqual([11, 12]);
    expect(images[0]).toMatchObject({ prompt: 'neonfx, bird', steps: 3, width: 64, height: 64, mix: alpha.entries, baseModelName: 'clipart-64' });
    const png = core.media('generation', images[0]!.id)!;
    expect(png.mime).toBe('image/png');
    const text = readPngText(png.bytes);
    expect(text.parameters).toMatch(new RegExp(`^neonfx, bird <lora:${shira.name}:1> <lora:${lora.name}:0.25>\nSteps: 3, Sampler: DDIM, CFG scale: 3, Seed: 11, Size: 64x64`));
    expect(JSON.parse(text['shira-studio']!)).toMatchObject({
      seed: 11,
      mix: [
        { adapterId: shira.id, alpha: 1, autoV2: shira.autoV2 },
        { adapterId: lora.id, alpha: 0.25 },
      ],
    });
    expect(core.media('generation-thumb', images[0]!.id)!.mime).toBe('image/webp');
    // The first image made with an adapter becomes its cover.
    for (const a of [shira, lora]) expect((await call('adapters.get', { id: a.id })).cover).toMatchObject({ media: 'generation-thumb', id: images[0]!.id, width: 64 });
    // Same recipe, same seed → the same pixels, so the image is stored once and comes back again.
    const pixels = async (id: number) => (await sharp(core.media('generation', id)!.bytes).raw().toBuffer()).toString('hex');
    const drawn = await pixels(images[0]!.id);
    const again = await call('generate', { prompt: 'neonfx, bird', seed: 11, steps: 3, guidance: 3 });
    expect(again[0]!.id).toBe(images[0]!.id);
    expect((await call('generations.list', { adapterId: lora.id })).total).toBe(2);
    // Drawn afresh once the stored copy is gone: the same pixels (what makes reusing it honest).
    await call('generations.delete', { id: images[0]!.id });
    const redrawn = await call('generate', { prompt: 'neonfx, bird', seed: 11, steps: 3, guidance: 3 });
    expect(redrawn[0]!.id).not.toBe(images[0]!.id);
    expect(await pixels(redrawn[0]!.id)).toBe(drawn);
    expect((await call('generations.list', { adapterId: lora.id })).total).toBe(2);
    // The ONNX engine draws the same picture for a SHiRA mix (within one 8-bit level), off the worker's lane.
    const shiraMix = [{ adapterId: shira.id, alpha: 0.9 }];
    const [byWorker] = await call('generate', { prompt: 'neonfx, car', seed: 5, steps: 4, mix: shiraMix, engine: 'worker' });
    const [byOrt] = await call('generate', { prompt: 'neonfx, car', seed: 5, steps: 4, mix: shiraMix, engine: 'ort' });
    expect([byWorker!.engine, byOrt!.engine]).toEqual(['worker', 'ort']);
    const [pw, po] = [await sharp(core.media('generation', byWorker!.id)!.bytes).raw().toBuffer(), await sharp(core.media('generation', byOrt!.id)!.bytes).raw().toBuffer()];
    let maxLevels = 0;
    for (let i = 0; i < pw.length; i++) maxLevels = Math.max(maxLevels, Math.abs(pw[i]! - po[i]!));
    console.log(`worker vs ONNX engine, same seed and mix: max diff ${maxLevels} levels`);
    expect(maxLevels).toBeLessThanOrEqual(1);
    await expect(call('generate', { prompt: 'x', steps: 2, mix: [{ adapterId: lora.id, alpha: 1 }], engine: 'ort' })).rejects.toMatchObject({
      type: 'bad_input',
      message: expect.stringMatching(/SHiRA adapters only/),
    });
    // The mix the worker holds is the last one it applied (the ORT call left it alone).
    await call('mix.apply', { entries: alpha.entries });
    await call('generations.setFavourite', { id: images[1]!.id, favourite: true });
    expect((await call('generations.list', { favourite: true })).items.map((g) => g.id)).toEqual([images[1]!.id]);
    await call('adapters.update', { id: shira.id, coverGenerationId: images[1]!.id });
    await call('generations.delete', { id: images[1]!.id });
    expect((await call('adapters.get', { id: shira.id })).coverGenerationId).toBeNull();

    // Concept loss of the two, measured by a judge trained on their own images; the mix is restored.
    const phases: string[] = [];
    core.events.subscribe((e) => e.type === 'concept.progress' && phases.push(e.phase));
    const report = await call('concept.evaluate', { adapterIds: [lora.id, shira.id], steps: 2 });
    expect(report.adapterIds).toEqual([shira.id, lora.id].sort((x, y) => x - y));
    expect(report.judge.classes).toEqual(['base', ...[shira, lora].sort((x, y) => x.id - y.id).map((a) => a.name)]);
    expect(report.single.map((x) => x.adapterId).sort()).toEqual([shira.id, lora.id].sort());
    for (const x of [...report.single, ...report.fused]) expect(x.score).toBeGreaterThanOrEqual(0);
    expect(report.fused).toHaveLength(2);
    expect(report.overlaps).toHaveLength(1);
    expect(report.overlaps[0]!.awor).toBeGreaterThanOrEqual(0);
    expect(report.overlaps[0]!.awor).toBeLessThanOrEqual(1);
    expect(phases).toContain('judge');
    expect(await call('concept.latest', { adapterIds: [shira.id, lora.id] })).toEqual(report);
    expect((await call('mix.current', {})).entries).toEqual([
      { adapterId: shira.id, alpha: 1 },
      { adapterId: lora.id, alpha: 0.25 },
    ]);

    const saved = await call('mixes.save', {
      name: 'neon pair',
      entries: [
        { adapterId: shira.id, alpha: 0.7 },
        { adapterId: lora.id, alpha: 0.3 },
      ],
    });
    expect((await call('mix.apply', { mixId: saved.id })).entries).toEqual(saved.entries);
    expect((await call('mix.apply', { entries: [] })).entries).toEqual([]);
    await expect(
      call('mix.apply', {
        entries: [
          { adapterId: shira.id, alpha: 1 },
          { adapterId: shira.id, alpha: 2 },
        ],
      }),
    ).rejects.toMatchObject({ type: 'bad_input' });

    // The base's identity is checked: weights that changed under an adapter are refused.
    core.db.prepare('UPDATE base_models SET weights_hash = ? WHERE id = ?').run('0'.repeat(64), shira.baseModelId);
    await expect(call('mix.apply', { entries: [{ adapterId: shira.id, alpha: 1 }] })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/trained on other weights/) });

    // Deleting an adapter in the mix removes its tensors and leaves a healthy library.
    await call('adapters.delete', { id: lora.id });
    expect((core.db.prepare('SELECT count(*) AS n FROM adapter_tensors WHERE adapter_id = ?').get(lora.id) as { n: number }).n).toBe(0);
    expect((await call('mixes.list', {}))[0]!.entries).toEqual([{ adapterId: shira.id, alpha: 0.7 }]);
    expect((await call('app.health', {})).ok).toBe(true);
  });

  it('survives SIGKILL of the training engine: no partial adapter, a healthy library, and the job resumes from its checkpoint', { timeout: 300_000 }, async () => {
    const { core, call, cleanup } = makeCore({ resourcesDir: RESOURCES, worker });
    cleanups.push(cleanup);
    const datasetId = await dataset(call);
    const job = await call('training.start', { datasetId, method: 'shira', mask: 'struct', steps: 40, batch: 2, checkpointEvery: 4 });
    await waitForStep(core, job.id, 10);
    process.kill(core.trainer!.pid!, 'SIGKILL');
    const requeued = await waitFor(core, job.id, ['queued', 'running', 'failed'], 30_000);
    expect(requeued.status).not.toBe('failed');
    expect((await call('app.health', {})).integrity).toEqual(['ok']);
    expect((core.db.prepare('SELECT count(*) AS n FROM adapters').get() as { n: number }).n).toBe(0);
    const done = await waitFor(core, job.id, ['completed', 'failed']);
    expect(done).toMatchObject({ status: 'completed', attempts: 1 });
    expect(Number(done.result?.start_step)).toBeGreaterThanOrEqual(8);
    expect((await call('adapters.list', {})).map((a) => a.id)).toEqual([done.adapterId]);
  });

  it('resumes a job interrupted by quitting the app when the library is opened again', { timeout: 300_000 }, async () => {
    const dir = tempDir('shira-restart-');
    cleanups.push(dir.cleanup);
    const first = new Core({ dataDir: dir.path, host: 'test', resourcesDir: RESOURCES, worker });
    const call1: Caller = async (method, input) => {
      const r = await first.registry.dispatch(method, input, { client: 'test' });
      if (!r.ok) throw new Error(r.error.message);
      return r.value as never;
    };
    const datasetId = await dataset(call1);
    const job = await call1('training.start', { datasetId, method: 'lora', rank: 2, steps: 40, batch: 2, checkpointEvery: 4 });
    await waitForStep(first, job.id, 10);
    await first.close();
    expect(readdirSync(join(dir.path, 'jobs', String(job.id)))).toContain('checkpoint.safetensors');

    const second = new Core({ dataDir: dir.path, host: 'test', resourcesDir: RESOURCES, worker });
    cleanups.unshift(() => second.close());
    const done = await waitFor(second, job.id, ['completed', 'failed']);
    expect(done.status).toBe('completed');
    expect(Number(done.result?.start_step)).toBeGreaterThanOrEqual(4);
  });
});
