// Pure pieces of the renderer: numbers as artists read them, the gallery's window math, grid
// keyboard movement, loss-chart geometry, library filters and the compare grid's layout.
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConceptReport, WordCheck, WordInfo } from '../../../src/shared/api';
import { filterAdapters, tagsOf } from '../../../src/renderer/src/lib/adapters';
import { chartGeometry, smooth, thin } from '../../../src/renderer/src/lib/chart';
import { editCaption, previewPrompts, splitTags, tagFrequency, withTriggerWords } from '../../../src/renderer/src/lib/captions';
import { compareLayout, conceptNumbers, RETENTION_NOTE, type CompareConfig } from '../../../src/renderer/src/lib/compare';
import { showsPixels } from '../../../src/renderer/src/lib/pixels';
import { triggerSuggestion, wordMarks } from '../../../src/renderer/src/lib/words';
import { etaSeconds, formatAlpha, formatBytes, formatDuration, formatMs, formatRate, kindLabel, parseList, parseNumbers, progressText } from '../../../src/renderer/src/lib/format';
import { columnsOf, moveIndex } from '../../../src/renderer/src/lib/grid-nav';
import { columnsFor, gridWindow, pagesFor, scrollToReveal } from '../../../src/renderer/src/lib/virtual';
import { adapterSummary } from './fixtures';

const adapter = adapterSummary;

describe('formatting', () => {
  it('says durations, rates and sizes the short way', () => {
    expect(formatDuration(4.4)).toBe('4 s');
    expect(formatDuration(185)).toBe('3 min 05 s');
    expect(formatDuration(2 * 3600 + 14 * 60 + 59)).toBe('2 h 14 min');
    expect(formatDuration(Number.NaN)).toBe('—');
    expect(formatRate(12.34)).toBe('12 it/s');
    expect(formatRate(2.71)).toBe('2.7 it/s');
    // Slow runs: seconds per step reads better than 0.2 it/s.
    expect(formatRate(0.2)).toBe('5.0 s/it');
    expect(formatRate(0)).toBe('—');
    expect(formatBytes(500)).toBe('500 B');
    expect(formatBytes(95 * 1024)).toBe('95 KB');
    expect(formatBytes(3.5 * 1024 * 1024)).toBe('3.5 MB');
    expect(formatMs(0.412)).toBe('0.41 ms');
    expect(formatMs(3.25)).toBe('3.3 ms');
    expect(formatMs(481.2)).toBe('481 ms');
    expect(formatMs(1500)).toBe('1.50 s');
  });

  it('writes α with a real minus sign and no trailing zeros', () => {
    expect(formatAlpha(1)).toBe('1');
    expect(formatAlpha(0.5)).toBe('0.5');
    expect(formatAlpha(-0.25)).toBe('\u22120.25');
    expect(formatAlpha(0.80000001)).toBe('0.8');
  });

  it('computes the ETA from the speed when the worker gives none, and says progress in one line', () => {
    expect(etaSeconds({ step: 10, steps: 110, itS: 4, etaS: 0 })).toBe(25);
    expect(etaSeconds({ step: 10, steps: 110, itS: 4, etaS: 30 })).toBe(30);
    expect(etaSeconds({ step: 0, steps: 10, itS: 0, etaS: 0 })).toBeNaN();
    expect(progressText({ step: 40, steps: 500, itS: 7.4, etaS: 62 })).toBe('Step 40 of 500 · 7.4 it/s · 1 min 02 s left');
    expect(progressText({ step: 500, steps: 500, itS: 0, etaS: 0 })).toBe('Step 500 of 500');
  });

  it('names the kind of an adapter with its mask and density or rank', () => {
    expect(kindLabel(adapter({ id: 1, name: 'a' }))).toEqual({ badge: 'SHiRA', detail: 'struct 2.0 %' });
    expect(kindLabel(adapter({ id: 1, name: 'a', kind: 'lora', method: { rank: 4 } }))).toEqual({ badge: 'LoRA', detail: 'rank 4' });
    expect(kindLabel(adapter({ id: 1, name: 'a', kind: 'lora', method: {} }))).toEqual({ badge: 'LoRA', detail: '' });
  });

  it('reads comma lists and numbers the way people type them', () => {
    expect(parseList(' neon,  ink ,, neon ')).toEqual(['neon', 'ink']);
    expect(parseNumbers('0.5, 1 1.5;x, \u22121, 9', -1, 2)).toEqual([0.5, 1, 1.5, -1]);
  });
});

