// Library checks off the event loop. `PRAGMA integrity_check` reads every page (≈0.3 s per GB,
// far more on a slow disk) and `quick_check` and `foreign_key_check` are O(N) too: run on the
// core's connection they would stall every other client for that long. So they run on a second,
// read-only connection in a worker thread; WAL lets it read the last committed state while the
// core keeps writing. The worker is started on first use, takes one check at a time, and is
// unref'd so it never keeps a process alive.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { HealthReport } from '../../../shared/api';
import { schemaVersion, type Db } from './database';

type CheckRows = { integrity: string[]; foreignKeyViolations: number };
type CheckReply = { id: number; integrity: string[]; foreignKeyViolations: number; ms: number } | { id: number; error: string };

// Plain CommonJS evaluated in the worker: no bundler has to know about a second entry point.
// better-sqlite3 is loaded by the absolute path the core itself resolved.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { readonly: true, fileMustExist: true, ...(workerData.nativeBinding ? { nativeBinding: workerData.nativeBinding } : {}) });
db.pragma('busy_timeout = 5000');
parentPort.on('message', ({ id, full }) => {
  const t0 = performance.now();
  try {
    const integrity = db.pragma(full ? 'integrity_check' : 'quick_check').map((row) => String(Object.values(row)[0]));
    const foreignKeyViolations = db.pragma('foreign_key_check').length;
    parentPort.postMessage({ id, integrity, foreignKeyViolations, ms: performance.now() - t0 });
  } catch (error) {
    parentPort.postMessage({ id, error: String((error && error.message) || error) });
  }
});
`;

/** A damaged file can make the check itself throw ("database disk image is malformed"): that is a finding, not a crash. */
const cannotCheck = (message: string): CheckRows => ({ integrity: [`the check could not run: ${message}`], foreignKeyViolations: 0 });

export class LibraryChecker {
  private worker_: Worker | null = null;
  private nextId_ = 1;
  private readonly pending_ = new Map<number, { resolve: (r: CheckReply) => void; reject: (e: Error) => void }>();
  private lastFull_: HealthReport['lastFullCheck'] = null;

  constructor(
    private readonly db_: Db,
    /** The library file; null (an in-memory database) checks on the core's own connection. */
    private readonly file_: string | null,
    private readonly onWarning_: (message: string, error?: unknown) => void,
    /** The better-sqlite3 binary the core itself loaded (Electron's ABI in the desktop app); null = the package's own. */
    private readonly nativeBinding_: string | null = null,
  ) {}

  async check(full: boolean): Promise<HealthReport> {
    const started = performance.now();
    let result: CheckRows;
    try {
      result = await this.inWorker(full);
    } catch (error) {
      // A worker that cannot start (a runtime without worker threads, say) must not cost the
      // user their health check: fall back to the core's connection, and say so in the log.
      this.onWarning_('library check: worker thread unavailable, checking on the main connection', error);
      result = this.onMainConnection(full);
    }
    const ms = Math.round((performance.now() - started) * 10) / 10;
    const journalMode = this.db_.pragma('journal_mode', { simple: true }) as string;
    const ok = result.integrity.length === 1 && result.integrity[0] === 'ok' && result.foreignKeyViolations === 0;
    if (full) this.lastFull_ = { ok, ms, at: new Date().toISOString() };
    return { ok, check: full ? 'full' : 'quick', ...result, journalMode, schemaVersion: schemaVersion(this.db_), checkMs: ms, lastFullCheck: this.lastFull_ };
  }

  async close(): Promise<void> {
    const w = this.worker_;
    this.worker_ = null;
    this.failPending(new Error('the library checker closed'));
    if (w) await w.terminate();
  }

  private onMainConnection(full: boolean): CheckRows {
    try {
      const rows = this.db_.pragma(full ? 'integrity_check' : 'quick_check') as Record<string, unknown>[];
      return { integrity: rows.map((r) => String(Object.values(r)[0])), foreignKeyViolations: (this.db_.pragma('foreign_key_check') as unknown[]).length };
    } catch (error) {
      return cannotCheck(error instanceof Error ? error.message : String(error));
    }
  }

  /** Rejects only when the worker itself is unavailable; a check that fails is a result. */
  private async inWorker(full: boolean): Promise<CheckRows> {
    if (this.file_ === null) return this.onMainConnection(full);
    const worker = this.worker();
    const id = this.nextId_++;
    const reply = await new Promise<CheckReply>((resolve, reject) => {
      this.pending_.set(id, { resolve, reject });
      worker.postMessage({ id, full });
    });
    if ('error' in reply) return cannotCheck(reply.error);
    return { integrity: reply.integrity, foreignKeyViolations: reply.foreignKeyViolations };
  }

  private worker(): Worker {
    if (this.worker_) return this.worker_;
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver, file: this.file_, nativeBinding: this.nativeBinding_ } });
    worker.unref();
    worker.on('message', (reply: CheckReply) => {
      const waiter = this.pending_.get(reply.id);
      this.pending_.delete(reply.id);
      waiter?.resolve(reply);
    });
    const lost = (error: Error) => {
      if (this.worker_ === worker) this.worker_ = null;
      this.failPending(error);
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`the check worker exited (code ${code})`)));
    this.worker_ = worker;
    return worker;
  }

  private failPending(error: Error): void {
    for (const { reject } of this.pending_.values()) reject(error);
    this.pending_.clear();
  }
}
