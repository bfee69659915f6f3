// Electron utility-process entry: runs the plain-Node core off the main process, so synchronous
// SQLite and image work never freezes a window. The main process hands over one MessagePort per
// window (renderer ↔ core directly; main does not relay API calls) and asks for media on its own
// parentPort.
import type { MessagePortMain } from 'electron';
import { connect } from '../../core/connection';
import { Core } from '../../core/core';
import { fileURLToPath } from 'node:url';
import { argValue, defaultWorkerBinary, resolveDataDir, resourcesDir } from '../../core/paths';
import { MEDIA_KINDS, type MediaKind } from '../../../shared/api';

const parentPort = process.parentPort;
const appRoot = fileURLToPath(new URL('../../', import.meta.url));
const core = new Core({ dataDir: resolveDataDir(argValue(process.argv, 'data-dir')), host: 'electron', resourcesDir: resourcesDir(appRoot), worker: { binary: defaultWorkerBinary(appRoot) } });
let clients = 0;

type ParentMessage = { type: 'connect' } | { type: 'media'; requestId: number; kind: string; id: number };

parentPort.on('message', (event: { data: ParentMessage; ports: MessagePortMain[] }) => {
  const message = event.data;
  if (message.type === 'connect' && event.ports[0]) {
    const port = event.ports[0];
    const connection = connect(core, `window#${++clients}`, (m) => port.postMessage(m));
    port.on('message', (e) => connection.receive(e.data));
    port.on('close', () => connection.close());
    port.start();
  } else if (message.type === 'media') {
    const media = MEDIA_KINDS.includes(message.kind as MediaKind) ? core.media(message.kind as MediaKind, message.id) : null;
    parentPort.postMessage({ type: 'media', requestId: message.requestId, mime: media?.mime ?? null, bytes: media ? new Uint8Array(media.bytes) : null });
  }
});

parentPort.postMessage({ type: 'ready' });

// The main process kills this one on quit; close the worker first so it does not outlive us.
process.on('SIGTERM', () => void core.close().finally(() => process.exit(0)));