describe('gallery window math', () => {
  const metrics = { width: 1000, height: 600, scrollTop: 0, count: 10_000, minCell: 148, gap: 8, overscan: 2 };

  it('fits as many columns as the minimum cell allows and stretches cells to fill the row', () => {
    expect(columnsFor(1000, 148, 8)).toBe(6);
    expect(columnsFor(100, 148, 8)).toBe(1);
    const w = gridWindow(metrics);
    expect(w.columns).toBe(6);
    expect(w.cell * 6 + 8 * 5).toBeCloseTo(1000);
    expect(w.rows).toBe(Math.ceil(10_000 / 6));
    expect(w.totalHeight).toBeCloseTo(w.rows * w.rowPitch - 8);
  });

  it('keeps only a screenful (plus overscan) of 10,000 images in the DOM, wherever the scroll is', () => {
    for (const scrollTop of [0, 12_345, 1e9]) {
      const w = gridWindow({ ...metrics, scrollTop });
      const rowsShown = Math.ceil(600 / w.rowPitch) + 1 + 2 * 2;
      expect(w.end - w.start).toBeLessThanOrEqual(rowsShown * w.columns);
      expect(w.end - w.start).toBeGreaterThan(0);
      expect(w.offsetY).toBe(w.firstRow * w.rowPitch);
      expect(w.start).toBe(w.firstRow * w.columns);
    }
    // Scrolled past the end (the list shrank under it): the last rows are still shown.
    const end = gridWindow({ ...metrics, scrollTop: 1e9 });
    expect(end.end).toBe(10_000);
    const middle = gridWindow({ ...metrics, scrollTop: 12_345 });
    const firstVisible = Math.floor(12_345 / middle.rowPitch);
    expect(middle.firstRow).toBe(firstVisible - 2);
  });

  it('handles an empty gallery and a short one', () => {
    expect(gridWindow({ ...metrics, count: 0 })).toMatchObject({ start: 0, end: 0, totalHeight: 0, rows: 0 });
    expect(gridWindow({ ...metrics, count: 3 })).toMatchObject({ start: 0, end: 3, rows: 1 });
  });

  it('says which pages a window needs and how far to scroll to reveal an item', () => {
    expect(pagesFor(0, 0, 120)).toEqual([]);
    expect(pagesFor(100, 250, 120)).toEqual([0, 1, 2]);
    expect(pagesFor(240, 360, 120)).toEqual([2]);
    const w = { columns: 5, rowPitch: 100, cell: 92 };
    expect(scrollToReveal(7, w, 0, 300)).toBeNull(); // row 1 is visible
    expect(scrollToReveal(27, w, 0, 300)).toBe(5 * 100 + 92 - 300); // row 5: scroll down to its bottom
    expect(scrollToReveal(2, w, 450, 300)).toBe(0); // row 0: scroll up to its top
  });
});

describe('grid keyboard movement', () => {
  it('moves by one sideways, by a row up and down, and jumps to the ends', () => {
    expect(moveIndex(0, 'ArrowRight', 4, 10)).toBe(1);
    expect(moveIndex(0, 'ArrowLeft', 4, 10)).toBe(0);
    expect(moveIndex(1, 'ArrowDown', 4, 10)).toBe(5);
    expect(moveIndex(5, 'ArrowUp', 4, 10)).toBe(1);
    expect(moveIndex(1, 'ArrowUp', 4, 10)).toBe(1);
    // From above a short last row, Down stays rather than jumping sideways.
    expect(moveIndex(7, 'ArrowDown', 4, 10)).toBe(7);
    expect(moveIndex(3, 'Home', 4, 10)).toBe(0);
    expect(moveIndex(3, 'End', 4, 10)).toBe(9);
    expect(moveIndex(0, 'PageDown', 4, 100, 3)).toBe(12);
    expect(moveIndex(5, 'PageUp', 4, 100, 3)).toBe(0);
    expect(moveIndex(0, 'Enter', 4, 10)).toBeNull();
    expect(moveIndex(0, 'ArrowRight', 4, 0)).toBeNull();
  });

  it('counts the columns of a laid-out grid from the items on the first row', () => {
    expect(columnsOf([{ offsetTop: 0 }, { offsetTop: 0 }, { offsetTop: 0 }, { offsetTop: 200 }])).toBe(3);
    expect(columnsOf([])).toBe(1);
  });
});

