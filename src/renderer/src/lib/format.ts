// Numbers as artists read them: short, with units, never more digits than mean something.
import type { AdapterKind, AdapterSummary } from '../../../shared/api';

const MINUS = '\u2212';

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

/** "12 s", "3 min 05 s", "2 h 14 min": an ETA should be glanceable, so seconds go once hours appear. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Slow runs read better as seconds per step than as a fraction of a step per second. */
export function formatRate(itS: number): string {
  if (!Number.isFinite(itS) || itS <= 0) return '—';
  if (itS < 1) return `${(1 / itS).toFixed(1)} s/it`;
  return `${itS < 10 ? itS.toFixed(1) : Math.round(itS)} it/s`;
}

export function formatMs(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** α with a real minus sign and no trailing zeros: 1, 0.5, −0.25. */
export function formatAlpha(alpha: number): string {
  const text = String(Math.round(alpha * 100) / 100);
  return text.startsWith('-') ? MINUS + text.slice(1) : text;
}

export function formatLoss(loss: number): string {
  if (!Number.isFinite(loss)) return '—';
  return loss >= 1 ? loss.toFixed(3) : loss.toPrecision(3);
}

export function formatCount(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 1 : 0)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

export function formatPercent(fraction: number): string {
  const p = fraction * 100;
  return `${p < 1 ? p.toFixed(2) : p < 10 ? p.toFixed(1) : Math.round(p)} %`;
}

export function formatDate(iso: string | null): string {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '—';
  return date.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export interface ProgressInfo {
  step: number;
  steps: number;
  itS: number;
  etaS: number;
}

/** The worker's ETA when it gave one, else what the current speed implies. */
export function etaSeconds(p: ProgressInfo): number {
  if (p.etaS > 0) return p.etaS;
  if (p.itS > 0) return Math.max(0, p.steps - p.step) / p.itS;
  return Number.NaN;
}

export function progressText(p: ProgressInfo): string {
  const parts = [`Step ${p.step.toLocaleString()} of ${p.steps.toLocaleString()}`];
  if (p.itS > 0) parts.push(formatRate(p.itS));
  const eta = etaSeconds(p);
  if (p.step < p.steps && Number.isFinite(eta)) parts.push(`${formatDuration(eta)} left`);
  return parts.join(' · ');
}

export const KIND_BADGE: Record<AdapterKind, string> = { shira: 'SHiRA', lora: 'LoRA' };

/** The kind badge and its one-line detail: "SHiRA · struct 2 %", "LoRA · rank 4". */
export function kindLabel(adapter: Pick<AdapterSummary, 'kind' | 'method'>): { badge: string; detail: string } {
  const m = adapter.method;
  if (adapter.kind === 'shira') {
    const mask = typeof m.mask === 'string' ? m.mask : null;
    const density = typeof m.density === 'number' ? formatPercent(m.density) : null;
    return { badge: KIND_BADGE.shira, detail: [mask, density].filter(Boolean).join(' ') };
  }
  const rank = typeof m.rank === 'number' ? m.rank : null;
  return { badge: KIND_BADGE.lora, detail: rank !== null ? `rank ${rank}` : typeof m.matchDensity === 'number' ? `matched ${formatPercent(m.matchDensity)}` : '' };
}

/** "a, b ,, c" → ["a", "b", "c"]: how tags and trigger words are typed. */
export function parseList(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split(',')) {
    const item = part.trim();
    if (item && !out.includes(item)) out.push(item);
  }
  return out;
}

/** "0.5, 1 1.5" → [0.5, 1, 1.5]; anything that is not a number is dropped. */
export function parseNumbers(text: string, min = -Infinity, max = Infinity): number[] {
  const out: number[] = [];
  for (const part of text.replaceAll(MINUS, '-').split(/[\s,;]+/)) {
    if (part === '') continue;
    const n = Number(part);
    if (Number.isFinite(n) && n >= min && n <= max && !out.includes(n)) out.push(n);
  }
  return out;
}
