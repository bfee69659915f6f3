import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { applyStyle, buildStyleSet, STYLE_NAMES } from '../../tools/styles';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import { tempDir } from '../unit/helpers';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A red disc on white, 64×64 RGB: the shape of the clipart the styles are made for. */
async function disc(): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="white"/><circle cx="32" cy="32" r="18" fill="#c02020"/></svg>`;
  return sharp(Buffer.from(svg)).removeAlpha().raw().toBuffer();
}
const colours = (b: Buffer) => new Set(Array.from({ length: b.length / 3 }, (_, i) => b.readUIntBE(i * 3, 3))).size;

describe('style transforms', () => {
  it('are deterministic, keep the size, and each changes the image in its own way', async () => {
    const src = { data: await disc(), width: 64, height: 64 };
    const out = Object.fromEntries(await Promise.all(STYLE_NAMES.map(async (s) => [s, await applyStyle(s, src, 3)] as const)));
    for (const s of STYLE_NAMES) {
      expect(out[s]!.length).toBe(64 * 64 * 3);
      expect((await applyStyle(s, src, 3)).equals(out[s]!)).toBe(true);
      expect(out[s]!.equals(src.data)).toBe(false);
    }
    // ink: two colours only (stroke and paper), with strokes on the disc's rim and paper inside it.
    expect(colours(out.ink!)).toBe(2);
    const px = (b: Buffer, x: number, y: number) => [...b.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];
    expect(px(out.ink!, 32, 32)).toEqual([244, 236, 214]);
    expect(px(out.ink!, 32, 14)[0]).toBeLessThan(100);
    // neon: the white paper turns black, the shape stays bright.
    expect(Math.max(...px(out.neon!, 2, 2))).toBeLessThan(40);
    expect(Math.max(...px(out.neon!, 32, 32))).toBeGreaterThan(150);
    // pixel art: a small palette.
    expect(colours(out.pixel!)).toBeLessThanOrEqual(8);
  });

  it('builds a packed style set with the trigger word in every caption', async () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const d = await disc();
    const source = join(dir.path, 'src.safetensors');
    writeSafetensors(source, [['images', { dtype: 'U8', shape: [3, 64, 64, 3], data: Buffer.concat([d, d, d]) }]], { captions: JSON.stringify(['a', 'b', 'c']) });
    const out = join(dir.path, 'neon.safetensors');
    expect(await buildStyleSet({ source, style: 'neon', out, count: 2, offset: 1 })).toEqual({ images: 2, trigger: 'neonfx' });
    const back = readSafetensors(out);
    expect(JSON.parse(back.metadata.captions!)).toEqual(['neonfx, b', 'neonfx, c']);
    expect(back.tensors.get('images')!.shape).toEqual([2, 64, 64, 3]);
    await expect(buildStyleSet({ source, style: 'ink', out, count: 3, offset: 1 })).rejects.toThrow(/do not fit/);
  });
});

describe('adapter demo helpers', () => {
  it('writes a packed set out as a captioned folder that the app import reads back', async () => {
    const { unpackToFolder, meanLuminance } = await import('../../tools/adapter-demo');
    const { scanFolder, captionFor } = await import('../../src/main/core/datasets/scan');
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const d = await disc();
    const pack = join(dir.path, 'p.safetensors');
    writeSafetensors(pack, [['images', { dtype: 'U8', shape: [2, 64, 64, 3], data: Buffer.concat([d, d]) }]], { captions: JSON.stringify(['neonfx, a', 'neonfx, b']) });
    expect(await unpackToFolder(pack, join(dir.path, 'f'))).toBe(2);
    const scan = await scanFolder(join(dir.path, 'f'));
    expect(scan.candidates.map((c) => captionFor(scan, c).caption)).toEqual(['neonfx, a', 'neonfx, b']);
    expect(meanLuminance(new Uint8Array([255, 255, 255, 0, 0, 0]))).toBeCloseTo(127.5, 5);
  });
});