describe('loss chart geometry', () => {
  it('smooths with a debiased moving average and keeps at most N points, always the last', () => {
    const flat = smooth([
      { step: 1, loss: 2 },
      { step: 2, loss: 2 },
    ]);
    for (const p of flat) expect(p.loss).toBeCloseTo(2, 12);
    const many = Array.from({ length: 1000 }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1) }));
    const few = thin(many, 100);
    expect(few).toHaveLength(100);
    expect(few[few.length - 1]).toEqual(many[999]);
  });

  it('maps the curve into the box, top for the highest loss', () => {
    const g = chartGeometry(
      [
        { step: 0, loss: 1 },
        { step: 10, loss: 0.5 },
      ],
      100,
      50,
      0,
    );
    expect(g.raw).toBe('M0.0,0.0L100.0,50.0');
    expect(g).toMatchObject({ yMin: 0.5, yMax: 1, xMax: 10, last: { step: 10, loss: 0.5 } });
    expect(chartGeometry([], 100, 50).last).toBeNull();
  });
});

describe('library filters', () => {
  const all = [
    adapter({ id: 1, name: 'Ink wash', tags: ['ink'], triggerWords: ['inkfx'], createdAt: '2026-01-02T00:00:00.000Z', sizeBytes: 10 }),
    adapter({ id: 2, name: 'neon', kind: 'lora', method: { rank: 4 }, tags: ['neon', 'ink'], createdAt: '2026-01-03T00:00:00.000Z', sizeBytes: 30 }),
    adapter({ id: 3, name: 'Aquarelle', notes: 'soft watercolour', createdAt: '2026-01-01T00:00:00.000Z', sizeBytes: 20 }),
  ];
  const f = { query: '', kind: 'all' as const, tag: null, sort: 'recent' as const };

  it('searches names, tags, trigger words and notes, every word', () => {
    expect(filterAdapters(all, { ...f, query: 'INKFX' }).map((a) => a.id)).toEqual([1]);
    expect(filterAdapters(all, { ...f, query: 'soft water' }).map((a) => a.id)).toEqual([3]);
    expect(filterAdapters(all, { ...f, query: 'ink neon' }).map((a) => a.id)).toEqual([2]);
  });

  it('filters by kind and tag and sorts by date, name or size', () => {
    expect(filterAdapters(all, { ...f, kind: 'lora' }).map((a) => a.id)).toEqual([2]);
    expect(filterAdapters(all, { ...f, tag: 'ink' }).map((a) => a.id)).toEqual([2, 1]);
    expect(filterAdapters(all, f).map((a) => a.id)).toEqual([2, 1, 3]);
    expect(filterAdapters(all, { ...f, sort: 'name' }).map((a) => a.id)).toEqual([3, 1, 2]);
    expect(filterAdapters(all, { ...f, sort: 'size' }).map((a) => a.id)).toEqual([2, 3, 1]);
    expect(tagsOf(all)).toEqual(['ink', 'neon']);
  });
});

