// The sidebar's views, in shortcut order (Ctrl/Cmd+1 … 7).
import type { IconName } from './components/Icon.svelte';

export type ViewId = 'library' | 'datasets' | 'train' | 'mix' | 'gallery' | 'compare' | 'models';

export interface ViewInfo {
  id: ViewId;
  label: string;
  icon: IconName;
}

export const VIEWS: readonly ViewInfo[] = [
  { id: 'library', label: 'Library', icon: 'library' },
  { id: 'datasets', label: 'Datasets', icon: 'datasets' },
  { id: 'train', label: 'Train', icon: 'train' },
  { id: 'mix', label: 'Mix & Generate', icon: 'mix' },
  { id: 'gallery', label: 'Gallery', icon: 'gallery' },
  { id: 'compare', label: 'Compare', icon: 'compare' },
  { id: 'models', label: 'Models', icon: 'models' },
];
