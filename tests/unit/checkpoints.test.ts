// Stable Diffusion checkpoints in the library (issue 17, item 1 and the refusals of item 6 that happen at
// registration), through the real registry on a real SQLite: tiny checkpoints in the real layouts written by
// tests/reference/sd/fixtures.py (skipped, with the reason, without python3-torch, as the reference runners are),
// plus a few headers written here where a fixture would be heavier than the point it makes.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, cpSync, existsSync, readFileSync, renameSync, rmSync, utimesSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BaseModel, CoreEvent } from '../../src/shared/api';
import { Core } from '../../src/main/core/core';
import { openDatabase } from '../../src/main/core/db/database';
import { EventBus } from '../../src/main/core/events';
import { writeSafetensors, type Dtype } from '../../src/main/core/io/safetensors';
import { Logger } from '../../src/main/core/logger';
import { Checkpoints } from '../../src/main/core/models/checkpoints';
import { makeCore, tempDir, type Caller } from './helpers';

const ROOT = resolve(import.meta.dirname, '../..');
const FIXTURES = join(ROOT, 'tests/reference/sd/fixtures.py');

/** The first Python that imports torch, as tests/reference/torch_python.sh picks it. */
function torchPython(): string | null {
  for (const candidate of [process.env.PYTHON, 'python3', '/usr/bin/python3']) {
    if (candidate && spawnSync(candidate, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  return null;
}
const PY = torchPython();

interface Manifest {
  expect: { load: boolean; family?: string; prediction?: string; reason?: string };
  broken?: { kind: string; key?: string; missing?: string[]; file_bytes?: number; declared_bytes?: number };
}

const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function waitForHash(core: Core, id: number): Promise<Extract<CoreEvent, { type: 'models.hash' }>[]> {
  const seen: Extract<CoreEvent, { type: 'models.hash' }>[] = [];
  return new Promise((done) => {
    const stop = core.events.subscribe((e) => {
      if (e.type !== 'models.hash' || e.modelId !== id) return;
      seen.push(e);
      if (e.state !== 'running') {
        stop();
        done(seen);
      }
    });
  });
}

/** A header-only safetensors with zero-filled tensors (F16 unless given), for shapes no fixture has. */
function writeShapes(path: string, shapes: Record<string, number[]>, metadata: Record<string, string> = {}, dtype: Dtype = 'F16'): void {
  writeSafetensors(
    path,
    Object.entries(shapes).map(([name, shape]) => [name, { dtype, shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 2) }]),
    metadata,
  );
}

/** The keys of an SD-1 ldm file, as far as registration looks: enough to be recognised, with `inChannels` input channels. */
function sd1Shapes(inChannels: number): Record<string, number[]> {
  return {
    'model.diffusion_model.input_blocks.0.0.weight': [8, inChannels, 3, 3],
    'model.diffusion_model.input_blocks.1.1.proj_in.weight': [8, 8, 1, 1],
    'model.diffusion_model.time_embed.0.weight': [32, 8],
    'model.diffusion_model.out.2.weight': [4, 8, 3, 3],
    'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight': [16, 8],
    'first_stage_model.decoder.conv_in.weight': [8, 4, 3, 3],
  };
}

describe.skipIf(!PY)(
  `Stable Diffusion checkpoints in the library${PY ? '' : ' (skipped: python3-torch is not installed, so tests/reference/sd/fixtures.py cannot write the fixtures; apt-get install -y python3-torch)'}`,
  () => {
    let fx: string;
    let call: Caller;
    let core: Core;
    let dataDir: string;
    let scratch: string;
    const manifest = (name: string) => JSON.parse(readFileSync(join(fx, `${name}.manifest.json`), 'utf8')) as Manifest;
    /** What the library holds, to check a refusal left it exactly as it was. */
    const snapshot = () => JSON.stringify(core.db.prepare('SELECT * FROM base_models ORDER BY id').all());

    beforeAll(() => {
      const dir = tempDir('shira-sd-fixtures-');
      cleanups.push(dir.cleanup);
      fx = dir.path;
      const written = spawnSync(PY!, [FIXTURES, 'write-all', '--out', fx], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
      if (written.status !== 0) throw new Error(`fixtures.py write-all failed: ${written.stderr}`);
      const env = makeCore({ resourcesDir: join(ROOT, 'resources') });
      cleanups.push(env.cleanup);
      ({ call, core, dataDir } = env);
      const s = tempDir('shira-sd-scratch-');
      cleanups.push(s.cleanup);
      scratch = s.path;
    }, 180_000);

    it('detects every supported family in both layouts, with dtype, EMA and where the prediction type came from', async () => {
      const added = new Map<string, BaseModel>();
      for (const name of [
        'sd1-ldm-fp32',
        'sd1-ldm-bf16',
        'sd1-ldm-fp16-ema',
        'sd1-ldm-fp16-legacy-clip',
        'sd2-ldm-fp32',
        'sd2v-ldm-fp16-ema',
        'sd1-diffusers-fp16',
        'sd2-diffusers-fp32',
        'sd2v-diffusers-fp16',
      ]) {
        const diffusers = name.includes('diffusers');
        const model = await call('models.add', { path: join(fx, diffusers ? name : `${name}.safetensors`) });
        added.set(name, model);
        const expected = manifest(name).expect;
        expect(expected.load).toBe(true);
        expect(model).toMatchObject({ name, source: 'user', runnable: false, isDefault: false });
        expect(model.family).toBe(expected.family === 'sd1' ? 'stable-diffusion-1' : 'stable-diffusion-2');
        expect(model.checkpoint!.layout).toBe(diffusers ? 'diffusers' : 'ldm');
      }
      const info = (name: string) => added.get(name)!.checkpoint!;
      expect(info('sd1-ldm-fp32')).toMatchObject({ dtype: 'fp32', weights: 'model', emaKeys: 0, prediction: 'epsilon', predictionSource: 'family', status: 'ok' });
      expect(info('sd1-ldm-bf16').dtype).toBe('bf16');
      expect(info('sd1-ldm-fp16-ema')).toMatchObject({ dtype: 'fp16', weights: 'ema' });
      expect(info('sd1-ldm-fp16-ema').emaKeys).toBeGreaterThan(100);
      expect(info('sd1-ldm-fp16-ema').evidence).toContain(`EMA weights: ${info('sd1-ldm-fp16-ema').emaKeys} model_ema.* tensors (these are used)`);
      expect(info('sd1-ldm-fp16-legacy-clip').evidence[0]).toBe('text encoder: CLIP ViT-L/14 (cond_stage_model.transformer.*)');
      expect(added.get('sd1-ldm-fp32')!).toMatchObject({ familyLabel: 'SD-1.x', resolution: 512 });
      // An SD-2 single file does not say ε (512) or v (768): the library says so and asks, rather than guess.
      for (const name of ['sd2-ldm-fp32', 'sd2v-ldm-fp16-ema']) {
        expect(info(name)).toMatchObject({ prediction: null, predictionSource: 'undetermined' });
        expect(info(name).evidence[0]).toBe('text encoder: OpenCLIP ViT-H (cond_stage_model.model.*)');
      }
      // diffusers folders say it in scheduler_config.json and their size in unet/config.json; fp16 variant files are read.
      expect(info('sd1-diffusers-fp16')).toMatchObject({ dtype: 'fp16', variant: 'fp16', prediction: 'epsilon', predictionSource: 'scheduler', emaKeys: null });
      expect(info('sd1-diffusers-fp16').files.map((f) => f.role)).toEqual(['unet', 'text_encoder', 'vae']);
      expect(info('sd2-diffusers-fp32')).toMatchObject({ dtype: 'fp32', variant: null, prediction: 'epsilon' });
      expect(info('sd2v-diffusers-fp16')).toMatchObject({ prediction: 'v', predictionSource: 'scheduler' });
      expect(added.get('sd2v-diffusers-fp16')!).toMatchObject({ familyLabel: 'SD-2.x 768 v', resolution: 768 });
      // The user says what the file does not: v for the 768 model, and back to "not stated".
      const v = added.get('sd2v-ldm-fp16-ema')!.id;
      expect(await call('models.setPrediction', { id: v, prediction: 'v' })).toMatchObject({
        familyLabel: 'SD-2.x 768 v',
        resolution: 768,
        checkpoint: { prediction: 'v', predictionSource: 'user', detectedPrediction: null },
      });
      expect(await call('models.setPrediction', { id: v, prediction: null })).toMatchObject({ resolution: 512, checkpoint: { prediction: null, predictionSource: 'undetermined' } });
      // The built-in model stays the default, first in the list.
      const list = await call('models.list', {});
      expect(list[0]).toMatchObject({ name: 'clipart-64', source: 'builtin', isDefault: true, runnable: true, checkpoint: null });
      expect(list.filter((m) => m.source === 'user')).toHaveLength(9);
      for (const m of added.values()) await call('models.remove', { id: m.id });
    });

    it('reads the prediction type and resolution from modelspec metadata, keeping the metadata', async () => {
      const file = join(scratch, 'sd2-768-modelspec.safetensors');
      const src = join(fx, 'sd2-ldm-fp16-ema.safetensors');
      const { readSafetensors } = await import('../../src/main/core/io/safetensors');
      const st = readSafetensors(src);
      writeSafetensors(file, st.tensors, {
        'modelspec.architecture': 'stable-diffusion-v2-768-v',
        'modelspec.resolution': '768x768',
        'modelspec.title': 'Wide angle',
        ss_tag_frequency: 'x'.repeat(5000),
      });
      const model = await call('models.add', { path: file });
      expect(model).toMatchObject({
        familyLabel: 'SD-2.x 768 v',
        resolution: 768,
        checkpoint: { prediction: 'v', predictionSource: 'metadata', predictionNote: 'modelspec.architecture = stable-diffusion-v2-768-v' },
      });
      expect(model.checkpoint!.metadata).toEqual({
        'modelspec.architecture': 'stable-diffusion-v2-768-v',
        'modelspec.resolution': '768x768',
        'modelspec.title': 'Wide angle',
        ss_tag_frequency: '(5000 characters, not kept)',
      });
      await call('models.remove', { id: model.id });
    });

    it('refuses SDXL, inpainting, pix2pix and refiners by name, and damaged files naming the problem, leaving the library as it was', async () => {
      const before = snapshot();
      const refusals: [string, string, RegExp][] = [
        ['sdxl-ldm-fp16.safetensors', 'unsupported', /SDXL base model \(conditioner\.embedders\.1\.model\.\* .*not supported yet/],
        ['sdxl-vpred-ldm-fp16.safetensors', 'unsupported', /SDXL base model/],
        ['sdxl_refiner-ldm-fp16.safetensors', 'unsupported', /SDXL refiner \(conditioner\.embedders\.0\.model\.\*/],
        ['sdxl-diffusers-fp16', 'unsupported', /SDXL base model \(model_index\.json: StableDiffusionXLPipeline\)/],
        ['sdxl_refiner-diffusers-fp16', 'unsupported', /SDXL refiner \(model_index\.json: StableDiffusionXLImg2ImgPipeline\)/],
        ['sd1-inpaint-ldm-fp16.safetensors', 'unsupported', /inpainting model \(input_blocks\.0\.0\.weight takes 9 input channels/],
        ['sd1-pix2pix-ldm-fp16.safetensors', 'unsupported', /InstructPix2Pix model \(input_blocks\.0\.0\.weight takes 8 input channels/],
        ['sd1-vae-fp16.safetensors', 'bad_input', /is a VAE, not a checkpoint/],
      ];
      for (const [file, type, message] of refusals) {
        await expect(call('models.add', { path: join(fx, file) }), file).rejects.toMatchObject({ type, message: expect.stringMatching(message) });
      }
      // The damaged fixtures: each refusal names the key or the byte counts of the manifest.
      const lying = manifest('sd1-ldm-fp16-lying-header').broken!;
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp16-lying-header.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringContaining(`tensor "${lying.key}" size does not match its shape`),
      });
      // Truncated: the shortfall the message gives is the one the manifest records.
      const truncated = manifest('sd1-ldm-fp16-truncated').broken!;
      const cut = await call('models.add', { path: join(fx, 'sd1-ldm-fp16-truncated.safetensors') }).catch((e: { type: string; message: string }) => e);
      expect(cut).toMatchObject({ type: 'bad_input' });
      const [, need, have] = /cannot be registered: truncated: the tensors need (\d+) bytes of data, the file has (\d+)/.exec((cut as { message: string }).message)!;
      expect(Number(need) - Number(have)).toBe(truncated.declared_bytes! - truncated.file_bytes!);
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp16-header-too-long.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/not a plausible header length/),
      });
      for (const name of ['sd1-ldm-fp16-missing-key', 'sd1-ldm-fp16-renamed-key']) {
        const key = manifest(name).broken!.missing![0]!;
        await expect(call('models.add', { path: join(fx, `${name}.safetensors`) }), name).rejects.toMatchObject({
          type: 'bad_input',
          message: expect.stringContaining(`missing the tensor ${key}`),
          details: { key },
        });
      }
      // Unknown families: a UNet of another input width, a file with no UNet at all, a folder that is not diffusers.
      writeShapes(join(scratch, 'six.safetensors'), sd1Shapes(6));
      await expect(call('models.add', { path: join(scratch, 'six.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/unknown kind: input_blocks\.0\.0\.weight takes 6 input channels/),
      });
      writeShapes(join(scratch, 'other.safetensors'), { 'backbone.layer1.weight': [4, 4], 'head.weight': [2, 4] });
      await expect(call('models.add', { path: join(scratch, 'other.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/no UNet \(model\.diffusion_model\.\*\); it holds backbone\.\*, head\.\*/),
      });
      writeShapes(join(scratch, 'mixed.safetensors'), { ...sd1Shapes(4), 'model.diffusion_model.input_blocks.1.1.proj_in.weight': [8, 8] });
      await expect(call('models.add', { path: join(scratch, 'mixed.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/unknown family: its text encoder is CLIP \(SD-1\.x\) but its UNet's proj_in is a Linear layer/),
      });
      // A key the file made up is named only when it looks like a module path (never echoing control characters).
      const blocks = Object.fromEntries([1, 2, 4].map((b) => [`model.diffusion_model.input_blocks.${b}.1.transformer_blocks.0.attn1.to_q.weight`, [8, 8]]));
      writeShapes(join(scratch, 'odd.safetensors'), { ...sd1Shapes(4), ...blocks, 'model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn1.to_q\u0007.weight': [8, 8] });
      await expect(call('models.add', { path: join(scratch, 'odd.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/has an unknown tensor \(an unprintable name\) \(no other block/),
      });
      await expect(call('models.add', { path: scratch })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/folder without model_index\.json/) });
      // FIFOs where a file belongs are refused without being opened (opening one would block the core).
      const pipes = join(scratch, 'pipes');
      cpSync(join(fx, 'sd1-diffusers-fp16'), pipes, { recursive: true });
      rmSync(join(pipes, 'unet', 'config.json'));
      expect(spawnSync('mkfifo', [join(pipes, 'unet', 'config.json'), join(scratch, 'pipe.safetensors')]).status).toBe(0);
      await expect(call('models.add', { path: pipes })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/not a usable diffusers folder: unet\/config\.json is not a regular file/),
      });
      await expect(call('models.add', { path: join(scratch, 'pipe.safetensors') })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/is not a regular file/) });
      await expect(call('models.add', { path: join(scratch, 'nothing-here.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/There is no file or folder at/),
      });
      expect(snapshot()).toBe(before);
    });

    it('never unpickles: .ckpt files, and pickles renamed to .safetensors, are refused with how to convert them', async () => {
      const before = snapshot();
      const marker = (JSON.parse(readFileSync(join(fx, 'malicious-pickle.manifest.json'), 'utf8')) as { marker: string }).marker;
      expect(marker).toBeTruthy();
      for (const file of ['sd1-ckpt-fp16.ckpt', 'malicious-pickle.ckpt']) {
        await expect(call('models.add', { path: join(fx, file) }), file).rejects.toMatchObject({
          type: 'unsupported',
          message: expect.stringMatching(/is a PyTorch pickle file.*weights_only=True.*save_file/),
        });
      }
      copyFileSync(join(fx, 'malicious-pickle.ckpt'), join(scratch, 'innocent.safetensors'));
      await expect(call('models.add', { path: join(scratch, 'innocent.safetensors') })).rejects.toMatchObject({
        type: 'unsupported',
        message: expect.stringMatching(/"innocent\.safetensors" is a PyTorch pickle file/),
      });
      // A safetensors whose first byte is 0x80 (its header length is 128 modulo 256) is not a pickle.
      const looksLikePickle = join(scratch, 'first-byte-0x80.safetensors');
      for (let pad = 0; pad < 300; pad++) {
        writeShapes(looksLikePickle, sd1Shapes(4), { pad: 'x'.repeat(pad) });
        if (readFileSync(looksLikePickle)[0] === 0x80) break;
      }
      // 0x80 then 2–5: a pickle's PROTO opcode, byte for byte.
      expect([...readFileSync(looksLikePickle).subarray(0, 2)]).toEqual([0x80, 3]);
      const fine = await call('models.add', { path: looksLikePickle });
      expect(fine.family).toBe('stable-diffusion-1');
      await call('models.remove', { id: fine.id });
      // A pickle offered as the VAE is refused the same way.
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp16-ema.safetensors'), vaePath: join(fx, 'sd1-ckpt-fp16.ckpt') })).rejects.toMatchObject({ type: 'unsupported' });
      expect(existsSync(marker)).toBe(false);
      expect(snapshot()).toBe(before);
    });

    it('takes a separate VAE of the right shape and refuses one of another shape, naming the tensor', async () => {
      const before = snapshot();
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp16-ema.safetensors'), vaePath: join(fx, 'sd1-vae-fp16-z16.safetensors') })).rejects.toMatchObject({
        type: 'bad_input',
        message: expect.stringMatching(/VAE of the wrong shape: 16 latent channels \(decoder\.conv_in\.weight\), the model's VAE has 4/),
        details: { key: 'decoder.conv_in.weight' },
      });
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp16-ema.safetensors'), vaePath: join(fx, 'sd2-ldm-fp32.safetensors') })).rejects.toMatchObject({
        message: expect.stringMatching(/is a whole checkpoint, not a VAE/),
      });
      expect(snapshot()).toBe(before);
      const done = new Promise<void>((ok) => core.events.subscribe((e) => e.type === 'models.hash' && e.state === 'done' && ok()));
      const model = await call('models.add', { path: join(fx, 'sd1-ldm-fp16-ema.safetensors'), vaePath: join(fx, 'sd1-vae-fp16.safetensors'), name: 'With VAE' });
      expect(model.checkpoint!.vae).toMatchObject({ role: 'vae_file', path: join(fx, 'sd1-vae-fp16.safetensors'), dtype: 'fp16', status: 'ok' });
      await done;
      const hashed = await call('models.get', { id: model.id });
      // The identity is the checkpoint's own SHA-256; the VAE's is recorded beside it.
      expect(hashed.weightsHash).toBe(
        createHash('sha256')
          .update(readFileSync(join(fx, 'sd1-ldm-fp16-ema.safetensors')))
          .digest('hex'),
      );
      expect(hashed.checkpoint!.vae!.sha256).toBe(
        createHash('sha256')
          .update(readFileSync(join(fx, 'sd1-vae-fp16.safetensors')))
          .digest('hex'),
      );
      expect(hashed.checkpoint!.hash).toMatchObject({ state: 'done', total: hashed.checkpoint!.sizeBytes + hashed.checkpoint!.vae!.sizeBytes });
      await call('models.remove', { id: model.id });
    });

    it('hashes in the background with progress; AutoV2 is the first 10 hex digits of the SHA-256', async () => {
      const db = openDatabase(join(scratch, 'hash.sqlite'));
      const bus = new EventBus();
      const events: Extract<CoreEvent, { type: 'models.hash' }>[] = [];
      bus.subscribe((e) => e.type === 'models.hash' && events.push(e));
      const checkpoints = new Checkpoints(db, (e) => bus.emit(e), new Logger(null, bus), 0);
      try {
        const file = join(fx, 'sd1-ldm-fp16-vocab49408.safetensors');
        const model = checkpoints.add({ path: file });
        expect(model.checkpoint!.hash.state).toBe('running');
        await new Promise<void>((ok) => bus.subscribe((e) => e.type === 'models.hash' && e.state === 'done' && ok()));
        const bytes = readFileSync(file);
        const sha = createHash('sha256').update(bytes).digest('hex');
        const after = checkpoints.get(model.id);
        expect(after.weightsHash).toBe(sha);
        expect(after.checkpoint!.autoV2).toBe(sha.slice(0, 10));
        // One event per 1 MiB read (no throttle here), counting up to the file's size.
        const running = events.filter((e) => e.state === 'running');
        expect(running.length).toBeGreaterThanOrEqual(Math.floor(bytes.length / (1 << 20)));
        expect(running.every((e, i) => e.total === bytes.length && (i === 0 || e.done > running[i - 1]!.done))).toBe(true);
        expect(events.at(-1)).toMatchObject({ state: 'done', done: bytes.length, total: bytes.length, error: null });
        // Stored, not recomputed: a new instance on the same library knows the hash and queues nothing.
        const again = new Checkpoints(db, (e) => bus.emit(e), new Logger(null, bus), 0);
        again.start();
        expect(again.get(model.id).checkpoint!.hash.state).toBe('done');
        await again.close();
      } finally {
        await checkpoints.close();
        db.close();
      }
    });

    it('cancels a hash (queued or running), resumes it on rehash and after a restart', async () => {
      const a = join(scratch, 'a.safetensors');
      const b = join(scratch, 'b.safetensors');
      copyFileSync(join(fx, 'sd1-ldm-fp16-vocab49408.safetensors'), a);
      copyFileSync(join(fx, 'sd1-ldm-fp32.safetensors'), b);
      const first = await call('models.add', { path: a });
      const second = await call('models.add', { path: b });
      // b waits behind a; cancelling it takes it off the queue.
      expect(await call('models.cancelHash', { id: second.id })).toMatchObject({ weightsHash: null, checkpoint: { hash: { state: 'cancelled' } } });
      // a is being read; cancelling aborts the read.
      expect(await call('models.cancelHash', { id: first.id })).toMatchObject({ weightsHash: null, checkpoint: { hash: { state: 'cancelled' } } });
      const done = waitForHash(core, second.id);
      const rehashed = await call('models.rehash', { id: second.id });
      expect(['pending', 'running']).toContain(rehashed.checkpoint!.hash.state);
      expect((await done).at(-1)!.state).toBe('done');
      expect((await call('models.get', { id: second.id })).weightsHash).toBe(createHash('sha256').update(readFileSync(b)).digest('hex'));
      // A restart hashes what was left without a hash.
      await core.close();
      core = new Core({ dataDir, host: 'test', resourcesDir: join(ROOT, 'resources') });
      const outcome = waitForHash(core, first.id);
      call = async (method, input) => {
        const out = await core.registry.dispatch(method, input, { client: 'test' });
        if (!out.ok) throw Object.assign(new Error(out.error.message), out.error);
        return out.value as never;
      };
      cleanups.push(() => core.close());
      expect((await outcome).at(-1)!.state).toBe('done');
      expect((await call('models.get', { id: first.id })).checkpoint!.autoV2).toBe(createHash('sha256').update(readFileSync(a)).digest('hex').slice(0, 10));
      await call('models.remove', { id: first.id });
      await call('models.remove', { id: second.id });
    });

    it('says when a registered file moved or changed; a re-hash of a now-broken file is refused and keeps the row', async () => {
      const file = join(scratch, 'moving.safetensors');
      copyFileSync(join(fx, 'sd1-ldm-fp32.safetensors'), file);
      const model = await call('models.add', { path: file });
      await waitForHash(core, model.id);
      const hashed = await call('models.get', { id: model.id });
      expect(hashed.checkpoint).toMatchObject({ status: 'ok', statusMessage: null });

      // Touched (same bytes, new mtime): changed; a re-hash accepts it and keeps the same identity.
      utimesSync(file, new Date(), new Date(Date.now() + 5000));
      expect((await call('models.list', {})).find((m) => m.id === model.id)!.checkpoint).toMatchObject({
        status: 'changed',
        statusMessage: expect.stringMatching(/changed since it was registered \(it was modified at/),
      });
      const rehashed = waitForHash(core, model.id);
      await call('models.rehash', { id: model.id });
      await rehashed;
      expect(await call('models.get', { id: model.id })).toMatchObject({ weightsHash: hashed.weightsHash, checkpoint: { status: 'ok' } });

      // Bytes appended: changed, and no longer a valid safetensors, so the re-hash is refused and the row stays.
      appendFileSync(file, Buffer.alloc(16));
      expect((await call('models.get', { id: model.id })).checkpoint).toMatchObject({ status: 'changed', statusMessage: expect.stringMatching(/its size went from \d+ to \d+ bytes/) });
      const row = JSON.stringify(core.db.prepare('SELECT * FROM base_models WHERE id = ?').get(model.id));
      await expect(call('models.rehash', { id: model.id })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/16 bytes after the last tensor belong to no tensor/) });
      expect(JSON.stringify(core.db.prepare('SELECT * FROM base_models WHERE id = ?').get(model.id))).toBe(row);

      // Moved away: said, with what to do.
      renameSync(file, `${file}.elsewhere`);
      expect((await call('models.get', { id: model.id })).checkpoint).toMatchObject({ status: 'moved', statusMessage: expect.stringMatching(/is not there any more \(moved, renamed or deleted\)/) });
      expect((await call('models.get', { id: model.id })).checkpoint!.files[0]!.status).toBe('moved');
      await call('models.remove', { id: model.id });
    });

    it('keeps the library consistent: duplicates, names, removal, the built-in model, and no generation or training yet', async () => {
      const folder = join(scratch, 'My Model');
      cpSync(join(fx, 'sd1-diffusers-fp16'), folder, { recursive: true });
      const model = await call('models.add', { path: join(folder, 'model_index.json') });
      expect(model).toMatchObject({ name: 'My Model', checkpoint: { path: folder } });
      await expect(call('models.add', { path: folder })).rejects.toMatchObject({ type: 'conflict', message: expect.stringContaining('already in the library as "My Model"') });
      await expect(call('models.add', { path: join(fx, 'sd1-ldm-fp32.safetensors'), name: 'My Model' })).rejects.toMatchObject({ type: 'conflict' });
      const copy = join(scratch, 'elsewhere');
      cpSync(folder, join(copy, 'My Model'), { recursive: true });
      const twin = await call('models.add', { path: join(copy, 'My Model') });
      expect(twin.name).toBe('My Model (2)');

      // A diffusers folder's identity is the SHA-256 of its files' list, so the same files anywhere give the same one.
      const hashes = await Promise.all(
        [model, twin].map(async (m) => (await call('models.get', { id: m.id })).weightsHash ?? (await waitForHash(core, m.id), (await call('models.get', { id: m.id })).weightsHash)),
      );
      expect(hashes[0]).toMatch(/^[0-9a-f]{64}$/);
      expect(hashes[1]).toBe(hashes[0]);

      // Not runnable yet, and said so wherever it would be used.
      await expect(call('generate', { prompt: 'a cat', baseModelId: model.id })).rejects.toMatchObject({
        type: 'unsupported',
        message: expect.stringMatching(/registered Stable Diffusion checkpoint: generating from it and training on it arrive with the Stable Diffusion loader/),
      });

      // Adapters trained on a model keep it; the built-in model cannot be removed or overridden.
      core.db.prepare(`INSERT INTO adapters (name, kind, base_model_id) VALUES ('bound', 'shira', ?)`).run(model.id);
      await expect(call('models.remove', { id: model.id })).rejects.toMatchObject({ type: 'conflict', message: expect.stringMatching(/1 adapter was trained on "My Model"/) });
      core.db.prepare(`DELETE FROM adapters WHERE name = 'bound'`).run();
      const builtin = (await call('models.list', {})).find((m) => m.source === 'builtin')!;
      await expect(call('models.remove', { id: builtin.id })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/is built in and cannot be removed/) });
      await expect(call('models.setPrediction', { id: builtin.id, prediction: 'v' })).rejects.toMatchObject({ type: 'bad_input' });
      await expect(call('models.get', { id: 99_999 })).rejects.toMatchObject({ type: 'not_found' });
      // Removing forgets the registration, never the files.
      expect(await call('models.remove', { id: model.id })).toEqual({ removed: true });
      await call('models.remove', { id: twin.id });
      expect(existsSync(join(folder, 'unet', 'diffusion_pytorch_model.fp16.safetensors'))).toBe(true);
      expect((await call('models.list', {})).map((m) => m.source)).toEqual(['builtin']);
    });
  },
);