describe('compare grid layout', () => {
  const shira = { id: 1, name: '10_painted portrait · SHiRA struct', kind: 'shira' as const, triggerWords: ['neonfx'] };
  const lora = { id: 2, name: '10_painted portrait · LoRA matched', kind: 'lora' as const, triggerWords: ['neonfx', 'glowfx'] };
  const base: CompareConfig = { mode: 'alpha', adapters: [shira, lora], includeBase: true, alphas: [0.5, 1], prompts: ['a ring'], weight: 1 };

  it('α sweep: rows base/SHiRA/LoRA with their kind and full name, columns α; the base is generated once for every column', () => {
    const l = compareLayout(base);
    expect(l.problem).toBeNull();
    expect(l.rows.map((r) => [r.label, r.kind])).toEqual([
      ['Base model', 'base'],
      ['10_painted portrait · SHiRA struct', 'shira'],
      ['10_painted portrait · LoRA matched', 'lora'],
    ]);
    expect(l.columns.map((c) => c.label)).toEqual(['α 0.5', 'α 1']);
    expect(l.cells[0][0].key).toBe(l.cells[0][1].key);
    expect(l.cells[2][1].mix).toEqual([{ adapterId: 2, alpha: 1 }]);
    expect(l.unique).toHaveLength(5);
  });

  it('adds the trigger words of the adapters compared to every prompt, as Mix does, so every cell has the same prompt', () => {
    const l = compareLayout(base);
    expect(new Set(l.cells.flat().map((c) => c.prompt))).toEqual(new Set(['a ring, neonfx, glowfx']));
    expect(l.prompts).toEqual(['a ring, neonfx, glowfx']);
    const combine = compareLayout({ ...base, mode: 'combine', prompts: ['neonfx, a box', 'a star'] });
    expect(combine.prompts).toEqual(['neonfx, a box, glowfx', 'a star, neonfx, glowfx']);
    expect(combine.cells[1].map((c) => c.prompt)).toEqual(Array(4).fill('a star, neonfx, glowfx'));
  });

  it('prompts: one column per prompt line, every adapter at one α', () => {
    const l = compareLayout({
      ...base,
      mode: 'prompts',
      prompts: ['a ring', '', 'a box '],
      weight: 0.8,
      adapters: [
        { ...shira, triggerWords: [] },
        { ...lora, triggerWords: [] },
      ],
    });
    expect(l.columns.map((c) => c.label)).toEqual(['a ring', 'a box']);
    expect(l.rows[1]).toMatchObject({ kind: 'shira', sub: 'α 0.8' });
    expect(l.cells[1].map((c) => c.mix)).toEqual([[{ adapterId: 1, alpha: 0.8 }], [{ adapterId: 1, alpha: 0.8 }]]);
    expect(l.unique).toHaveLength(6);
  });

  it('combine: each adapter alone beside all of them fused', () => {
    const l = compareLayout({ ...base, mode: 'combine' });
    expect(l.columns.map((c) => [c.label, c.kind])).toEqual([
      ['Base model', 'base'],
      ['10_painted portrait · SHiRA struct', 'shira'],
      ['10_painted portrait · LoRA matched', 'lora'],
      ['All fused', undefined],
    ]);
    expect(l.cells[0][3].mix).toEqual([
      { adapterId: 1, alpha: 1 },
      { adapterId: 2, alpha: 1 },
    ]);
    expect(compareLayout({ ...base, mode: 'combine', adapters: [shira] }).problem).toMatch(/two or more/);
  });

  it('says what is missing instead of an empty grid', () => {
    expect(compareLayout({ ...base, prompts: [' '] }).problem).toMatch(/prompt/);
    expect(compareLayout({ ...base, alphas: [] }).problem).toMatch(/α/);
    expect(compareLayout({ ...base, adapters: [], includeBase: false }).problem).toMatch(/adapter/);
  });

  const report: ConceptReport = {
    id: 1,
    adapterIds: [1, 2],
    alphas: [1],
    judge: { classes: ['base', 'S', 'L'], heldoutAccuracy: 0.9, heldoutAccuracyPerClass: [0.9, 0.9, 0.9] },
    single: [
      { adapterId: 1, name: 'S', score: 0.8, baseScore: 0.1, drift: 0.05 },
      { adapterId: 2, name: 'L', score: 0.36, baseScore: 0.12, drift: 0.67 },
    ],
    fused: [
      { alpha: 1, adapterId: 1, score: 0.7, dropPoints: 10, retention: 0.875 },
      { alpha: 1, adapterId: 2, score: 0.47, dropPoints: -11, retention: 1.3 },
    ],
    overlaps: [],
    seconds: 60,
    createdAt: '2026-01-01T00:00:00.000Z',
  };

  it('puts each adapter’s own concept-loss numbers once beside its row, never the same numbers under every cell', () => {
    const n = conceptNumbers(compareLayout(base), report);
    expect(n.along).toBe('rows');
    expect(n.byAxis.base).toEqual([
      { label: 'S style on base', value: '10 %' },
      { label: 'L style on base', value: '12 %' },
    ]);
    expect(n.byAxis.a1).toEqual([
      { label: 'Alone, α 1', value: '80 %' },
      { label: 'On base', value: '10 %' },
      { label: 'Drift', value: '0.05' },
      { label: 'All fused, α 1', value: '70 % · kept 88 %' },
    ]);
    // The LoRA row has the LoRA's numbers, and a retention above 100 % says what it means right there.
    expect(n.byAxis.a2!.slice(0, 3).map((l) => l.value)).toEqual(['36 %', '12 %', '0.67']);
    expect(n.byAxis.a2![3]).toEqual({ label: 'All fused, α 1', value: '47 % · kept 130 %', note: RETENTION_NOTE });
    expect(RETENTION_NOTE).toMatch(/not the style surviving better/);
    expect(conceptNumbers(compareLayout(base), null).byAxis).toEqual({});
  });

  it('combine: the numbers sit once under each column (not under every prompt row); unmeasured α shows nothing', () => {
    const combine = compareLayout({ ...base, mode: 'combine', prompts: ['a ring', 'a box'] });
    const n = conceptNumbers(combine, report);
    expect(n.along).toBe('columns');
    expect(Object.keys(n.byAxis)).toEqual(['base', 'a1', 'a2', 'fused']);
    expect(n.byAxis.a2!.map((l) => l.label)).toEqual(['Alone, α 1', 'On base', 'Drift']);
    expect(n.byAxis.fused).toEqual([
      { label: 'S, fused', value: '70 %' },
      { label: 'kept of alone', value: '88 %' },
      { label: 'L, fused', value: '47 %' },
      { label: 'kept of alone', value: '130 %', note: RETENTION_NOTE },
    ]);
    expect(conceptNumbers(compareLayout({ ...base, mode: 'combine', weight: 0.5 }), report).byAxis.fused).toBeUndefined();
  });
});

