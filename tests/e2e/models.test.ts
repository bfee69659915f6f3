// The Models view through the studio server in chromium, by ARIA roles: the built-in model is the default, a pickle
// is refused with how to convert it, an SD-2 checkpoint is added by path (its prediction type chosen, since the
// file does not say), hashed in the background to the AutoV2 Node's crypto gives, and removed without touching the
// file. The checkpoints are header-only files written here (zero-filled tensors with the keys registration reads).
// Run `npx electron-vite build` first; this drives out/ through chromium.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeSafetensors } from '../../src/main/core/io/safetensors';
import { useFolder, useStudio } from './harness';

/** An SD-2 single file as far as registration looks: OpenCLIP text keys, a Linear proj_in, a VAE. */
async function makeCheckpoints(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'shira-e2e-models-'));
  const shapes: Record<string, number[]> = {
    'model.diffusion_model.input_blocks.0.0.weight': [8, 4, 3, 3],
    'model.diffusion_model.input_blocks.1.1.proj_in.weight': [8, 8],
    'model.diffusion_model.time_embed.0.weight': [32, 8],
    'model.diffusion_model.out.2.weight': [4, 8, 3, 3],
    'cond_stage_model.model.token_embedding.weight': [16, 8],
    'first_stage_model.decoder.conv_in.weight': [8, 4, 3, 3],
  };
  writeSafetensors(
    join(dir, 'wide-angle.safetensors'),
    Object.entries(shapes).map(([name, shape]) => [name, { dtype: 'F16', shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 2) }]),
    { 'modelspec.title': 'Wide angle' },
  );
  // A pickle's first bytes (PROTO 2): refused by extension and content, never opened.
  writeFileSync(join(dir, 'old-model.ckpt'), Buffer.from([0x80, 0x02, 0x7d, 0x71]));
  return dir;
}

describe('studio server: the Models view', () => {
  const studio = useStudio();
  const files = useFolder(makeCheckpoints);

  it('adds a checkpoint by path, sets its prediction type, shows its hash, and removes it', async () => {
    const { page, pageErrors } = studio();
    await page.goto(studio().url);
    await page.getByRole('navigation', { name: 'Views' }).getByRole('button', { name: 'Models' }).click();
    await page.getByRole('heading', { level: 1, name: 'Models' }).waitFor();
    expect(await page.getByRole('note').textContent()).toContain('registered; generation arrives with the SD loader');

    const list = page.getByRole('list', { name: 'Base models' });
    await expect.poll(() => list.getByRole('listitem').count()).toBe(1);
    const builtin = list.getByRole('article', { name: 'clipart-64' });
    expect(await builtin.textContent()).toMatch(/Default.*Built-in/);

    // A pickle: refused, saying how to convert, and nothing added.
    const form = page.getByRole('form', { name: 'Add a checkpoint' });
    await form.getByRole('textbox', { name: 'Checkpoint' }).fill(join(files(), 'old-model.ckpt'));
    await form.getByRole('button', { name: 'Add model' }).click();
    await expect.poll(async () => (await form.getByRole('alert').textContent()) ?? '').toMatch(/is a PyTorch pickle file.*weights_only=True/);
    expect(await list.getByRole('listitem').count()).toBe(1);

    const file = join(files(), 'wide-angle.safetensors');
    await form.getByRole('textbox', { name: 'Checkpoint' }).fill(file);
    await form.getByRole('button', { name: 'Add model' }).click();
    const model = list.getByRole('article', { name: 'wide-angle' });
    await model.waitFor();
    expect(await form.getByRole('alert').count()).toBe(0);
    expect(await model.textContent()).toContain('SD-2.x (512 ε or 768 v?)');

    // The file does not say ε or v: the artist does.
    const prediction = model.getByRole('combobox', { name: 'Prediction type of wide-angle' });
    expect(await prediction.inputValue()).toBe('detected');
    await prediction.selectOption('v');
    await expect.poll(async () => await model.textContent()).toContain('SD-2.x 768 v');
    expect(await prediction.inputValue()).toBe('v');

    // Hashed in the background: the AutoV2 is the SHA-256's first 10 hex digits.
    const autoV2 = createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 10);
    await expect.poll(async () => await model.textContent(), { timeout: 15_000 }).toContain(`AutoV2 ${autoV2}`);
    await model.locator('summary').click();
    expect(await model.textContent()).toContain('modelspec.title');

    await model.getByRole('button', { name: 'Remove' }).click();
    await model.getByRole('button', { name: 'Confirm remove (the files stay)' }).click();
    await expect.poll(() => list.getByRole('listitem').count()).toBe(1);
    expect(existsSync(file)).toBe(true);
    expect(pageErrors).toEqual([]);
  });
});
