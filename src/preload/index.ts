// The sandboxed preload: the renderer's only way out. It exposes `window.shira` (ShiraBridge)
// and nothing else — no ipcRenderer, no Node. API calls go over a MessagePort straight to the
// core's utility process; the port arrives after load, so early calls wait for it.
import { contextBridge, ipcRenderer, webUtils } from 'electron';
import type { CoreEvent, MediaKind } from '../shared/api';
import type { CallOutcome, ShiraBridge } from '../shared/bridge';
import type { ServerMessage } from '../shared/protocol';

let port: MessagePort | null = null;
let nextId = 0;
const pending = new Map<number, (outcome: CallOutcome) => void>();
const queued: { id: number; method: string; input: unknown }[] = [];
const listeners = new Set<(event: CoreEvent) => void>();

ipcRenderer.on('shira:core-port', (event) => {
  // A new port after a core restart: calls in flight on the old one will never be answered.
  for (const resolve of pending.values()) resolve({ ok: false, error: { type: 'internal', message: 'The core restarted; please try again.' } });
  pending.clear();
  port = event.ports[0] ?? null;
  if (!port) return;
  port.onmessage = (e: MessageEvent<ServerMessage>) => {
    const m = e.data;
    if (m.kind === 'result') {
      const resolve = pending.get(m.id);
      pending.delete(m.id);
      resolve?.(m.ok ? { ok: true, value: m.value } : { ok: false, error: m.error });
    } else if (m.kind === 'event') {
      for (const listener of listeners) listener(m.event);
    }
  };
  port.start();
  for (const q of queued.splice(0)) send(q.id, q.method, q.input);
});

function send(id: number, method: string, input: unknown): void {
  port!.postMessage({ kind: 'call', id, method, input });
}

const bridge: ShiraBridge = {
  host: 'electron',
  call(method, input) {
    const id = ++nextId;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      if (port) send(id, method, input);
      else queued.push({ id, method, input });
    });
  },
  onEvent(listener) {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
  mediaUrl(kind: MediaKind, id: number) {
    return `shira-media://${kind}/${id}`;
  },
  pickFolder() {
    return ipcRenderer.invoke('shira:pick-folder') as Promise<string | null>;
  },
  pathsForFiles(files) {
    return files.map((f) => webUtils.getPathForFile(f)).filter((p) => p.length > 0);
  },
};

contextBridge.exposeInMainWorld('shira', bridge);
