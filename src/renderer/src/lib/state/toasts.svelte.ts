import { errorMessage } from '../errors';

export type ToastTone = 'error' | 'info' | 'success';

export interface Toast {
  id: number;
  tone: ToastTone;
  title: string;
  message?: string;
}

const LIFETIME_MS: Record<ToastTone, number> = { info: 4_000, success: 4_000, error: 12_000 };

export class Toasts {
  items = $state<Toast[]>([]);
  #nextId = 1;

  show(tone: ToastTone, title: string, message?: string): void {
    const id = this.#nextId++;
    this.items.push({ id, tone, title, message });
    setTimeout(() => this.dismiss(id), LIFETIME_MS[tone]);
  }

  /** `doing` completes "Couldn't …", e.g. "save the caption". */
  error(doing: string, error: unknown): void {
    this.show('error', `Couldn't ${doing}`, errorMessage(error));
  }

  dismiss(id: number): void {
    this.items = this.items.filter((t) => t.id !== id);
  }
}
