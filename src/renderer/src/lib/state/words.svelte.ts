// The word check under a prompt or trigger field: asks the core how the base model's tokenizer reads the text, a
// moment after typing stops, and keeps only the newest answer.
import type { WordCheck } from '../../../../shared/api';
import type { ApiClient } from '../transport';
import { triggerSuggestion, wordMarks, type WordPurpose } from '../words';

export class WordCheckState {
  readonly #purpose: () => WordPurpose;
  result = $state.raw<WordCheck | null>(null);
  /** The field is empty: nothing to mark, but a trigger field still offers a word (made from `fallback`). */
  empty = $state(true);
  readonly marks = $derived.by(() => (this.empty ? [] : wordMarks(this.result, this.#purpose())));
  readonly suggestion: string | null = $derived.by(() => (this.#purpose() !== 'trigger' ? null : this.empty ? (this.result?.suggestion?.word ?? null) : triggerSuggestion(this.result)));

  readonly #api: ApiClient;
  readonly #delayMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #request = 0;
  #asked: string | null = null;

  constructor(api: ApiClient, purpose: () => WordPurpose, delayMs = 250) {
    this.#purpose = purpose;
    this.#api = api;
    this.#delayMs = delayMs;
  }

  /** The field's text changed (`fallback`: what a trigger word would be made from while the field is empty). */
  watch(text: string, fallback = ''): void {
    const trimmed = text.trim();
    const ask = trimmed || (this.#purpose() === 'trigger' ? fallback.trim() : '');
    clearTimeout(this.#timer);
    if (ask === this.#asked) {
      this.empty = trimmed === '';
      return;
    }
    this.#timer = setTimeout(() => void this.#check(ask, trimmed === ''), this.#delayMs);
  }

  async #check(text: string, empty: boolean): Promise<void> {
    const request = ++this.#request;
    this.#asked = text;
    if (text === '') {
      this.result = null;
      this.empty = true;
      return;
    }
    try {
      const result = await this.#api.call('models.checkWords', { text, ...(this.#purpose() === 'trigger' ? { suggest: true } : {}) });
      if (request !== this.#request) return;
      this.result = result;
      this.empty = empty;
    } catch {
      // A hint, not a gate: without an answer the field simply shows no marks.
      if (request === this.#request) this.result = null;
      this.#asked = null;
    }
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#request++;
  }
}
