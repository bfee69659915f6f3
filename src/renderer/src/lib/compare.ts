// What the Compare grid holds, as plain data: rows, columns and, per cell, the exact generation
// to run. Same prompt and same seed everywhere, so the only thing that differs is the mix. The prompt carries the
// trigger words of every adapter compared, added the way Mix adds them, so each style is actually called up.
import type { AdapterKind, ConceptReport, GridAxis, MixEntry } from '../../../shared/api';
import { withTriggerWords } from './captions';
import { formatAlpha } from './format';

export type CompareMode = 'alpha' | 'prompts' | 'combine';

export interface CompareAdapter {
  id: number;
  name: string;
  kind: AdapterKind;
  triggerWords: readonly string[];
}

export interface CompareConfig {
  mode: CompareMode;
  adapters: readonly CompareAdapter[];
  includeBase: boolean;
  alphas: readonly number[];
  prompts: readonly string[];
  /** α for every adapter in the prompts and combine modes. */
  weight: number;
}

export interface CellSpec {
  /** Identical specs share one key and are generated once (the base row repeats across α). */
  key: string;
  prompt: string;
  mix: MixEntry[];
}

/** A row or column header: the name in full, what it is (kind badge), and a detail line. */
export interface Axis extends GridAxis {
  key: string;
}

export interface CompareLayout {
  mode: CompareMode;
  /** The prompts as drawn, trigger words added; one per prompt in the modes that vary it. */
  prompts: string[];
  /** α of every adapter in the prompts and combine modes. */
  weight: number;
  rows: Axis[];
  columns: Axis[];
  cells: CellSpec[][];
  /** Each distinct generation once, in reading order. */
  unique: CellSpec[];
  /** Why there is nothing to run yet, in words the form can show. */
  problem: string | null;
}

function spec(prompt: string, mix: MixEntry[]): CellSpec {
  return { key: JSON.stringify([prompt, mix.map((e) => [e.adapterId, e.alpha])]), prompt, mix };
}

const BASE: Axis = { key: 'base', label: 'Base model', sub: 'no adapter', kind: 'base' };

function adapterAxis(a: CompareAdapter, sub?: string): Axis {
  return { key: `a${a.id}`, label: a.name, kind: a.kind, ...(sub ? { sub } : {}) };
}

export function compareLayout(c: CompareConfig): CompareLayout {
  const empty = (problem: string): CompareLayout => ({ mode: c.mode, prompts: [], weight: c.weight, rows: [], columns: [], cells: [], unique: [], problem });
  const triggers = [...new Set(c.adapters.flatMap((a) => a.triggerWords))];
  const prompts = c.prompts
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => withTriggerWords(p, triggers));
  if (prompts.length === 0) return empty('Write a prompt to compare with.');
  let rows: Axis[];
  let columns: Axis[];
  let cells: CellSpec[][];

  if (c.mode === 'alpha') {
    if (c.adapters.length === 0 && !c.includeBase) return empty('Pick at least one adapter.');
    if (c.alphas.length === 0) return empty('Give at least one α value, for example 0.5, 1, 1.5.');
    const prompt = prompts[0];
    rows = [...(c.includeBase ? [BASE] : []), ...c.adapters.map((a) => adapterAxis(a))];
    columns = c.alphas.map((alpha) => ({ key: `alpha${alpha}`, label: `α ${formatAlpha(alpha)}` }));
    cells = [...(c.includeBase ? [c.alphas.map(() => spec(prompt, []))] : []), ...c.adapters.map((a) => c.alphas.map((alpha) => spec(prompt, [{ adapterId: a.id, alpha }])))];
  } else if (c.mode === 'prompts') {
    if (c.adapters.length === 0 && !c.includeBase) return empty('Pick at least one adapter.');
    rows = [...(c.includeBase ? [BASE] : []), ...c.adapters.map((a) => adapterAxis(a, `α ${formatAlpha(c.weight)}`))];
    columns = prompts.map((p, i) => ({ key: `p${i}`, label: p }));
    cells = [...(c.includeBase ? [prompts.map((p) => spec(p, []))] : []), ...c.adapters.map((a) => prompts.map((p) => spec(p, [{ adapterId: a.id, alpha: c.weight }])))];
  } else {
    if (c.adapters.length < 2) return empty('Pick two or more adapters to see how they hold up together.');
    const fused: MixEntry[] = c.adapters.map((a) => ({ adapterId: a.id, alpha: c.weight }));
    rows = prompts.map((p, i) => ({ key: `p${i}`, label: p }));
    columns = [
      ...(c.includeBase ? [BASE] : []),
      ...c.adapters.map((a) => adapterAxis(a, `alone · α ${formatAlpha(c.weight)}`)),
      { key: 'fused', label: 'All fused', sub: `${c.adapters.length} adapters · α ${formatAlpha(c.weight)}` },
    ];
    cells = prompts.map((p) => [...(c.includeBase ? [spec(p, [])] : []), ...c.adapters.map((a) => spec(p, [{ adapterId: a.id, alpha: c.weight }])), spec(p, fused)]);
  }

  const seen = new Set<string>();
  const unique: CellSpec[] = [];
  for (const row of cells) {
    for (const cell of row) {
      if (seen.has(cell.key)) continue;
      seen.add(cell.key);
      unique.push(cell);
    }
  }
  return { mode: c.mode, prompts: c.mode === 'alpha' ? prompts.slice(0, 1) : prompts, weight: c.weight, rows, columns, cells, unique, problem: null };
}

