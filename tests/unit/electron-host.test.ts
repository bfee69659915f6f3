// Electron's binary is not available in CI, so the main process is exercised against a mock of
// the `electron` module: what matters here is the window's security posture and the wiring.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { isAllowedUrl, secureWebPreferences } from '../../src/main/hosts/electron/security';

const state = vi.hoisted(() => ({
  windows: [] as { options: Record<string, unknown>; handlers: Record<string, (...a: unknown[]) => unknown>; openHandler?: (d: { url: string }) => unknown; loaded?: string }[],
  forks: [] as { path: string; args: string[] }[],
  schemes: [] as unknown[],
  ready: null as null | (() => void),
  beforeRequest: null as null | ((d: { url: string }, cb: (r: { cancel: boolean }) => void) => void),
  permission: null as null | ((wc: unknown, p: string, cb: (ok: boolean) => void) => void),
}));

vi.mock('electron', () => {
  class BrowserWindow {
    static getAllWindows = () => [];
    static fromWebContents = () => null;
    webContents: Record<string, unknown>;
    constructor(options: Record<string, unknown>) {
      const entry: (typeof state.windows)[number] = { options, handlers: {} };
      state.windows.push(entry);
      this.webContents = {
        on: (name: string, fn: (...a: unknown[]) => unknown) => (entry.handlers[name] = fn),
        setWindowOpenHandler: (fn: (d: { url: string }) => unknown) => (entry.openHandler = fn),
        postMessage: () => {},
      };
      Object.assign(this, { once: () => {}, loadFile: (f: string) => (entry.loaded = f), loadURL: (u: string) => (entry.loaded = u) });
    }
  }
  const handlerMap = new Map<string, unknown>();
  return {
    app: {
      whenReady: () => new Promise<void>((resolve) => (state.ready = resolve)),
      on: () => {},
      quit: () => {},
    },
    BrowserWindow,
    dialog: { showOpenDialog: async () => ({ canceled: true, filePaths: [] }) },
    ipcMain: { handle: (name: string, fn: unknown) => handlerMap.set(name, fn) },
    MessageChannelMain: class {
      port1 = {};
      port2 = {};
    },
    net: {},
    protocol: { registerSchemesAsPrivileged: (s: unknown) => state.schemes.push(s), handle: () => {} },
    session: {
      defaultSession: {
        setPermissionRequestHandler: (fn: typeof state.permission) => (state.permission = fn),
        webRequest: {
          onBeforeRequest: (fn: typeof state.beforeRequest) => (state.beforeRequest = fn),
          onHeadersReceived: () => {},
        },
      },
    },
    shell: { openExternal: async () => {} },
    utilityProcess: {
      fork: (path: string, args: string[]) => {
        state.forks.push({ path, args });
        return { on: () => {}, postMessage: () => {}, kill: () => {} };
      },
    },
  };
});

describe('Electron host', () => {
  beforeEach(() => {
    state.windows.length = 0;
  });

  it('hardens every window: isolation, sandbox, no Node', () => {
    const prefs = secureWebPreferences('/p.cjs');
    expect(prefs).toMatchObject({ contextIsolation: true, sandbox: true, nodeIntegration: false, webSecurity: true, webviewTag: false });
  });

  it('allows only the app bundle and its media scheme to load', () => {
    const app = 'file:///opt/shira/out/renderer/';
    expect(isAllowedUrl(`${app}index.html`, app)).toBe(true);
    expect(isAllowedUrl('shira-media://thumb/3', app)).toBe(true);
    expect(isAllowedUrl('https://example.com/x.js', app)).toBe(false);
    expect(isAllowedUrl('file:///etc/passwd', app)).toBe(false);
  });

  it('runs the core in a utility process and opens one hardened window', async () => {
    process.argv.push('--data-dir', '/tmp/shira-electron-test');
    await import('../../src/main/hosts/electron/main');
    expect(state.schemes).toHaveLength(1);
    state.ready!();
    await new Promise((r) => setTimeout(r, 0));
    expect(state.forks).toHaveLength(1);
    expect(state.forks[0]!.path).toMatch(/core-host\.js$/);
    expect(state.forks[0]!.args).toEqual(['--data-dir', '/tmp/shira-electron-test']);
    expect(state.windows).toHaveLength(1);
    const win = state.windows[0]!;
    expect(win.options.webPreferences).toMatchObject({ contextIsolation: true, sandbox: true, nodeIntegration: false });
    expect(String((win.options.webPreferences as { preload: string }).preload)).toMatch(/preload[/\\]index\.cjs$/);
    // New windows are always denied; navigation away from the bundle is prevented.
    expect(win.openHandler!({ url: 'https://example.com' })).toEqual({ action: 'deny' });
    let prevented = false;
    win.handlers['will-navigate']!({ preventDefault: () => (prevented = true) }, 'https://example.com');
    expect(prevented).toBe(true);
    // Remote requests are cancelled, permissions refused.
    let cancelled: boolean | undefined;
    state.beforeRequest!({ url: 'https://cdn.example.com/a.js' }, (r) => (cancelled = r.cancel));
    expect(cancelled).toBe(true);
    let granted: boolean | undefined;
    state.permission!(null, 'media', (ok) => (granted = ok));
    expect(granted).toBe(false);
  });
});
