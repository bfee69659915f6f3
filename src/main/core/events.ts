import type { CoreEvent } from '../../shared/api';

/** The typed one-way stream from the core to every connected client. */
export class EventBus {
  private readonly listeners_ = new Set<(event: CoreEvent) => void>();

  emit(event: CoreEvent): void {
    for (const listener of this.listeners_) {
      try {
        listener(event);
      } catch {
        // A broken client must not stop the others from hearing the event.
      }
    }
  }

  subscribe(listener: (event: CoreEvent) => void): () => void {
    this.listeners_.add(listener);
    return () => this.listeners_.delete(listener);
  }
}
