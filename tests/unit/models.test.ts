import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Core } from '../../src/main/core/core';
import { makeCore, tempDir, writeTree } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('built-in base models', () => {
  it('registers shipped models at start, makes the first the default, and tracks weight changes', async () => {
    const resources = tempDir('shira-resources-');
    cleanups.push(resources.cleanup);
    writeTree(resources.path, {
      'models/clipart-64/config.json': JSON.stringify({ name: 'clipart-64', unet: { sample_size: 64 } }),
      'models/clipart-64/model.safetensors': 'weights v1',
      'models/half-done/config.json': '{}', // no weights: not a model
    });
    const { call, core, dataDir, cleanup } = makeCore({ resourcesDir: resources.path });
    cleanups.push(cleanup);
    const [model, ...rest] = await call('models.list', {});
    expect(rest).toEqual([]);
    expect(model).toMatchObject({ name: 'clipart-64', resolution: 64, isDefault: true, family: 'shira-studio-pixel-unet' });
    expect(model!.weightsHash).toMatch(/^[0-9a-f]{64}$/);
    // A restart with new weights keeps the row (and any adapters' reference to it), updating the hash.
    await core.close();
    writeFileSync(join(resources.path, 'models/clipart-64/model.safetensors'), 'weights v2');
    const again = new Core({ dataDir, host: 'test', resourcesDir: resources.path });
    const outcome = await again.registry.dispatch('models.list', {}, { client: 't' });
    await again.close();
    expect(outcome).toMatchObject({ ok: true, value: [{ id: model!.id, isDefault: true }] });
    expect((outcome as { value: { weightsHash: string }[] }).value[0]!.weightsHash).not.toBe(model!.weightsHash);
  });
});
