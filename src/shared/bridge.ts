// What the Electron preload exposes as `window.shira`. The renderer uses it when present and
// otherwise talks WebSocket to the studio server; nothing else differs between the hosts.
import type { CoreEvent, MediaKind } from './api';
import type { ApiError } from './errors';

export type CallOutcome = { ok: true; value: unknown } | { ok: false; error: ApiError };

export interface ShiraBridge {
  readonly host: 'electron';
  call(method: string, input: unknown): Promise<CallOutcome>;
  /** Returns an unsubscribe function. */
  onEvent(listener: (event: CoreEvent) => void): () => void;
  mediaUrl(kind: MediaKind, id: number): string;
  /** Native folder picker; null when the user cancels. */
  pickFolder(): Promise<string | null>;
  /** Absolute paths of dropped files (Electron's webUtils.getPathForFile). */
  pathsForFiles(files: File[]): string[];
}

declare global {
  interface Window {
    /** Present only inside the Electron app (set by the preload). */
    shira?: ShiraBridge;
  }
}

/** Studio-server HTTP surface used by the browser transport (paths relative to the page origin). */
export const SERVER_PATHS = {
  ws: '/ws',
  media: '/media/', // + `${kind}/${id}`
  /** POST raw file bytes to `/upload/<uploadId>?path=<relative path>`; replies { folder }. */
  upload: '/upload/',
  /** GET `/download/adapter/<id>.safetensors` or `.shira.json`: an adapter package as a browser download. */
  download: '/download/',
  /** POST JSON { method, input } with `Authorization: Bearer <token>`, for scripts. */
  call: '/api/call',
} as const;
