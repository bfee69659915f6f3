// Wire messages between a client (renderer, script) and the core. The same objects travel
// over an Electron MessagePort (structured clone) and the studio server's WebSocket (JSON).
import type { ApiError, CoreEvent } from './index';

export interface CallMessage {
  kind: 'call';
  id: number;
  method: string;
  input?: unknown;
}

export type ResultMessage = { kind: 'result'; id: number; ok: true; value: unknown } | { kind: 'result'; id: number; ok: false; error: ApiError };

export interface EventMessage {
  kind: 'event';
  event: CoreEvent;
}

export type ClientMessage = CallMessage;
export type ServerMessage = ResultMessage | EventMessage;

/** Media URL paths, shared by the studio server (`/media/...`) and Electron's `shira-media://` scheme. */
export function mediaPath(kind: string, id: number): string {
  return `${kind}/${id}`;
}
