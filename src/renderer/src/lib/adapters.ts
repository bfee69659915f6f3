// The library's filters run here, on the full list, so typing in the search box answers at once.
import type { AdapterKind, AdapterSummary } from '../../../shared/api';

export type KindFilter = AdapterKind | 'all';
export type SortKey = 'recent' | 'name' | 'size';

export interface AdapterFilter {
  query: string;
  kind: KindFilter;
  tag: string | null;
  sort: SortKey;
}

/** Same fields the core's search looks at: name, tags, trigger words, notes and the base model. */
function matches(a: AdapterSummary, words: string[]): boolean {
  const haystack = [a.name, ...a.tags, ...a.triggerWords, a.notes, a.baseModelName ?? '', a.kind === 'shira' ? 'shira' : 'lora'].join('\n').toLowerCase();
  return words.every((w) => haystack.includes(w));
}

export function filterAdapters(all: readonly AdapterSummary[], f: AdapterFilter): AdapterSummary[] {
  const words = f.query.toLowerCase().split(/\s+/).filter(Boolean);
  const out = all.filter((a) => (f.kind === 'all' || a.kind === f.kind) && (f.tag === null || a.tags.includes(f.tag)) && matches(a, words));
  const byName = (a: AdapterSummary, b: AdapterSummary) => a.name.localeCompare(b.name, undefined, { sensitivity: 'base', numeric: true });
  if (f.sort === 'name') out.sort(byName);
  else if (f.sort === 'size') out.sort((a, b) => b.sizeBytes - a.sizeBytes || byName(a, b));
  else out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id - a.id);
  return out;
}

/** Every tag in use, most used first, for the tag filter. */
export function tagsOf(all: readonly AdapterSummary[]): string[] {
  const counts = new Map<string, number>();
  for (const a of all) for (const t of a.tags) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([t]) => t);
}
