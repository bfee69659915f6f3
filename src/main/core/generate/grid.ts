import sharp from 'sharp';
import { readSafetensors } from '../io/safetensors';

/**
 * The worker's U8 images [B, H, W, 3] (a safetensors file) as one PNG grid, `cols` wide on white,
 * upscaled `scale`× with nearest-neighbour so small model outputs stay crisp.
 */
export async function imagesToGridPng(file: string, cols: number, scale = 2): Promise<Buffer> {
  const t = readSafetensors(file).tensors.get('images');
  if (!t || t.dtype !== 'U8' || t.shape.length !== 4) throw new Error(`${file}: no U8 images [B,H,W,3]`);
  const [n, h, w] = t.shape as [number, number, number, number];
  const c = Math.min(cols, n);
  const rows = Math.ceil(n / c);
  const grid = Buffer.alloc(rows * h * c * w * 3, 255);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++) {
      const src = t.data.subarray((i * h + y) * w * 3, ((i * h + y) * w + w) * 3);
      Buffer.from(src).copy(grid, ((Math.floor(i / c) * h + y) * c * w + (i % c) * w) * 3);
    }
  return sharp(grid, { raw: { width: c * w, height: rows * h, channels: 3 } })
    .resize(c * w * scale, rows * h * scale, { kernel: 'nearest' })
    .png()
    .toBuffer();
}