/** One number of a concept-loss report, ready to print in a two-column table. */
export interface ConceptLine {
  label: string;
  value: string;
  /** Said where the number appears, when it is easy to misread. */
  note?: string;
}

/** Where the numbers go: beside each row (adapters are rows) or under each column (combine: adapters are columns). */
export interface ConceptNumbers {
  along: 'rows' | 'columns';
  byAxis: Record<string, ConceptLine[]>;
}

const pct = (x: number) => `${Math.round(x * 100)} %`;

/** Retention over 100 % reads like "more style survived", which it is not. */
export const RETENTION_NOTE = 'Above 100 %: fusing raised the judge’s score for this style above the adapter alone. That is the mix pushing the judge, not the style surviving better than alone.';

function retentionLine(label: string, f: ConceptReport['fused'][number]): ConceptLine {
  if (f.retention === null) return { label, value: pct(f.score) };
  return { label, value: `${pct(f.score)} · kept ${pct(f.retention)}`, ...(f.retention > 1 ? { note: RETENTION_NOTE } : {}) };
}

/**
 * Places a concept-loss report (docs/concept-loss.md) on the grid, once per adapter rather than under every cell:
 * the base model's axis gets each style's score on the base; an adapter's axis its own score alone, drift and (rows
 * of an α sweep) its score fused at each measured α; the combine grid's fused column each style's score in the mix.
 * Axes the report did not measure get nothing, so nothing is ever made up.
 */
export function conceptNumbers(layout: CompareLayout, report: ConceptReport | null): ConceptNumbers {
  const along = layout.mode === 'combine' ? 'columns' : 'rows';
  const byAxis: Record<string, ConceptLine[]> = {};
  if (!report || layout.problem) return { along, byAxis };
  const name = (id: number) => report.single.find((s) => s.adapterId === id)?.name ?? `#${id}`;
  for (const axis of along === 'rows' ? layout.rows : layout.columns) {
    const lines: ConceptLine[] = [];
    if (axis.key === 'base') {
      for (const s of report.single) lines.push({ label: `${s.name} style on base`, value: pct(s.baseScore) });
    } else if (axis.key === 'fused') {
      // Under a grid cell: the score and the share kept on lines of their own, so nothing wraps mid-number.
      for (const f of report.fused.filter((x) => x.alpha === layout.weight)) {
        lines.push({ label: `${name(f.adapterId)}, fused`, value: pct(f.score) });
        if (f.retention !== null) lines.push({ label: 'kept of alone', value: pct(f.retention), ...(f.retention > 1 ? { note: RETENTION_NOTE } : {}) });
      }
    } else {
      const single = report.single.find((s) => `a${s.adapterId}` === axis.key);
      if (single) {
        lines.push({ label: 'Alone, α 1', value: pct(single.score) }, { label: 'On base', value: pct(single.baseScore) }, { label: 'Drift', value: single.drift.toFixed(2) });
        if (along === 'rows') {
          for (const f of report.fused.filter((x) => x.adapterId === single.adapterId)) lines.push(retentionLine(`All fused, α ${formatAlpha(f.alpha)}`, f));
        }
      }
    }
    if (lines.length > 0) byAxis[axis.key] = lines;
  }
  return { along, byAxis };
}
