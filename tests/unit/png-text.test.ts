import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { a1111Parameters } from '../../src/main/core/generate/generations';
import { addPngText, readPngText } from '../../src/main/core/generate/png-text';

describe('recipe inside the PNG', () => {
  it('adds tEXt chunks that image tools read back, and keeps the image decodable', async () => {
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 10, g: 200, b: 30 } } })
      .png()
      .toBuffer();
    const params = a1111Parameters({
      model: { name: 'clipart-64', weightsHash: 'abcdef0123456789'.repeat(4) },
      mix: [{ adapterId: 3, alpha: 0.8, name: 'Ink', autoV2: '0123456789' }],
      prompt: 'inkfx, bird — ünïcode',
      negativePrompt: 'blurry',
      seed: 42,
      sampler: 'ddim',
      steps: 25,
      guidance: 5,
      width: 64,
      height: 64,
      engine: 'worker',
    });
    expect(params).toBe(
      'inkfx, bird — ünïcode <lora:Ink:0.8>\nNegative prompt: blurry\nSteps: 25, Sampler: DDIM, CFG scale: 5, Seed: 42, Size: 64x64, Model hash: abcdef0123, Model: clipart-64, Lora hashes: "Ink: 0123456789", Version: Shira Studio (libtorch)',
    );
    const tagged = addPngText(png, { parameters: params, 'shira-studio': '{"seed":42}' });
    expect(readPngText(tagged)).toEqual({ parameters: params, 'shira-studio': '{"seed":42}' });
    const a = await sharp(png).raw().toBuffer();
    const b = await sharp(tagged).raw().toBuffer();
    expect(b.equals(a)).toBe(true);
    const corrupt = Buffer.from(tagged);
    corrupt[tagged.indexOf('parameters') + 2]! ^= 1;
    expect(() => readPngText(corrupt)).toThrow(/bad CRC/);
    expect(() => addPngText(png, { 'bad\nkey': 'x' })).toThrow(/keyword/);
  });
});
