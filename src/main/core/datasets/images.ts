// All pixel work for datasets goes through sharp (libvips): decode, orient, flatten, resize.
import sharp, { type Metadata } from 'sharp';

/** sharp's limitInputPixels: refuse decompression bombs before decoding. */
export const MAX_INPUT_PIXELS = 100_000_000;
export const MAX_FILE_BYTES = 256 * 1024 * 1024;
/** Long side of the stored normalised copy; training resizes further, never up. */
export const NORMALIZED_MAX_SIDE = 2048;
export const THUMB_SIDE = 256;
/** sharp's format names → what we accept. HEIF covers AVIF (sharp reports AVIF as 'heif'). */
export const ACCEPTED_FORMATS = ['png', 'jpeg', 'webp', 'gif', 'tiff', 'heif'] as const;
export const FORMAT_LABELS = ['PNG', 'JPEG', 'WebP', 'GIF', 'TIFF', 'AVIF'];

export interface ProcessedImage {
  width: number;
  height: number;
  format: string;
  normalized: Buffer;
  thumb: Buffer;
}

export class ImageRejected extends Error {}

const WHITE = { r: 255, g: 255, b: 255 };

/**
 * Decodes one file and produces the stored copies. Throws ImageRejected with a reason a person
 * can act on; any other throw is a bug.
 */
export async function processImage(input: Buffer): Promise<ProcessedImage> {
  // failOn 'error' rejects truncated/corrupt data instead of returning grey padding.
  const options = { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' as const, autoOrient: true };
  let meta: Metadata;
  try {
    meta = await sharp(input, options).metadata();
  } catch (error) {
    throw new ImageRejected(describeSharpError(error));
  }
  const format = meta.format ?? 'unknown';
  if (!(ACCEPTED_FORMATS as readonly string[]).includes(format)) {
    throw new ImageRejected(`unsupported format "${format}" — use ${FORMAT_LABELS.join(', ')}`);
  }
  if (!meta.width || !meta.height) throw new ImageRejected('image has no size');
  if (meta.width * meta.height > MAX_INPUT_PIXELS) {
    throw new ImageRejected(`too large: ${meta.width}×${meta.height} is over the ${MAX_INPUT_PIXELS / 1e6} MP limit`);
  }
  try {
    // Animated GIF/WebP: the first frame only (sharp's default `pages: 1`).
    const base = sharp(input, options).flatten({ background: WHITE }).toColourspace('srgb');
    const { data: normalized, info } = await base
      .clone()
      .resize(NORMALIZED_MAX_SIDE, NORMALIZED_MAX_SIDE, { fit: 'inside', withoutEnlargement: true })
      .png({ compressionLevel: 6 })
      .toBuffer({ resolveWithObject: true });
    const thumb = await base.clone().resize(THUMB_SIDE, THUMB_SIDE, { fit: 'inside', withoutEnlargement: true }).webp({ quality: 82 }).toBuffer();
    return { width: info.width, height: info.height, format, normalized, thumb };
  } catch (error) {
    throw new ImageRejected(describeSharpError(error));
  }
}

function describeSharpError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) return `too large: over the ${MAX_INPUT_PIXELS / 1e6} MP pixel limit`;
  if (/unsupported image format/i.test(message)) return 'not an image (format not recognised)';
  const first = message.split('\n')[0]!.trim().replace(/:$/, '');
  if (/corrupt|truncat|premature|invalid|bad /i.test(first)) return `corrupt or truncated image (${first})`;
  return `not a readable image (${first})`;
}
