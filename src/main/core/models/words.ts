// What the built-in model's word tokenizer makes of a prompt or a trigger word. Words outside its vocabulary are
// hashed into a few shared "spare" rows (the native WordTokenizer, mirrored in ../ort/model.ts), so two
// new words can silently share one embedding: an adapter trained on "sprite" then also answers to "knight". This
// says which words the model does not know and which share a row with a trigger or caption word of the library,
// and finds a trigger word whose row nothing uses yet.
import type { WordCheck, WordInfo } from '../../../shared/api';
import { notFound } from '../../../shared/errors';
import type { Db } from '../db/database';
import { MODEL_FAMILY } from './builtin';
import { parseModelConfig, tokenizerWords, WordTokenizer } from '../ort/model';

/** A word the library uses somewhere, and where (for messages such as “trigger of “Neon · SHiRA””). */
interface Use {
  word: string;
  where: string;
  trigger: boolean;
}

/** Candidates tried after the stem itself: the usual trigger-word endings, then numbers. */
const SUFFIXES = ['fx', 'style', 'art', ...Array.from({ length: 98 }, (_, i) => String(i + 2))];

export class WordChecker {
  private readonly tokenizers_ = new Map<number, { hash: string | null; tokenizer: WordTokenizer | null; name: string }>();
  private uses_: { key: string; byRow: Map<number, Use[]>; triggers: Map<string, string[]> } | null = null;

  constructor(private readonly db: Db) {}

  check(text: string, baseModelId: number | undefined, suggest: boolean): WordCheck {
    const { tokenizer, name } = this.tokenizer(baseModelId);
    if (!tokenizer) return { model: name, applies: false, spareRows: 0, words: [], ...(suggest ? { suggestion: null } : {}) };
    const uses = this.uses(tokenizer);
    const words = [...new Set(tokenizerWords(text))];
    const info = (word: string, alsoHere: readonly string[]): WordInfo => {
      const id = tokenizer.idOf(word);
      const known = id < tokenizer.vocab.length;
      const spareRow = known ? null : id - tokenizer.vocab.length;
      const sharesWith: WordInfo['sharesWith'] = [];
      if (spareRow !== null) {
        for (const other of alsoHere) if (other !== word && tokenizer.idOf(other) === id) sharesWith.push({ word: other, where: 'in this text' });
        for (const use of uses.byRow.get(spareRow) ?? []) if (use.word !== word && !alsoHere.includes(use.word)) sharesWith.push({ word: use.word, where: use.where });
      }
      return { word, known, spareRow, sharesWith, triggerOf: uses.triggers.get(word) ?? [] };
    };
    const result: WordCheck = { model: name, applies: true, spareRows: tokenizer.spareBuckets, words: words.map((w) => info(w, words)) };
    if (suggest) result.suggestion = this.suggest(tokenizer, uses.byRow, words, (w) => info(w, []));
    return result;
  }

  /**
   * A new trigger word: the text's words run together, then with the usual endings and numbers, until one lands on
   * a spare row nothing uses; failing that, a row only caption words use (a trigger there is less harmful than on
   * another trigger's row). Null when every spare row holds a trigger word.
   */
  private suggest(tokenizer: WordTokenizer, byRow: Map<number, Use[]>, words: readonly string[], info: (w: string) => WordInfo): WordInfo | null {
    if (tokenizer.spareBuckets === 0) return null;
    const stem = words.join('').slice(0, 20) || 'style';
    const candidates = [stem, ...SUFFIXES.map((s) => stem + s)].filter((w) => tokenizer.idOf(w) >= tokenizer.vocab.length);
    const rowOf = (w: string) => tokenizer.idOf(w) - tokenizer.vocab.length;
    const others = (w: string) => (byRow.get(rowOf(w)) ?? []).filter((u) => u.word !== w);
    const free = candidates.find((w) => others(w).length === 0) ?? candidates.find((w) => others(w).every((u) => !u.trigger));
    return free === undefined ? null : info(free);
  }

