// Captions as kohya and OneTrainer users write them: comma-separated tags, the trigger word first. The bulk edits of
// the caption editor are pure functions from one caption to the next, so the editor can preview exactly what an
// edit changes before anything is stored, and the same edits serve prompts built from captions.

/** "a, b ,, c" → ["a", "b", "c"] (empty tags dropped; order and repeats kept as written). */
export function splitTags(caption: string): string[] {
  return caption
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
}

export function joinTags(tags: readonly string[]): string {
  return tags.join(', ');
}

const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/**
 * The trigger word's tag moved to the front, or added there when the caption lacks it (tags compared without case).
 * No trigger: the caption unchanged.
 */
export function withTriggerFirst(caption: string, trigger: string | null): string {
  const t = trigger?.trim();
  if (!t) return caption.trim();
  const tags = splitTags(caption);
  return joinTags([t, ...tags.filter((x) => !same(x, t))]);
}

export type CaptionEdit =
  | { kind: 'replace'; find: string; replace: string }
  | { kind: 'prepend'; tag: string }
  | { kind: 'append'; tag: string }
  | { kind: 'remove'; tag: string }
  | { kind: 'sort' }
  | { kind: 'triggerFirst' };

/**
 * One bulk edit applied to one caption. Tags are compared without case; a tag is never added twice. Whatever the
 * edit, a caption that had the trigger word keeps it as its first tag ("Put the trigger first" adds it everywhere).
 */
export function editCaption(caption: string, edit: CaptionEdit, trigger: string | null): string {
  let tags = splitTags(caption);
  const has = (tag: string) => tags.some((x) => same(x, tag));
  switch (edit.kind) {
    case 'replace':
      // Plain text, every occurrence, case as typed: "search and replace" in an editor's sense.
      if (edit.find) tags = splitTags(caption.split(edit.find).join(edit.replace));
      break;
    case 'prepend':
      if (edit.tag.trim() && !has(edit.tag.trim())) tags = [edit.tag.trim(), ...tags];
      break;
    case 'append':
      if (edit.tag.trim() && !has(edit.tag.trim())) tags = [...tags, edit.tag.trim()];
      break;
    case 'remove':
      tags = tags.filter((x) => !same(x, edit.tag.trim()));
      break;
    case 'sort':
      tags = [...tags].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: 'base', numeric: true }));
      break;
    case 'triggerFirst':
      return withTriggerFirst(caption, trigger);
  }
  const t = trigger?.trim();
  const keptTrigger = t && tags.some((x) => same(x, t));
  return keptTrigger ? withTriggerFirst(joinTags(tags), t) : joinTags(tags);
}

/** Every tag with the number of captions that have it, most used first (ties by name). */
export function tagFrequency(captions: readonly string[]): { tag: string; count: number }[] {
  const counts = new Map<string, { tag: string; count: number }>();
  for (const caption of captions) {
    const seen = new Set<string>();
    for (const tag of splitTags(caption)) {
      const key = tag.toLowerCase();
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = counts.get(key);
      if (entry) entry.count++;
      else counts.set(key, { tag, count: 1 });
    }
  }
  return [...counts.values()].sort((a, b) => b.count - a.count || a.tag.localeCompare(b.tag));
}

/** Adds the trigger words a prompt lacks (at the end, as A1111 users write them), so an added style is called up. */
export function withTriggerWords(prompt: string, words: readonly string[]): string {
  const missing = words.filter((w) => !prompt.toLowerCase().includes(w.toLowerCase()));
  if (missing.length === 0) return prompt;
  const trimmed = prompt.trim();
  return trimmed ? `${trimmed}, ${missing.join(', ')}` : missing.join(', ');
}

/** At most this many preview prompts: one row of the worker's preview grid (4 wide). */
export const MAX_PREVIEW_PROMPTS = 4;

/**
 * Preview prompts for a training run, from the dataset itself: the trigger word alone (does it carry the style on
 * its own?), then a few of the dataset's captions spread across it, each with the trigger first. Without captions
 * or trigger, the dataset's name.
 */
export function previewPrompts(dataset: { name: string; triggerWord: string | null; images: readonly { caption: string }[] }): string[] {
  const trigger = dataset.triggerWord?.trim() || null;
  const captions = [...new Set(dataset.images.map((i) => i.caption.trim()).filter(Boolean))];
  const wanted = MAX_PREVIEW_PROMPTS - (trigger ? 1 : 0);
  const picked = captions.length <= wanted ? captions : Array.from({ length: wanted }, (_, i) => captions[Math.round((i * (captions.length - 1)) / (wanted - 1 || 1))]!);
  const prompts = [...(trigger ? [trigger] : []), ...picked.map((c) => withTriggerFirst(c, trigger).slice(0, 300))];
  const unique = [...new Set(prompts)];
  return unique.length > 0 ? unique : [dataset.name.slice(0, 300)];
}
