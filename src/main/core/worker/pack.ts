// Packed training data for the worker: the core decodes and resizes with sharp so the worker needs
// no image codecs. Layout (safetensors): `images` U8 [N, H, W, 3] (RGB, row-major), with
// __metadata__.captions = JSON string[N] and __metadata__.repeats = JSON number[N].
import sharp from 'sharp';
import { badInput } from '../../../shared/errors';
import type { Db } from '../db/database';
import { writeSafetensors } from '../io/safetensors';

export type PackFit = 'cover' | 'contain';

export interface PackOptions {
  resolution: number;
  /** cover: centre-crop to square (photos, art); contain: pad onto white (clipart with margins). */
  fit?: PackFit;
  /** Prepended to captions that lack it, so the adapter binds the style to one word. */
  triggerWord?: string | null;
}

export interface PackSource {
  caption: string;
  repeats: number;
  /** Any image sharp can read (the stored normalised PNG in practice). */
  image: Buffer;
}

export async function packImages(sources: readonly PackSource[], outFile: string, options: PackOptions): Promise<{ count: number; bytes: number }> {
  const { resolution, fit = 'cover', triggerWord } = options;
  if (!Number.isInteger(resolution) || resolution < 8 || resolution > 2048) throw badInput(`Resolution must be an integer from 8 to 2048, got ${resolution}.`);
  if (sources.length === 0) throw badInput('There are no images to pack.');
  const frame = resolution * resolution * 3;
  const images = new Uint8Array(sources.length * frame);
  const captions: string[] = [];
  for (const [i, src] of sources.entries()) {
    const { data, info } = await sharp(src.image)
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .resize(resolution, resolution, { fit, background: { r: 255, g: 255, b: 255 }, kernel: 'lanczos3' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.length !== frame) throw new Error(`packed frame ${i} has ${info.channels} channels / ${data.length} bytes`);
    images.set(data, i * frame);
    captions.push(withTrigger(src.caption, triggerWord));
  }
  writeSafetensors(outFile, [['images', { dtype: 'U8', shape: [sources.length, resolution, resolution, 3], data: images }]], {
    format: 'shira-studio.packed-dataset.v1',
    captions: JSON.stringify(captions),
    repeats: JSON.stringify(sources.map((s) => s.repeats)),
  });
  return { count: sources.length, bytes: images.byteLength };
}

export function withTrigger(caption: string, trigger: string | null | undefined): string {
  const c = caption.trim();
  if (!trigger) return c;
  const words = c.toLowerCase().split(/[\s,]+/);
  if (words.includes(trigger.toLowerCase())) return c;
  return c ? `${trigger}, ${c}` : trigger;
}

/** Packs a library dataset, reading its stored normalised images. */
export async function packDataset(db: Db, datasetId: number, outFile: string, options: Omit<PackOptions, 'triggerWord'>): Promise<{ count: number; bytes: number }> {
  const dataset = db.prepare('SELECT trigger_word FROM datasets WHERE id = ?').get(datasetId) as { trigger_word: string | null } | undefined;
  if (!dataset) throw badInput(`Dataset ${datasetId} does not exist.`);
  const rows = db
    .prepare('SELECT i.caption, i.repeats, d.normalized FROM dataset_images i JOIN dataset_image_data d ON d.image_id = i.id WHERE i.dataset_id = ? ORDER BY i.rel_path, i.id')
    .all(datasetId) as { caption: string; repeats: number; normalized: Buffer }[];
  return packImages(
    rows.map((r) => ({ caption: r.caption, repeats: r.repeats, image: r.normalized })),
    outFile,
    { ...options, triggerWord: dataset.trigger_word },
  );
}
