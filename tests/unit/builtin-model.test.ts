// The shipped base model, through the real worker binary the app runs: it must load and draw.
// The worker is built by `npm test`'s set-up; outside CI a missing build skips with the reason.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { Core } from '../../src/main/core/core';
import { findBuiltinModels } from '../../src/main/core/models/builtin';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import { WorkerSupervisor } from '../../src/main/core/worker/supervisor';
import { makeCore, tempDir, writeTree } from './helpers';

const ROOT = resolve(__dirname, '../..');
const WORKER = join(ROOT, 'native', 'build', 'shira-worker');
const models = findBuiltinModels(join(ROOT, 'resources'));
const runnable = existsSync(WORKER) || process.env.CI === 'true';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('built-in succession', () => {
  it('makes the newest built-in the default for new work and keeps the one it supersedes registered', async () => {
    const resources = tempDir('shira-resources-');
    cleanups.push(resources.cleanup);
    const model = (name: string, supersedes?: string) => ({
      [`models/${name}/config.json`]: JSON.stringify({ name, unet: { sample_size: 64 }, ...(supersedes ? { supersedes } : {}) }),
      [`models/${name}/model.safetensors`]: `weights of ${name}`,
    });
    // An install from before v3: v2 is the default.
    writeTree(resources.path, model('clipart-64'));
    const { call, core, dataDir, cleanup } = makeCore({ resourcesDir: resources.path });
    cleanups.push(cleanup);
    const [v2] = await call('models.list', {});
    expect(v2).toMatchObject({ name: 'clipart-64', isDefault: true });
    await core.close();
    // The update ships v3 (and later v4, listed first by name): the default moves along, v2 keeps its row and hash.
    writeTree(resources.path, { ...model('clipart-64-v3', 'clipart-64'), ...model('a-v4', 'clipart-64-v3') });
    const list = async () => {
      const again = new Core({ dataDir, host: 'test', resourcesDir: resources.path });
      const outcome = await again.registry.dispatch('models.list', {}, { client: 't' });
      await again.close();
      return (outcome as { value: { id: number; name: string; isDefault: boolean; weightsHash: string }[] }).value;
    };
    const after = await list();
    expect(after.map((m) => [m.name, m.isDefault])).toEqual([
      ['a-v4', true],
      ['clipart-64', false],
      ['clipart-64-v3', false],
    ]);
    expect(after.find((m) => m.name === 'clipart-64')).toMatchObject({ id: v2!.id, weightsHash: v2!.weightsHash });
    // A fresh install gets the newest one too; without a successor the first stays the default.
    rmSync(join(resources.path, 'models/a-v4'), { recursive: true });
    const fresh = makeCore({ resourcesDir: resources.path });
    cleanups.push(fresh.cleanup);
    expect((await fresh.call('models.list', {})).filter((m) => m.isDefault).map((m) => m.name)).toEqual(['clipart-64-v3']);
  });
});

