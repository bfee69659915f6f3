// Pixel art and a small model's output must stay crisp when scaled up: nearest-neighbour, never smoothing.
import { PIXEL_ART_MAX_SIDE } from '../../../shared/api';

/** Whether an image of this size shows with nearest-neighbour scaling: small ones always, larger ones when marked. */
export function showsPixels(width: number, height: number, marked = false): boolean {
  return marked || Math.max(width, height) <= PIXEL_ART_MAX_SIDE;
}
