// What the window shows when the core cannot start, and when the main process stops restarting it.
// Plain data and strings, so tests check them without an Electron binary.
import type { NativeReport } from '../../../shared/api';

/** Why the core is not running: its own self-check, an exception while starting, or an exit. */
export interface StartupFailure {
  report?: NativeReport;
  /** The core threw while starting (e.g. a library written by a newer version of the app). */
  error?: string;
  /** The core process exited before it was ready, or kept crashing: its exit code. */
  exitCode?: number | null;
  crashes?: number;
}

/** Messages the core's utility process sends to the main process. */
export type CoreHostMessage = { type: 'ready' } | { type: 'startup-failed'; failure: StartupFailure } | { type: 'media'; requestId: number; mime: string | null; bytes: Uint8Array | null };

/**
 * A crash after a good start is restarted (the windows get fresh ports and retry); a core that never
 * became ready, or crashed `max` times within `windowMs`, is not — the same failure would repeat, so
 * the window shows it instead of flickering through restarts.
 */
export class RestartPolicy {
  private crashes_: number[] = [];
  constructor(
    private readonly max = 3,
    private readonly windowMs = 60_000,
  ) {}

  /** Called for an unexpected exit; returns whether to start the core again. */
  shouldRestart(wasReady: boolean, now = Date.now()): boolean {
    if (!wasReady) return false;
    this.crashes_ = this.crashes_.filter((t) => now - t < this.windowMs);
    this.crashes_.push(now);
    return this.crashes_.length < this.max;
  }

  get recentCrashes(): number {
    return this.crashes_.length;
  }
}

/** Fixes are commands (lower-case first word: `npm …`, `sudo …`) or, for an installed app, actions in words. */
const isCommand = (fix: string) => /^[a-z_]+[= ]/.test(fix);
const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The lines the page shows: each problem, and the one command (or action) that fixes it. */
export function describeFailure(failure: StartupFailure): { problems: { what: string; detail?: string; fix?: string }[] } {
  const problems: { what: string; detail?: string; fix?: string }[] = [];
  for (const c of failure.report?.checks ?? []) {
    if (!c.ok && c.required) problems.push({ what: c.message ?? `${c.module} failed to load.`, detail: c.detail, fix: c.fix });
  }
  if (failure.error) problems.push({ what: `The core could not start: ${failure.error}` });
  if (!problems.length && failure.crashes) {
    problems.push({ what: `The core process crashed ${failure.crashes} times within a minute (last exit code ${failure.exitCode ?? 'none'}); it was not restarted again.` });
  } else if (!problems.length) {
    problems.push({ what: `The core process stopped while starting (exit code ${failure.exitCode ?? 'none'}).` });
  }
  return { problems };
}

/** A self-contained page (no script, no external resource) for `data:` loading. */
export function failurePage(failure: StartupFailure, where: { appRoot: string; logFile: string; packaged: boolean }): string {
  const { problems } = describeFailure(failure);
  const items = problems
    .map(
      (p) =>
        `<li><p>${escape(p.what)}</p>${p.detail ? `<p class="detail">${escape(p.detail)}</p>` : ''}${
          p.fix ? `<p>To fix it${where.packaged || !isCommand(p.fix) ? '' : `, run in a terminal in <code>${escape(where.appRoot)}</code>`}:</p><pre>${escape(p.fix)}</pre>` : ''
        }</li>`,
    )
    .join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shira Studio cannot start</title><style>
body{font:14px/1.5 system-ui,sans-serif;background:#111214;color:#e6e6e6;margin:0;padding:48px;max-width:760px}
h1{font-size:20px;margin:0 0 8px}li{margin:0 0 20px}ul{padding-left:20px}
pre,code{font-family:ui-monospace,monospace;background:#1d1f23;border-radius:4px}pre{padding:8px 12px;user-select:all;white-space:pre-wrap}code{padding:1px 4px}
.detail{color:#9a9ca3;font-size:12px}.muted{color:#9a9ca3}</style></head><body>
<h1 role="alert">Shira Studio cannot start</h1><p class="muted">The window opens once the problem below is fixed; nothing in your library was changed.</p>
<ul>${items}</ul>
<p class="muted">Then quit and start Shira Studio again. Details: <code>${escape(where.logFile)}</code></p></body></html>`;
}

export function failureUrl(html: string): string {
  return `data:text/html;charset=utf-8,${encodeURIComponent(html)}`;
}
