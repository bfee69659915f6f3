// docs/deploy.md's example, run as written (only its onnxruntime-node import is pointed at this checkout) on a
// deployment bundle with a synthetic SHiRA patch: it must apply the patch and draw a non-constant 64×64 image.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { OrtEngine } from '../../src/main/core/ort/engine';
import { loadModelFile } from '../../src/main/core/ort/model';
import { readPatch } from '../../src/main/core/ort/patch';
import { readDeploymentWeights, writeDeployment } from '../../src/main/core/ort/service';
import { readSafetensors } from '../../src/main/core/io/safetensors';
import { syntheticPatch } from '../../tools/bench-ort';
import { tempDir } from './helpers';

const ROOT = resolve(__dirname, '../..');
const MODEL = join(ROOT, 'resources', 'models', 'clipart-64', 'model.safetensors');

it('runs the deploy.md example on an exported bundle: patch applied in place, image drawn', async () => {
  const dir = tempDir();
  const { config, weights } = loadModelFile(MODEL);
  const engine = await OrtEngine.fromWeights(config, weights, { threads: 1 });
  try {
    const patch = syntheticPatch(weights, 1);
    const { files } = writeDeployment(dir.path, engine, readSafetensors(MODEL).metadata.config!, new Map([['syn', patch]]));
    expect(files.sort()).toEqual(['base-weights.safetensors', 'config.json', 'patches/syn.shira-patch.safetensors', 'text_encoder.onnx', 'unet.onnx']);
    const base = readDeploymentWeights(join(dir.path, 'base-weights.safetensors'));
    expect([...base.keys()].sort()).toEqual(engine.exported.unet.weightInputs.map((w) => w.name).sort());
    expect(readPatch(join(dir.path, 'patches', 'syn.shira-patch.safetensors')).tensors.size).toBe(patch.tensors.size);
  } finally {
    await engine.close();
  }
  const doc = readFileSync(join(ROOT, 'docs', 'deploy.md'), 'utf8');
  const code = /```js\n([\s\S]*?)```/.exec(doc)?.[1];
  expect(code, 'docs/deploy.md has a ```js example').toBeTruthy();
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  const script = join(dir.path, 'deploy.mjs');
  writeFileSync(script, code!.replace("from 'onnxruntime-node'", `from ${JSON.stringify(ortPath)}`));
  const out = join(dir.path, 'bird.ppm');
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [script, dir.path, 'syn', '0.8', 'bird, birds, animals', out], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
    console.log(stdout.trim());
    const ppm = readFileSync(out);
    expect(ppm.subarray(0, 13).toString()).toBe('P6\n64 64\n255\n');
    const px = [...ppm.subarray(13)];
    expect(px).toHaveLength(64 * 64 * 3);
    const mean = px.reduce((a, v) => a + v, 0) / px.length;
    expect(Math.sqrt(px.reduce((a, v) => a + (v - mean) ** 2, 0) / px.length)).toBeGreaterThan(5);
  } finally {
    dir.cleanup();
  }
}, 60_000);
