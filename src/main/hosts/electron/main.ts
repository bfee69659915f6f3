// Electron main process: windows, the media protocol, the folder picker, and supervision of the
// core's utility process. It never opens the database itself. When the core cannot start (its
// self-check failed, or it exits before it is ready) every window shows why and how to fix it, and
// the core is not restarted into the same failure.
import { app, BrowserWindow, dialog, ipcMain, MessageChannelMain, protocol, session, shell, utilityProcess, type UtilityProcess } from 'electron';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { argValue, resolveDataDir } from '../../core/paths';
import { ELECTRON_CSP, isAllowedUrl, MEDIA_SCHEME, secureWebPreferences } from './security';
import { failurePage, failureUrl, RestartPolicy, type CoreHostMessage, type StartupFailure } from './startup';

const here = fileURLToPath(new URL('.', import.meta.url));
const rendererUrl = process.env.ELECTRON_RENDERER_URL;
const rendererFile = join(here, '../renderer/index.html');
const appUrlPrefix = rendererUrl ?? pathToFileURL(join(here, '../renderer/')).href;
const dataDir = resolveDataDir(argValue(process.argv, 'data-dir'));
const appRoot = join(here, '../..');

protocol.registerSchemesAsPrivileged([{ scheme: MEDIA_SCHEME, privileges: { standard: true, secure: true, supportFetchAPI: true } }]);

let coreProcess: UtilityProcess | null = null;
/** Set once the core cannot start; windows then show the failure page instead of the app. */
let coreFailure: StartupFailure | null = null;
const restarts = new RestartPolicy();
let mediaRequests = 0;
const pendingMedia = new Map<number, (r: { mime: string | null; bytes: Uint8Array | null }) => void>();

function startCore(): UtilityProcess {
  const child = utilityProcess.fork(join(here, 'core-host.js'), ['--data-dir', dataDir], { serviceName: 'Shira Studio core', stdio: 'inherit' });
  let ready = false;
  child.on('message', (m: CoreHostMessage) => {
    if (m.type === 'ready') ready = true;
    else if (m.type === 'startup-failed') showFailure(m.failure);
    else if (m.type === 'media') {
      pendingMedia.get(m.requestId)?.({ mime: m.mime, bytes: m.bytes });
      pendingMedia.delete(m.requestId);
    }
  });
  child.on('exit', (code) => {
    if (coreProcess !== child) return;
    coreProcess = null;
    for (const resolve of pendingMedia.values()) resolve({ mime: null, bytes: null });
    pendingMedia.clear();
    if (quitting || coreFailure) return;
    if (code === 0) return;
    if (restarts.shouldRestart(ready)) {
      // Give every window a fresh port; their pending calls fail and they retry.
      console.error(`Shira Studio core exited with code ${code}; restarting.`);
      coreProcess = startCore();
      for (const win of BrowserWindow.getAllWindows()) connectWindow(win);
    } else {
      showFailure(ready ? { exitCode: code, crashes: restarts.recentCrashes } : { exitCode: code });
    }
  });
  return child;
}

function showFailure(failure: StartupFailure): void {
  if (coreFailure) return;
  coreFailure = failure;
  console.error('Shira Studio core cannot start:', JSON.stringify(failure));
  for (const win of BrowserWindow.getAllWindows()) loadContent(win);
}

function loadContent(win: BrowserWindow): void {
  if (coreFailure) {
    const html = failurePage(coreFailure, { appRoot, logFile: join(dataDir, 'logs', 'core.log'), packaged: app.isPackaged });
    void win.loadURL(failureUrl(html));
  } else if (rendererUrl) void win.loadURL(rendererUrl);
  else void win.loadFile(rendererFile);
}

function connectWindow(win: BrowserWindow): void {
  if (!coreProcess || coreFailure) return;
  const { port1, port2 } = new MessageChannelMain();
  coreProcess.postMessage({ type: 'connect' }, [port1]);
  win.webContents.postMessage('shira:core-port', null, [port2]);
}

function createWindow(): BrowserWindow {
  const win = new BrowserWindow({
    width: 1440,
    height: 900,
    minWidth: 1280,
    minHeight: 720,
    backgroundColor: '#111214',
    title: 'Shira Studio',
    show: false,
    webPreferences: secureWebPreferences(join(here, '../preload/index.cjs')),
  });
  win.once('ready-to-show', () => win.show());
  win.webContents.on('did-finish-load', () => connectWindow(win));
  win.webContents.on('will-navigate', (event, url) => {
    if (!url.startsWith(appUrlPrefix)) event.preventDefault();
  });
  win.webContents.setWindowOpenHandler(({ url }) => {
    // Links to docs open in the user's browser; the app never opens a second web window.
    if (url.startsWith('https://')) void shell.openExternal(url);
    return { action: 'deny' };
  });
  loadContent(win);
  return win;
}

let quitting = false;

function start(): void {
  const ses = session.defaultSession;
  ses.setPermissionRequestHandler((_wc, _permission, callback) => callback(false));
  ses.webRequest.onBeforeRequest((details, callback) => callback({ cancel: !isAllowedUrl(details.url, appUrlPrefix) }));
  ses.webRequest.onHeadersReceived((details, callback) => {
    callback({ responseHeaders: { ...details.responseHeaders, 'Content-Security-Policy': [ELECTRON_CSP] } });
  });
  protocol.handle(MEDIA_SCHEME, async (request) => {
    const url = new URL(request.url);
    const id = Number(url.pathname.replace(/^\//, ''));
    if (!coreProcess || !Number.isSafeInteger(id)) return new Response('Not found', { status: 404 });
    const requestId = ++mediaRequests;
    const media = await new Promise<{ mime: string | null; bytes: Uint8Array | null }>((resolve) => {
      pendingMedia.set(requestId, resolve);
      coreProcess!.postMessage({ type: 'media', requestId, kind: url.host, id });
    });
    if (!media.bytes || !media.mime) return new Response('Not found', { status: 404 });
    return new Response(Buffer.from(media.bytes), { headers: { 'Content-Type': media.mime } });
  });
  ipcMain.handle('shira:pick-folder', async (event) => {
    const win = BrowserWindow.fromWebContents(event.sender);
    if (!win || !event.senderFrame?.url.startsWith(appUrlPrefix)) return null;
    const result = await dialog.showOpenDialog(win, { properties: ['openDirectory'], title: 'Choose a folder of images' });
    return result.canceled ? null : (result.filePaths[0] ?? null);
  });
  coreProcess = startCore();
  createWindow();
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) createWindow();
  });
}

app
  .whenReady()
  .then(start)
  .catch((error: unknown) => {
    // Without this a failed start-up left a running app with no window and nothing said.
    dialog.showErrorBox('Shira Studio could not start', error instanceof Error ? error.message : String(error));
    app.exit(1);
  });

app.on('before-quit', () => {
  quitting = true;
  coreProcess?.kill();
});

app.on('window-all-closed', () => {
  if (process.platform !== 'darwin') app.quit();
});

app.on('web-contents-created', (_event, contents) => {
  contents.on('will-attach-webview', (event) => event.preventDefault());
});
