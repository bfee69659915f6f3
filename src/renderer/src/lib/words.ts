// What the word check says beside a prompt or trigger field, from the core's `models.checkWords` answer. A prompt
// wants words the model knows; a trigger wants the opposite, a word outside the vocabulary whose spare row nothing
// else uses, so the style binds to it alone.
import type { WordCheck, WordInfo } from '../../../shared/api';

export type WordPurpose = 'prompt' | 'trigger';

export interface WordMark {
  word: string;
  /** warn: the artist should change something; note: worth knowing. */
  tone: 'warn' | 'note';
  message: string;
}

function shares(info: WordInfo): string {
  return info.sharesWith.map((s) => `“${s.word}” (${s.where})`).join(', ');
}

export function wordMarks(check: WordCheck | null, purpose: WordPurpose): WordMark[] {
  if (!check?.applies) return [];
  const marks: WordMark[] = [];
  const row = `one of ${check.spareRows} shared spare rows`;
  // Words that mean nothing to the model are common with a small vocabulary: one line for all of them.
  const meaningless: string[] = [];
  for (const w of check.words) {
    if (w.known) {
      if (purpose === 'trigger') marks.push({ word: w.word, tone: 'note', message: `${check.model} already knows “${w.word}”: the style will also attach to what it means.` });
    } else if (w.sharesWith.length > 0) {
      marks.push({ word: w.word, tone: 'warn', message: `${check.model} does not know “${w.word}”; it shares ${row} with ${shares(w)}, so the model cannot tell them apart.` });
    } else if (purpose === 'prompt' && w.triggerOf.length === 0) {
      meaningless.push(w.word);
    }
  }
  if (meaningless.length > 0) {
    const list = meaningless.map((w) => `“${w}”`).join(', ');
    const one = meaningless.length === 1;
    marks.push({
      word: meaningless.join(' '),
      tone: 'note',
      message: `${check.model} does not know ${list}: ${one ? 'it lands' : 'they land'} on shared spare rows and ${one ? 'means' : 'mean'} nothing to it yet.`,
    });
  }
  return marks;
}

/** A trigger word to offer instead: only when the one typed collides (a free one is already right). */
export function triggerSuggestion(check: WordCheck | null): string | null {
  if (!check?.applies || !check.suggestion) return null;
  const typed = check.words;
  const fine = typed.length > 0 && typed.every((w) => w.known || w.sharesWith.length === 0) && typed.some((w) => !w.known);
  return fine || typed.some((w) => w.word === check.suggestion!.word) ? null : check.suggestion.word;
}
