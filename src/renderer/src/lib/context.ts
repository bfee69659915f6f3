import { getContext } from 'svelte';
import type { Studio } from './state/studio.svelte';

const key = Symbol('studio');

/** The context map to mount the app with; every component then reaches the one Studio by `getStudio()`. */
export function studioContext(studio: Studio): Map<symbol, Studio> {
  return new Map([[key, studio]]);
}

export function getStudio(): Studio {
  const studio = getContext<Studio | undefined>(key);
  if (!studio) throw new Error('getStudio() called outside the mounted app');
  return studio;
}
