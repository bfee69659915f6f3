// The Electron main process when the core cannot start: the window shows what failed and the fix,
// and the core is not restarted into the same failure. Electron is mocked (no binary here); the
// forked core is a stand-in whose messages and exits the tests drive.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { describeFailure, failurePage, RestartPolicy, type StartupFailure } from '../../src/main/hosts/electron/startup';
import type { NativeReport } from '../../src/shared/api';

const state = vi.hoisted(() => ({
  windows: [] as { loaded: string[]; handlers: Record<string, () => void> }[],
  forks: [] as (import('node:events').EventEmitter & { postMessage: (m: unknown) => void; kill: () => void; posted: unknown[] })[],
  ready: null as null | (() => void),
}));

vi.mock('electron', async () => {
  const { EventEmitter: Emitter } = await import('node:events');
  class BrowserWindow {
    static getAllWindows = () => windows;
    webContents: Record<string, unknown>;
    constructor() {
      const entry = { loaded: [] as string[], handlers: {} as Record<string, () => void> };
      state.windows.push(entry);
      this.webContents = {
        on: (name: string, fn: () => void) => (entry.handlers[name] = fn),
        setWindowOpenHandler: () => {},
        postMessage: () => {},
      };
      Object.assign(this, { once: () => {}, loadFile: (f: string) => entry.loaded.push(f), loadURL: (u: string) => entry.loaded.push(u) });
      windows.push(this);
    }
  }
  const windows: BrowserWindow[] = [];
  return {
    app: { whenReady: () => new Promise<void>((r) => (state.ready = r)), on: () => {}, quit: () => {}, isPackaged: false },
    BrowserWindow,
    dialog: {},
    ipcMain: { handle: () => {} },
    MessageChannelMain: class {
      port1 = {};
      port2 = {};
    },
    protocol: { registerSchemesAsPrivileged: () => {}, handle: () => {} },
    session: { defaultSession: { setPermissionRequestHandler: () => {}, webRequest: { onBeforeRequest: () => {}, onHeadersReceived: () => {} } } },
    shell: {},
    utilityProcess: {
      fork: () => {
        const child = Object.assign(new Emitter(), { posted: [] as unknown[], postMessage: (m: unknown) => child.posted.push(m), kill: () => {} });
        state.forks.push(child);
        return child;
      },
    },
  };
});

const sqliteMissing: NativeReport = {
  ok: false,
  runtime: 'electron',
  abi: '150',
  checks: [
    {
      module: 'better-sqlite3',
      ok: false,
      required: true,
      problem: 'missing-binary',
      path: '/app/electron-native/abi150/better_sqlite3.node',
      message: 'better-sqlite3 has no build for this Electron (NODE_MODULE_VERSION 150).',
      fix: 'npm run rebuild:electron',
    },
    { module: 'sharp', ok: true, required: true },
    { module: 'onnxruntime-node', ok: false, required: false, problem: 'missing-library', message: 'onnxruntime-node cannot load', fix: 'npm ci' },
  ],
};

/** The page a data: URL carries. */
const pageOf = (url: string) => decodeURIComponent(url.replace(/^data:text\/html;charset=utf-8,/, ''));
const lastLoaded = () => state.windows[0]!.loaded.at(-1)!;

async function startMain(): Promise<void> {
  vi.resetModules();
  state.windows.length = 0;
  state.forks.length = 0;
  await import('../../src/main/hosts/electron/main');
  state.ready!();
  await new Promise((r) => setTimeout(r, 0));
}

describe('Electron main when the core cannot start', () => {
  beforeEach(() => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
  });

  it("shows the core's self-check in the window, and does not restart it", async () => {
    await startMain();
    expect(state.forks).toHaveLength(1);
    expect(lastLoaded()).toMatch(/renderer[/\\]index\.html$/);
    state.forks[0]!.emit('message', { type: 'startup-failed', failure: { report: sqliteMissing } });
    const page = pageOf(lastLoaded());
    expect(page).toContain('Shira Studio cannot start');
    expect(page).toContain('better-sqlite3 has no build for this Electron (NODE_MODULE_VERSION 150).');
    expect(page).toContain('<pre>npm run rebuild:electron</pre>');
    // Only required modules block the start; the optional one is not on the page.
    expect(page).not.toContain('onnxruntime-node');
    state.forks[0]!.emit('exit', 1);
    expect(state.forks).toHaveLength(1);
    // A window that finishes loading the failure page is not handed a port to a core that is not there.
    state.windows[0]!.handlers['did-finish-load']!();
    expect(state.forks[0]!.posted).toEqual([]);
  });

  it('a core that exits before it is ready is shown, not restarted', async () => {
    await startMain();
    state.forks[0]!.emit('exit', 134);
    expect(state.forks).toHaveLength(1);
    expect(pageOf(lastLoaded())).toContain('The core process stopped while starting (exit code 134).');
  });

  it('a crash after a good start restarts the core; repeated crashes stop with a message', async () => {
    await startMain();
    for (let i = 0; i < 2; i++) {
      state.forks.at(-1)!.emit('message', { type: 'ready' });
      state.forks.at(-1)!.emit('exit', 139);
    }
    expect(state.forks).toHaveLength(3);
    expect(lastLoaded()).toMatch(/index\.html$/);
    state.forks.at(-1)!.emit('message', { type: 'ready' });
    state.forks.at(-1)!.emit('exit', 139);
    expect(state.forks).toHaveLength(3);
    expect(pageOf(lastLoaded())).toContain('crashed 3 times within a minute (last exit code 139)');
  });
});

describe('restart policy and failure page', () => {
  it('restarts only after a good start, and at most twice a minute', () => {
    const p = new RestartPolicy(3, 60_000);
    expect(p.shouldRestart(false, 0)).toBe(false);
    expect([p.shouldRestart(true, 0), p.shouldRestart(true, 1000), p.shouldRestart(true, 2000)]).toEqual([true, true, false]);
    // Crashes a minute apart are not a loop.
    const q = new RestartPolicy(3, 60_000);
    expect([0, 61_000, 122_000, 183_000].map((t) => q.shouldRestart(true, t))).toEqual([true, true, true, true]);
  });

  it('escapes what it shows and tells an installed app to reinstall, not to run npm', () => {
    const failure: StartupFailure = { error: 'library.sqlite is <newer> & "locked"' };
    expect(describeFailure(failure).problems[0]!.what).toBe('The core could not start: library.sqlite is <newer> & "locked"');
    const page = failurePage(failure, { appRoot: '/app', logFile: '/data/logs/core.log', packaged: false });
    expect(page).toContain('library.sqlite is &#60;newer&#62; &#38; &#34;locked&#34;');
    expect(page).not.toContain('<newer>');
    const installed = failurePage(
      { report: { ...sqliteMissing, checks: [{ ...sqliteMissing.checks[0]!, fix: 'Reinstall Shira Studio from its installer.' }] } },
      { appRoot: '/opt/Shira Studio/resources/app.asar', logFile: '/data/logs/core.log', packaged: true },
    );
    expect(installed).toContain('<pre>Reinstall Shira Studio from its installer.</pre>');
    expect(installed).not.toContain('run in a terminal');
    expect(failurePage({ report: sqliteMissing }, { appRoot: '/src/shira', logFile: '/d/core.log', packaged: false })).toContain('run in a terminal in <code>/src/shira</code>');
  });
});
