import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EventBus } from './events';

export type LogLevel = 'info' | 'warn' | 'error';

export class Logger {
  constructor(
    private readonly file_: string | null,
    private readonly bus_: EventBus,
  ) {
    if (file_) mkdirSync(dirname(file_), { recursive: true });
  }

  log(level: LogLevel, message: string, error?: unknown): void {
    const time = new Date().toISOString();
    const detail = error instanceof Error ? `\n${error.stack ?? error.message}` : error === undefined ? '' : `\n${String(error)}`;
    if (this.file_) {
      try {
        appendFileSync(this.file_, `${time} ${level.toUpperCase()} ${message}${detail}\n`);
      } catch {
        // Logging must never take the core down (disk full, folder removed).
      }
    }
    this.bus_.emit({ type: 'log', level, message, time });
  }

  info(message: string): void {
    this.log('info', message);
  }
  warn(message: string, error?: unknown): void {
    this.log('warn', message, error);
  }
  error(message: string, error?: unknown): void {
    this.log('error', message, error);
  }
}
