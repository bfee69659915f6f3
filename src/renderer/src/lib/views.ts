// The sidebar's views, in shortcut order (Ctrl/Cmd+1 … 6). `ready: false` views show what they will do.
import type { IconName } from './components/Icon.svelte';

export type ViewId = 'library' | 'datasets' | 'train' | 'mix' | 'gallery' | 'compare';

export interface ViewInfo {
  id: ViewId;
  label: string;
  icon: IconName;
  ready: boolean;
  /** For views still to come: what they will do, in the artist's terms. */
  plan?: string[];
}

export const VIEWS: readonly ViewInfo[] = [
  { id: 'library', label: 'Library', icon: 'library', ready: true },
  { id: 'datasets', label: 'Datasets', icon: 'datasets', ready: true },
  {
    id: 'train',
    label: 'Train',
    icon: 'train',
    ready: false,
    plan: [
      'Train a SHiRA or LoRA style adapter from one of your datasets, on your own GPU.',
      'Watch sample images appear every few epochs, without stopping the run.',
      'Keep the epochs you like as adapters in the Library.',
    ],
  },
  {
    id: 'mix',
    label: 'Mix & Generate',
    icon: 'mix',
    ready: false,
    plan: [
      'Combine several adapters with a weight for each and generate images from a prompt.',
      'Switch adapters or weights without waiting for the base model to reload.',
    ],
  },
  {
    id: 'gallery',
    label: 'Gallery',
    icon: 'gallery',
    ready: false,
    plan: ['Browse everything you generated, with the prompt, seed and adapter mix that made each image.'],
  },
  {
    id: 'compare',
    label: 'Compare',
    icon: 'compare',
    ready: false,
    plan: [
      'Same prompt, same seed: a grid of adapters, weights or epochs side by side.',
      'See how SHiRA and LoRA of equal size hold up when several styles are combined.',
    ],
  },
];
