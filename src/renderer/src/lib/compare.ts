// What the Compare grid holds, as plain data: rows, columns and, per cell, the exact generation
// to run. Same prompt and same seed everywhere, so the only thing that differs is the mix.
import type { ConceptReport, MixEntry } from '../../../shared/api';
import { formatAlpha } from './format';

export type CompareMode = 'alpha' | 'prompts' | 'combine';

export interface CompareAdapter {
  id: number;
  name: string;
  /** "SHiRA", "LoRA": shown under the row's name. */
  badge: string;
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

export interface Axis {
  key: string;
  label: string;
  sub?: string;
}

export interface CompareLayout {
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

const BASE: Axis = { key: 'base', label: 'Base model', sub: 'no adapter' };

function adapterAxis(a: CompareAdapter, weight?: number): Axis {
  return { key: `a${a.id}`, label: a.name, sub: weight === undefined ? a.badge : `${a.badge} · α ${formatAlpha(weight)}` };
}

export function compareLayout(c: CompareConfig): CompareLayout {
  const empty = (problem: string): CompareLayout => ({ rows: [], columns: [], cells: [], unique: [], problem });
  const prompts = c.prompts.map((p) => p.trim()).filter(Boolean);
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
    cells = [
      ...(c.includeBase ? [c.alphas.map(() => spec(prompt, []))] : []),
      ...c.adapters.map((a) => c.alphas.map((alpha) => spec(prompt, [{ adapterId: a.id, alpha }]))),
    ];
  } else if (c.mode === 'prompts') {
    if (c.adapters.length === 0 && !c.includeBase) return empty('Pick at least one adapter.');
    rows = [...(c.includeBase ? [BASE] : []), ...c.adapters.map((a) => adapterAxis(a, c.weight))];
    columns = prompts.map((p, i) => ({ key: `p${i}`, label: p }));
    cells = [
      ...(c.includeBase ? [prompts.map((p) => spec(p, []))] : []),
      ...c.adapters.map((a) => prompts.map((p) => spec(p, [{ adapterId: a.id, alpha: c.weight }]))),
    ];
  } else {
    if (c.adapters.length < 2) return empty('Pick two or more adapters to see how they hold up together.');
    const fused: MixEntry[] = c.adapters.map((a) => ({ adapterId: a.id, alpha: c.weight }));
    rows = prompts.map((p, i) => ({ key: `p${i}`, label: p }));
    columns = [
      ...(c.includeBase ? [BASE] : []),
      ...c.adapters.map((a) => ({ ...adapterAxis(a, c.weight), sub: `alone · α ${formatAlpha(c.weight)}` })),
      { key: 'fused', label: 'Fused', sub: c.adapters.map((a) => a.name).join(' + ') },
    ];
    cells = prompts.map((p) => [
      ...(c.includeBase ? [spec(p, [])] : []),
      ...c.adapters.map((a) => spec(p, [{ adapterId: a.id, alpha: c.weight }])),
      spec(p, fused),
    ]);
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
  return { rows, columns, cells, unique, problem: null };
}

/** The numbers a concept-loss report has for one cell, as label/value pairs ready to print. */
export interface CellScore {
  label: string;
  value: string;
}

const pct = (x: number) => `${Math.round(x * 100)} %`;

/**
 * Places a concept-loss report (issue 7) on the grid: under the base image, each style's score on
 * the base model; under an adapter alone at α 1, its style score; under a fused cell, each style's
 * score in the mix and how much of it survived. Cells the report did not measure get nothing.
 */
export function cellScores(layout: CompareLayout, report: ConceptReport | null): Record<string, CellScore[]> {
  const out: Record<string, CellScore[]> = {};
  if (!report) return out;
  const name = (id: number) => report.single.find((s) => s.adapterId === id)?.name ?? `#${id}`;
  for (const cell of layout.unique) {
    const scores: CellScore[] = [];
    if (cell.mix.length === 0) {
      for (const s of report.single) scores.push({ label: `${s.name} style`, value: pct(s.baseScore) });
    } else if (cell.mix.length === 1) {
      const [entry] = cell.mix;
      const single = report.single.find((s) => s.adapterId === entry.adapterId);
      if (single && entry.alpha === 1) scores.push({ label: 'style', value: pct(single.score) }, { label: 'drift', value: single.drift.toFixed(2) });
    } else {
      const alphas = new Set(cell.mix.map((e) => e.alpha));
      const ids = cell.mix.map((e) => e.adapterId).sort((a, b) => a - b);
      const sameSet = ids.length === report.adapterIds.length && ids.every((id, i) => id === report.adapterIds[i]);
      if (sameSet && alphas.size === 1) {
        const alpha = [...alphas][0];
        for (const f of report.fused.filter((x) => x.alpha === alpha)) {
          scores.push({ label: `${name(f.adapterId)} kept`, value: f.retention === null ? pct(f.score) : pct(f.retention) });
        }
      }
    }
    if (scores.length > 0) out[cell.key] = scores;
  }
  return out;
}