describe.runIf(runnable)('shipped base model', () => {
  it('is present, every built-in with fp16 weights under 60 MB', () => {
    expect(models.map((m) => m.name)).toContain('clipart-64');
    for (const m of models) {
      const weights = readSafetensors(m.weightsPath);
      const dtypes = new Set([...weights.tensors.values()].map((t) => t.dtype));
      expect(dtypes, m.name).toEqual(new Set(['F16']));
      expect(
        [...weights.tensors.values()].reduce((a, t) => a + t.data.byteLength, 0),
        m.name,
      ).toBeLessThan(60 * 2 ** 20);
    }
  });

  it('loads in the worker and draws a non-constant image, the same one for the same seed', async () => {
    const model = models.find((m) => m.name === 'clipart-64')!;
    const dir = tempDir();
    const worker = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    cleanups.push(dir.cleanup, () => worker.close());
    await worker.request('load_model', { path: model.weightsPath });
    const draw = async (seed: number, name: string) => {
      const out = join(dir.path, name);
      await worker.request('sample', { prompt: 'bird, birds, animals', seed, steps: 8, guidance: 4, out });
      return readSafetensors(out).tensors.get('images')!;
    };
    const a = await draw(1, 'a.safetensors');
    const b = await draw(1, 'b.safetensors');
    const c = await draw(2, 'c.safetensors');
    expect(a.shape).toEqual([1, 64, 64, 3]);
    const values = [...a.data];
    const mean = values.reduce((s, x) => s + x, 0) / values.length;
    const std = Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / values.length);
    console.log(`sample mean ${mean.toFixed(1)}, std ${std.toFixed(1)}`);
    expect(std).toBeGreaterThan(5);
    expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    expect(Buffer.from(a.data).equals(Buffer.from(c.data))).toBe(false);
  });

  it('exposes the model as a function (forward op) for reference implementations: outputs and gradients', async () => {
    const model = models.find((m) => m.name === 'clipart-64')!;
    const dir = tempDir();
    const worker = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    cleanups.push(dir.cleanup, () => worker.close());
    await worker.request('load_model', { path: model.weightsPath });
    const n = 2 * 3 * 64 * 64;
    const x = new Float32Array(n).map((_, i) => Math.sin(i * 0.37));
    const inputs = join(dir.path, 'in.safetensors');
    writeSafetensors(
      inputs,
      [
        ['x', { dtype: 'F32', shape: [2, 3, 64, 64], data: new Uint8Array(x.buffer) }],
        ['t', { dtype: 'I64', shape: [2], data: new Uint8Array(BigInt64Array.from([10n, 700n]).buffer) }],
      ],
      { prompts: JSON.stringify(['bird, birds, animals', '']) },
    );
    const run = async (name: string, grads: string[] = []) => {
      const out = join(dir.path, name);
      await worker.request('forward', { inputs, out, grads });
      return readSafetensors(out).tensors;
    };
    const a = await run('a.safetensors');
    const b = await run('b.safetensors', ['unet.conv_in.weight']);
    expect(a.get('out')!.shape).toEqual([2, 3, 64, 64]);
    expect(Buffer.from(a.get('out')!.data).equals(Buffer.from(b.get('out')!.data))).toBe(true);
    const g = new Float32Array(b.get('grad.unet.conv_in.weight')!.data.slice().buffer);
    expect(g.every(Number.isFinite)).toBe(true);
    expect(g.some((v) => v !== 0)).toBe(true);
    await expect(worker.request('forward', { inputs, out: join(dir.path, 'c.safetensors'), grads: ['no.such.param'] })).rejects.toThrow(/no parameter named 'no.such.param'/);
  });

  const successor = models.find((m) => m.supersedes !== null && models.some((o) => o.name === m.supersedes));
  it.runIf(successor)('refuses an adapter trained on the superseded model on its successor, with the identity message', async () => {
    const next = successor!;
    const prev = models.find((m) => m.name === next.supersedes)!;
    const dir = tempDir();
    const worker = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    cleanups.push(dir.cleanup, () => worker.close());
    const data = join(dir.path, 'data.safetensors');
    writeSafetensors(data, [['images', { dtype: 'U8', shape: [2, 64, 64, 3], data: new Uint8Array(2 * 64 * 64 * 3).fill(200) }]], { captions: JSON.stringify(['grey', 'grey']) });
    const adapter = join(dir.path, 'a.safetensors');
    await worker.request('load_model', { path: prev.weightsPath, identity: prev.weightsHash });
    await worker.request('train', { method: 'shira', data, out: adapter, steps: 1, batch: 1 });
    await worker.request('apply_mix', { adapters: [{ path: adapter, alpha: 1 }] });
    await worker.request('load_model', { path: next.weightsPath, identity: next.weightsHash });
    await expect(worker.request('apply_mix', { adapters: [{ path: adapter, alpha: 1 }] })).rejects.toThrow(
      new RegExp(`was trained on base model ${prev.weightsHash.slice(0, 12)} but the loaded model is ${next.weightsHash.slice(0, 12)}; load that base model to use it`),
    );
  });
});