describe('captions: tags, bulk edits, previews', () => {
  it('edits every tag the way a tag editor does, the trigger word always first', () => {
    const t = 'painted portrait';
    expect(splitTags(' a,, b ,c ')).toEqual(['a', 'b', 'c']);
    expect(editCaption('knight, painted portrait, armour', { kind: 'sort' }, t)).toBe('painted portrait, armour, knight');
    expect(editCaption('painted portrait, knight', { kind: 'prepend', tag: 'oil' }, t)).toBe('painted portrait, oil, knight');
    expect(editCaption('knight', { kind: 'prepend', tag: 'oil' }, t)).toBe('oil, knight');
    expect(editCaption('knight, Oil', { kind: 'append', tag: 'oil' }, t)).toBe('knight, Oil');
    expect(editCaption('knight, armour', { kind: 'remove', tag: 'KNIGHT' }, t)).toBe('armour');
    expect(editCaption('a knight, armour', { kind: 'replace', find: 'knight', replace: 'squire' }, t)).toBe('a squire, armour');
    expect(editCaption('knight', { kind: 'triggerFirst' }, t)).toBe('painted portrait, knight');
    expect(editCaption('knight, Painted Portrait', { kind: 'triggerFirst' }, t)).toBe('painted portrait, knight');
    expect(editCaption('knight', { kind: 'triggerFirst' }, null)).toBe('knight');
  });

  it('counts tags across a dataset, most used first', () => {
    expect(tagFrequency(['a, b', 'B, c', 'b, b'])).toEqual([
      { tag: 'b', count: 3 },
      { tag: 'a', count: 1 },
      { tag: 'c', count: 1 },
    ]);
  });

  it('builds preview prompts from the trigger word and a few captions spread across the dataset', () => {
    const images = ['a ring', 'a box', 'neonfx, a star', 'a moon', 'a sun', 'a moon'].map((caption) => ({ caption }));
    expect(previewPrompts({ name: 'neon', triggerWord: 'neonfx', images })).toEqual(['neonfx', 'neonfx, a ring', 'neonfx, a star', 'neonfx, a sun']);
    expect(previewPrompts({ name: 'neon', triggerWord: null, images: images.slice(0, 2) })).toEqual(['a ring', 'a box']);
    expect(previewPrompts({ name: 'neon', triggerWord: '', images: [{ caption: '' }] })).toEqual(['neon']);
    expect(withTriggerWords('a ring', ['NEONFX'])).toBe('a ring, NEONFX');
    expect(withTriggerWords('neonfx ring', ['neonfx'])).toBe('neonfx ring');
  });
});