  private tokenizer(baseModelId: number | undefined): { tokenizer: WordTokenizer | null; name: string } {
    const row = (
      baseModelId !== undefined
        ? this.db.prepare('SELECT id, name, family, config_json, weights_hash FROM base_models WHERE id = ?').get(baseModelId)
        : this.db.prepare('SELECT id, name, family, config_json, weights_hash FROM base_models WHERE is_default = 1').get()
    ) as { id: number; name: string; family: string; config_json: string; weights_hash: string | null } | undefined;
    if (!row) throw notFound(baseModelId !== undefined ? `Base model ${baseModelId} does not exist.` : 'There is no default base model.');
    const cached = this.tokenizers_.get(row.id);
    if (cached && cached.hash === row.weights_hash) return cached;
    let tokenizer: WordTokenizer | null = null;
    if (row.family === MODEL_FAMILY) {
      const text = parseModelConfig(JSON.parse(row.config_json)).text;
      if (text.vocab.length > 0) tokenizer = new WordTokenizer(text.vocab, text.spareBuckets);
    }
    const entry = { hash: row.weights_hash, tokenizer, name: row.name };
    this.tokenizers_.set(row.id, entry);
    return entry;
  }

  /** Unknown words the library uses (trigger words, caption words) by spare row; rebuilt when the library changed. */
  private uses(tokenizer: WordTokenizer): { byRow: Map<number, Use[]>; triggers: Map<string, string[]> } {
    const key = JSON.stringify([
      tokenizer.vocab.length,
      tokenizer.spareBuckets,
      this.db.prepare('SELECT count(*) AS n, max(updated_at) AS t FROM datasets').get(),
      this.db.prepare('SELECT count(*) AS n, max(updated_at) AS t FROM adapters').get(),
      this.db.prepare('SELECT count(*) AS n, max(id) AS m FROM dataset_images').get(),
    ]);
    if (this.uses_?.key === key) return this.uses_;
    const byRow = new Map<number, Use[]>();
    const triggers = new Map<string, string[]>();
    // Triggers are added first, so a word's `where` names the trigger use when it has one.
    const add = (word: string, where: string, trigger: boolean) => {
      const id = tokenizer.idOf(word);
      if (id < tokenizer.vocab.length) return;
      const row = id - tokenizer.vocab.length;
      const list = byRow.get(row) ?? [];
      const existing = list.find((u) => u.word === word);
      if (existing) existing.trigger ||= trigger;
      else list.push({ word, where, trigger });
      byRow.set(row, list);
    };
    const addTrigger = (text: string, owner: string) => {
      for (const w of tokenizerWords(text)) {
        add(w, `trigger of ${owner}`, true);
        triggers.set(w, [...(triggers.get(w) ?? []), owner]);
      }
    };
    for (const a of this.db.prepare('SELECT name, trigger_words FROM adapters').all() as { name: string; trigger_words: string }[]) {
      for (const t of JSON.parse(a.trigger_words) as string[]) addTrigger(t, `“${a.name}”`);
    }
    const datasets = this.db.prepare('SELECT id, name, trigger_word FROM datasets').all() as { id: number; name: string; trigger_word: string | null }[];
    for (const d of datasets) if (d.trigger_word) addTrigger(d.trigger_word, `dataset “${d.name}”`);
    const names = new Map(datasets.map((d) => [d.id, d.name]));
    for (const r of this.db.prepare(`SELECT dataset_id, caption FROM dataset_images WHERE caption != ''`).iterate() as Iterable<{ dataset_id: number; caption: string }>) {
      for (const w of tokenizerWords(r.caption)) add(w, `in captions of “${names.get(r.dataset_id)}”`, false);
    }
    this.uses_ = { key, byRow, triggers };
    return this.uses_;
  }
}
