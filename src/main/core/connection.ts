// One client connection to the core, transport-agnostic: the Electron utility process feeds it
// MessagePort messages, the studio server WebSocket frames. Malformed messages get an error reply
// when they carry an id, and are otherwise dropped — a client can never crash the core.
import type { ServerMessage } from '../../shared/protocol';
import type { Core } from './core';

export interface Connection {
  receive(message: unknown): void;
  close(): void;
}

export function connect(core: Core, client: string, send: (message: ServerMessage) => void): Connection {
  let open = true;
  const safeSend = (message: ServerMessage) => {
    if (!open) return;
    try {
      send(message);
    } catch (error) {
      core.log.warn(`could not send to ${client}`, error);
    }
  };
  const unsubscribe = core.events.subscribe((event) => safeSend({ kind: 'event', event }));
  return {
    receive(message) {
      if (!open) return;
      const m = message as { kind?: unknown; id?: unknown; method?: unknown; input?: unknown } | null;
      const id = typeof m?.id === 'number' && Number.isSafeInteger(m.id) ? m.id : null;
      if (!m || typeof m !== 'object' || m.kind !== 'call' || id === null || typeof m.method !== 'string') {
        if (id !== null) safeSend({ kind: 'result', id, ok: false, error: { type: 'bad_input', message: 'Malformed message: expected { kind: "call", id, method, input }.' } });
        return;
      }
      // dispatch() never rejects; the catch is the last line of defence for a process that must not die.
      core.registry
        .dispatch(m.method, m.input, { client })
        .then((outcome) => safeSend({ kind: 'result', id, ...outcome }))
        .catch((error: unknown) => core.log.error(`dispatch to ${client} failed`, error));
    },
    close() {
      open = false;
      unsubscribe();
    },
  };
}
