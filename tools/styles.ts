// Style sets with known, distinct transformations (sharp only), for training style adapters on
// the built-in model and measuring how much of each style survives when adapters are combined.
// Every transform maps a 64×64-ish RGB clipart-on-white image to the same size; all are
// deterministic (the paper texture is seeded), so `eval:styles:data` is reproducible.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { readSafetensors, writeSafetensors } from '../src/main/core/io/safetensors';

export const STYLES = {
  /** Pixel art: 12-px grid, 8-colour palette, hard edges. */
  pixel: { trigger: 'pixfx', label: 'pixel art' },
  /** Ink: black outlines only, on cream paper. */
  ink: { trigger: 'inkfx', label: 'ink outline' },
  /** Watercolour-like: soft blur, warm tint, paper grain. */
  watercolor: { trigger: 'aquafx', label: 'watercolour' },
  /** Neon on black: inverted background, saturated glowing lines. */
  neon: { trigger: 'neonfx', label: 'neon on black' },
} as const;
export type StyleName = keyof typeof STYLES;
export const STYLE_NAMES = Object.keys(STYLES) as StyleName[];

type Raw = { data: Buffer; width: number; height: number };
const rawOf = (r: Raw) => ({ raw: { width: r.width, height: r.height, channels: 3 as const } });

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

async function finish(img: Sharp, r: Raw): Promise<Buffer> {
  return img.resize(r.width, r.height, { fit: 'fill' }).removeAlpha().toColourspace('srgb').raw().toBuffer();
}

export async function applyStyle(style: StyleName, r: Raw, seed = 0): Promise<Buffer> {
  const src = () => sharp(r.data, rawOf(r));
  switch (style) {
    case 'pixel': {
      const small = await src()
        .resize(Math.round(r.width / 5), Math.round(r.height / 5), { kernel: 'nearest' })
        .png({ palette: true, colours: 8, dither: 0 })
        .toBuffer();
      return finish(sharp(small).resize(r.width, r.height, { kernel: 'nearest' }), r);
    }
    case 'ink': {
      // Strokes where the luminance jumps (largest step to a 4-neighbour), dark on cream paper.
      // Done by hand: a zero-sum kernel in sharp's convolve clips the negative half of each edge.
      const grey = await src().greyscale().raw().toBuffer();
      const { width: W, height: H } = r;
      const at = (x: number, y: number) => grey[Math.min(H - 1, Math.max(0, y)) * W + Math.min(W - 1, Math.max(0, x))]!;
      const out = Buffer.alloc(W * H * 3);
      for (let i = 0; i < W * H; i++) {
        const x = i % W;
        const y = (i - x) / W;
        const g = at(x, y);
        const step = Math.max(Math.abs(g - at(x + 1, y)), Math.abs(g - at(x - 1, y)), Math.abs(g - at(x, y + 1)), Math.abs(g - at(x, y - 1)));
        const ink = step > 28;
        out[i * 3] = ink ? 30 : 244;
        out[i * 3 + 1] = ink ? 28 : 236;
        out[i * 3 + 2] = ink ? 40 : 214;
      }
      return out;
    }
    case 'watercolor': {
      const soft = await src().blur(1.6).modulate({ saturation: 0.7, brightness: 1.05 }).tint({ r: 255, g: 225, b: 190 }).raw().toBuffer();
      const rand = lcg(seed * 7919 + 1);
      const out = Buffer.alloc(soft.length);
      for (let i = 0; i < r.width * r.height; i++) {
        const grain = (rand() - 0.5) * 24;
        for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.max(0, Math.min(255, Math.round(soft[i * 3 + c]! + grain)));
      }
      return out;
    }
    case 'neon': {
      // White paper becomes black; colours become bright and saturated; a blurred copy adds glow.
      const inverted = await src().negate({ alpha: false }).modulate({ saturation: 2.2, brightness: 1.3 }).raw().toBuffer();
      const glow = await sharp(inverted, rawOf(r)).blur(2).raw().toBuffer();
      const out = Buffer.alloc(inverted.length);
      for (let i = 0; i < out.length; i++) out[i] = Math.min(255, inverted[i]! + (glow[i]! >> 1));
      return out;
    }
  }
}

export interface StyleSetOptions {
  /** A packed dataset (U8 [N,H,W,3] + captions), e.g. the clipart held-out split. */
  source: string;
  style: StyleName;
  out: string;
  count: number;
  /** Which source images: `offset + k*stride`, so styles can use disjoint images. */
  offset?: number;
  stride?: number;
}

export async function buildStyleSet(o: StyleSetOptions): Promise<{ images: number; trigger: string }> {
  const src = readSafetensors(o.source);
  const images = src.tensors.get('images');
  if (!images || images.dtype !== 'U8') throw new Error(`${o.source}: no U8 images`);
  const [n, h, w] = images.shape as [number, number, number];
  const captions = JSON.parse(src.metadata.captions ?? '[]') as string[];
  const stride = o.stride ?? 1;
  const picks = Array.from({ length: o.count }, (_, k) => (o.offset ?? 0) + k * stride).filter((i) => i < n);
  if (picks.length < o.count) throw new Error(`${o.source} has ${n} images; ${o.count} with offset ${o.offset ?? 0} and stride ${stride} do not fit`);
  const frame = h * w * 3;
  const out = Buffer.alloc(picks.length * frame);
  const { trigger } = STYLES[o.style];
  const outCaptions: string[] = [];
  for (const [k, i] of picks.entries()) {
    const styled = await applyStyle(o.style, { data: Buffer.from(images.data.subarray(i * frame, (i + 1) * frame)), width: w, height: h }, i);
    styled.copy(out, k * frame);
    outCaptions.push(`${trigger}, ${captions[i] ?? ''}`.replace(/, $/, ''));
  }
  mkdirSync(dirname(o.out), { recursive: true });
  writeSafetensors(o.out, [['images', { dtype: 'U8', shape: [picks.length, h, w, 3], data: out }]], {
    format: 'shira-studio.packed-dataset.v1',
    style: o.style,
    trigger,
    captions: JSON.stringify(outCaptions),
    repeats: JSON.stringify(picks.map(() => 1)),
  });
  return { images: picks.length, trigger };
}
