// The first-run screen of the desktop app (data folder, engine, built-in model, where to start) and
// the engine panel the status bar's engine badge opens: the same dialog. It opens by itself once per
// installation in the desktop app, and whenever a native module failed its self-check there.
import type { AppInfo, DevicePreference, NativeCheck, NativeReport, WorkerStatus } from '../../../../shared/api';
import type { ApiClient } from '../transport';
import type { Toasts } from './toasts.svelte';

/** Bumped if the first-run screen changes enough to be worth showing again. */
export const WELCOME_SEEN_KEY = 'shira.welcome.seen.v1';

/** Where "seen" is remembered (the window's localStorage; a Map in tests). */
export interface SeenStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export class WelcomeState {
  isOpen = $state(false);
  native = $state.raw<NativeReport | null>(null);
  switching = $state(false);
  readonly failed = $derived<NativeCheck[]>(this.native?.checks.filter((c) => !c.ok) ?? []);

  readonly #api: ApiClient;
  readonly #toasts: Toasts;
  readonly #store: SeenStore | null;
  readonly #setEngine: (status: WorkerStatus) => void;

  constructor(api: ApiClient, toasts: Toasts, setEngine: (status: WorkerStatus) => void, store: SeenStore | null = globalThis.localStorage ?? null) {
    this.#api = api;
    this.#toasts = toasts;
    this.#setEngine = setEngine;
    this.#store = store;
  }

  /**
   * Called once app.info and app.health are in. The desktop app opens it on first run and when a native
   * module failed; the studio server (a browser tab, often scripted) only through the badge.
   */
  maybeOpen(info: AppInfo, native: NativeReport | null): void {
    this.native = native;
    if (info.host !== 'electron') return;
    const firstRun = this.#store?.getItem(WELCOME_SEEN_KEY) === null;
    if (firstRun || (native !== null && !native.ok)) this.isOpen = true;
  }

  open(): void {
    this.isOpen = true;
  }

  close(): void {
    this.isOpen = false;
    this.#store?.setItem(WELCOME_SEEN_KEY, new Date().toISOString());
  }

  /** Engine → Device: the core restarts the engine on the new choice and answers with its status. */
  async setDevice(device: DevicePreference): Promise<void> {
    this.switching = true;
    try {
      this.#setEngine(await this.#api.call('worker.setDevice', { device }));
    } catch (error) {
      this.#toasts.error('change the engine device', error);
    } finally {
      this.switching = false;
    }
  }
}