describe('word check marks', () => {
  const info = (word: string, over: Partial<WordInfo> = {}): WordInfo => ({ word, known: false, spareRow: 3, sharesWith: [], triggerOf: [], ...over });
  const check = (words: WordInfo[], suggestion: WordInfo | null = null): WordCheck => ({ model: 'clipart-64', applies: true, spareRows: 64, words, suggestion });

  it('in a prompt: marks words the model does not know (unless they are trigger words) and words sharing a spare row', () => {
    const marks = wordMarks(
      check([info('red', { known: true, spareRow: null }), info('knight', { sharesWith: [{ word: 'sprite', where: 'trigger of “Pixel”' }] }), info('neonfx', { triggerOf: ['“Neon”'] }), info('zorp')]),
      'prompt',
    );
    expect(marks.map((m) => [m.word, m.tone])).toEqual([
      ['knight', 'warn'],
      ['zorp', 'note'],
    ]);
    expect(marks[0]!.message).toMatch(/shares one of 64 shared spare rows with “sprite” \(trigger of “Pixel”\)/);
    // Words that mean nothing to the model go on one line together.
    expect(wordMarks(check([info('a'), info('glowing'), info('ring')]), 'prompt')).toEqual([
      { word: 'a glowing ring', tone: 'note', message: 'clipart-64 does not know “a”, “glowing”, “ring”: they land on shared spare rows and mean nothing to it yet.' },
    ]);
    expect(wordMarks({ ...check([info('zorp')]), applies: false }, 'prompt')).toEqual([]);
  });

  it('in a trigger field: a new word on a free row is right, a known word is a note, a collision gets a free word offered', () => {
    const free = info('paintedfx');
    expect(wordMarks(check([free]), 'trigger')).toEqual([]);
    expect(triggerSuggestion(check([free], info('paintedfx2')))).toBeNull();
    const known = check([info('portrait', { known: true, spareRow: null })], free);
    expect(wordMarks(known, 'trigger')).toEqual([{ word: 'portrait', tone: 'note', message: expect.stringMatching(/already knows “portrait”/) }]);
    expect(triggerSuggestion(known)).toBe('paintedfx');
    const clash = check([info('sprite', { sharesWith: [{ word: 'knight', where: 'in captions of “Knights”' }] })], free);
    expect(wordMarks(clash, 'trigger')[0]!.tone).toBe('warn');
    expect(triggerSuggestion(clash)).toBe('paintedfx');
  });
});

describe('pixel art', () => {
  it('shows images up to 128 px, and any the artist marks, with nearest-neighbour scaling', () => {
    expect(showsPixels(64, 64)).toBe(true);
    expect(showsPixels(128, 96)).toBe(true);
    expect(showsPixels(512, 512)).toBe(false);
    expect(showsPixels(512, 512, true)).toBe(true);
  });
});

describe('placeholders', () => {
  const views = join(import.meta.dirname, '../../../src/renderer/src');
  const files = readdirSync(views, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.svelte') || f.endsWith('.css'));
  const source = (f: string) => readFileSync(join(views, f), 'utf8');

  it('look like hints, never like values: faint and italic', () => {
    const rule = /\.input::placeholder\s*\{([^}]*)\}/.exec(source('styles/base.css'))?.[1] ?? '';
    expect(rule).toMatch(/font-style:\s*italic/);
    expect(rule).toMatch(/color:\s*var\(--text-faint\)/);
  });

  it('read as an example (“e.g.”) or an instruction, never as a bare value someone could take for what is stored', () => {
    const literals = files.flatMap((f) => [...source(f).matchAll(/placeholder="([^"]*)"/g)].map((m) => ({ file: f, text: m[1]! })));
    expect(literals.length).toBeGreaterThan(5);
    const hint = /^(e\.g\.|none\b|no |left empty|what |search |find |…|one |a tag, e\.g\.|using )/i;
    expect(literals.filter((l) => !hint.test(l.text))).toEqual([]);
  });
});
