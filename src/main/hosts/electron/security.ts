// Window hardening, kept as plain data so tests can check it without an Electron binary.
// The preload is the renderer's only door: no Node, a sandboxed preload, isolated worlds.

export const MEDIA_SCHEME = 'shira-media';

export function secureWebPreferences(preloadPath: string) {
  return {
    preload: preloadPath,
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    webviewTag: false,
    spellcheck: false,
  } as const;
}

/** Only the app's own bundle, devtools and the media scheme may load; nothing remote. */
export function isAllowedUrl(url: string, appUrlPrefix: string): boolean {
  if (url.startsWith(appUrlPrefix)) return true;
  if (url.startsWith(`${MEDIA_SCHEME}://`)) return true;
  if (url.startsWith('devtools://') || url.startsWith('chrome-extension://')) return true;
  if (url.startsWith('data:') || url.startsWith('blob:')) return true;
  return false;
}

export const ELECTRON_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: shira-media:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
