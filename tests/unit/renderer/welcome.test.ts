// The first-run screen's state: when it opens by itself, what it remembers, and the device switch.
import { beforeAll, describe, expect, it } from 'vitest';
import type { AppInfo, NativeReport, WorkerStatus } from '../../../src/shared/api';
import { loadRendererModules } from './svelte-modules';

let m: Awaited<ReturnType<typeof loadRendererModules>>;
beforeAll(async () => {
  m = await loadRendererModules(['src/renderer/src/lib/state/welcome.svelte.ts', 'src/renderer/src/lib/state/toasts.svelte.ts', 'src/shared/errors.ts']);
}, 60_000);

const info = (host: AppInfo['host']): AppInfo => ({
  name: 'Shira Studio',
  version: '0.1.0',
  host,
  dataDir: '/home/a/.config/Shira Studio',
  schemaVersion: 4,
  platform: 'linux-x64',
  limits: { maxInputPixels: 1, maxImportFiles: 1, imageFormats: [] },
});
const healthy: NativeReport = { ok: true, runtime: 'electron', abi: '150', checks: [{ module: 'better-sqlite3', ok: true, required: true }] };
const engineMissingLib: NativeReport = {
  ok: false,
  runtime: 'electron',
  abi: '150',
  checks: [
    { module: 'better-sqlite3', ok: true, required: true },
    {
      module: 'engine',
      ok: false,
      required: false,
      problem: 'missing-library',
      message: 'The native engine (shira-worker) cannot load: the library libtorch_cpu.so is missing.',
      fix: 'npm run setup',
    },
  ],
};

function setup(answer: (input: unknown) => Promise<unknown> = async () => ({})) {
  const store = new Map<string, string>();
  const seen = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
  const calls: { method: string; input: unknown }[] = [];
  const api = {
    call: async (method: string, input: unknown) => {
      calls.push({ method, input });
      return answer(input);
    },
  };
  const engines: WorkerStatus[] = [];
  const toasts = new m.Toasts();
  const welcome = new m.WelcomeState(api, toasts, (s: WorkerStatus) => engines.push(s), seen);
  return { welcome, store, calls, engines, toasts };
}

describe('first-run screen', () => {
  it('opens once in the desktop app, then stays closed once dismissed', () => {
    const a = setup();
    a.welcome.maybeOpen(info('electron'), healthy);
    expect(a.welcome.isOpen).toBe(true);
    a.welcome.close();
    expect(a.store.has(m.WELCOME_SEEN_KEY)).toBe(true);
    a.welcome.maybeOpen(info('electron'), healthy);
    expect(a.welcome.isOpen).toBe(false);
  });

  it('opens again when a native module failed, listing it with its fix', () => {
    const a = setup();
    a.store.set(m.WELCOME_SEEN_KEY, '2026-01-01');
    a.welcome.maybeOpen(info('electron'), engineMissingLib);
    expect(a.welcome.isOpen).toBe(true);
    expect(a.welcome.failed.map((c: { module: string; fix: string }) => [c.module, c.fix])).toEqual([['engine', 'npm run setup']]);
  });

  it('never opens by itself in the studio server (a browser tab), but the badge opens it', () => {
    const a = setup();
    a.welcome.maybeOpen(info('server'), engineMissingLib);
    expect(a.welcome.isOpen).toBe(false);
    expect(a.welcome.failed).toHaveLength(1);
    a.welcome.open();
    expect(a.welcome.isOpen).toBe(true);
  });

  it('switches the device through the core and shows the engine it answers with', async () => {
    const status = { available: true, state: 'ready', binary: '/b/cpu', device: 'cpu', selection: { preference: 'cpu' } };
    const a = setup(async () => status);
    await a.welcome.setDevice('cpu');
    expect(a.calls).toEqual([{ method: 'worker.setDevice', input: { device: 'cpu' } }]);
    expect(a.engines).toEqual([status]);
    expect(a.welcome.switching).toBe(false);

    const b = setup(async () => {
      throw new m.ApiCallError({ type: 'conflict', message: 'A training job is running.' });
    });
    await b.welcome.setDevice('gpu');
    expect(b.engines).toEqual([]);
    expect(b.toasts.items.map((t: { title: string; message: string }) => [t.title, t.message])).toEqual([["Couldn't change the engine device", 'A training job is running.']]);
  });
});
