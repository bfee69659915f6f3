// Electron utility-process entry: runs the plain-Node core off the main process, so synchronous
// SQLite and image work never freezes a window. The main process hands over one MessagePort per
// window (renderer ↔ core directly; main does not relay API calls) and asks for media on its own
// parentPort.
//
// Start-up self-check first: better-sqlite3 must be the build for Electron's ABI (layout.ts), and it
// and sharp must load, before the core — which imports both — is imported at all. A failure is sent
// to the main process as data and this process stays idle: exiting would only be restarted into the
// same failure.
import type { MessagePortMain } from 'electron';
import { fileURLToPath } from 'node:url';
import { MEDIA_KINDS, type MediaKind } from '../../../shared/api';
import { argValue, resolveDataDir } from '../../core/paths';
import { appLayout, currentRuntime, sqliteBinding } from '../../core/runtime/layout';
import { canStart, checkContext, checkModules, nativeReport } from '../../core/runtime/native-check';
import type { CoreHostMessage } from './startup';

const parentPort = process.parentPort;
const post = (m: CoreHostMessage) => parentPort.postMessage(m);
const appRoot = fileURLToPath(new URL('../../', import.meta.url));
const layout = appLayout(appRoot);
const { runtime, abi } = currentRuntime();
const context = checkContext(layout.packaged, sqliteBinding(appRoot, runtime, abi));
const checks = checkModules(context);

type ParentMessage = { type: 'connect' } | { type: 'media'; requestId: number; kind: string; id: number };

async function start(): Promise<void> {
  const [{ Core }, { connect }] = await Promise.all([import('../../core/core'), import('../../core/connection')]);
  let core: InstanceType<typeof Core>;
  try {
    core = new Core({
      dataDir: resolveDataDir(argValue(process.argv, 'data-dir')),
      host: 'electron',
      resourcesDir: layout.resourcesDir,
      worker: { binary: layout.workers.cpu, cuda: layout.workers.cuda },
      sqliteBinding: context.sqliteBinding,
      packaged: layout.packaged,
      nativeChecks: checks,
    });
  } catch (error) {
    post({ type: 'startup-failed', failure: { error: errorText(error) } });
    return;
  }
  let clients = 0;
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
      post({ type: 'media', requestId: message.requestId, mime: media?.mime ?? null, bytes: media ? new Uint8Array(media.bytes) : null });
    }
  });
  post({ type: 'ready' });
  // The main process kills this one on quit; close the worker first so it does not outlive us.
  process.on('SIGTERM', () => void core.close().finally(() => process.exit(0)));
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

if (canStart(checks)) {
  start().catch((error: unknown) => post({ type: 'startup-failed', failure: { error: errorText(error) } }));
} else {
  post({ type: 'startup-failed', failure: { report: nativeReport(context, checks) } });
  // A listener on the port keeps this process alive (and idle) until the main process quits it.
  parentPort.on('message', () => {});
}
