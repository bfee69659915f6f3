// Supervises the native shira-worker: spawn, wait for its readiness line, route JSON-line replies
// and progress events to requests by id, restart after a crash (with backoff), kill on close, and
// keep its stderr and stray stdout in <data>/logs/worker.log. Tensors never cross here as JSON.
// What may be asked is the op table in protocol.ts: `request` is typed by it end to end.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { ExpectedError, type ApiError } from '../../../shared/errors';
import { wireArgs, type ArgsOf, type EventOf, type OpName, type OpTable, type ReplyOf, type WorkerEvent, type WorkerOps } from './protocol';

export interface WorkerOptions {
  binary: string;
  args?: string[];
  /** Chooses the binary and its arguments anew at each start (CPU or CUDA build: worker/select.ts). */
  launch?: () => Promise<{ binary: string; args: string[] }>;
  logFile?: string | null;
  /** OpenMP threads for libtorch; default: all cores but one, at least 1. */
  threads?: number;
  readyTimeoutMs?: number;
  /** Restarts allowed within `restartWindowMs` before the supervisor gives up. */
  maxRestarts?: number;
  restartWindowMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface ReadyInfo {
  version?: string;
  device?: string;
  [key: string]: unknown;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  onEvent?: (event: WorkerEvent) => void;
}

/** An error the worker replied with, or one about the request (the worker stopped, was cancelled). */
export class WorkerError extends Error {
  constructor(readonly error: ApiError) {
    super(error.message);
    this.name = 'WorkerError';
  }
}

/** The worker process ended (crash, kill, out of memory) while the request was in flight; it is restarted. */
export class WorkerExitError extends WorkerError {
  constructor(readonly why: string) {
    super({ type: 'internal', message: `The native worker stopped (${why}) while working on this request.` });
    this.name = 'WorkerExitError';
  }
}

type State = 'stopped' | 'starting' | 'ready' | 'closed' | 'failed';

/** `P`: the ops this worker serves (the native worker's, or a test fake's). */
export class WorkerSupervisor<P extends OpTable = WorkerOps> {
  private child_: ChildProcessWithoutNullStreams | null = null;
  private state_: State = 'stopped';
  private ready_: Promise<ReadyInfo> | null = null;
  private readyInfo_: ReadyInfo | null = null;
  private nextId_ = 1;
  private readonly pending_ = new Map<number, Pending>();
  private restarts_: number[] = [];
  /** Counts start() calls, so a launch chosen for an older one is dropped. */
  private attempts_ = 0;
  private readonly listeners_ = new Set<(event: WorkerEvent) => void>();
  private readonly opts_: Required<Omit<WorkerOptions, 'env' | 'logFile' | 'launch'>> & Pick<WorkerOptions, 'env' | 'logFile' | 'launch'>;

  constructor(options: WorkerOptions) {
    this.opts_ = {
      args: [],
      threads: 1,
      readyTimeoutMs: 30_000,
      maxRestarts: 3,
      restartWindowMs: 60_000,
      ...options,
    };
    if (options.logFile) mkdirSync(dirname(options.logFile), { recursive: true });
  }

  get state(): State {
    return this.state_;
  }
  get info(): ReadyInfo | null {
    return this.readyInfo_;
  }
  get pid(): number | undefined {
    return this.child_?.pid;
  }

  /** Events not tied to a request (and a copy of those that are). */
  onEvent(listener: (event: WorkerEvent) => void): () => void {
    this.listeners_.add(listener);
    return () => this.listeners_.delete(listener);
  }

  start(): Promise<ReadyInfo> {
    if (this.state_ === 'closed') return Promise.reject(new ExpectedError('unsupported', 'The worker has been shut down.'));
    if (this.ready_ && (this.state_ === 'starting' || this.state_ === 'ready')) return this.ready_;
    this.state_ = 'starting';
    const attempt = ++this.attempts_;
    const launch = this.opts_.launch ? this.opts_.launch() : Promise.resolve({ binary: this.opts_.binary, args: this.opts_.args });
    this.ready_ = launch.then(
      (chosen) => {
        // stop() or close() (and perhaps a newer start) while the launch was being chosen.
        if (attempt !== this.attempts_ || this.state_ !== 'starting') throw new ExpectedError('cancelled', 'The worker was stopped while starting.');
        return this.spawnChild(chosen.binary, chosen.args);
      },
      (error: unknown) => {
        if (attempt === this.attempts_ && this.state_ === 'starting') this.state_ = 'failed';
        throw error;
      },
    );
    // A rejected start must not become an unhandled rejection when nobody awaits it.
    this.ready_.catch(() => {});
    return this.ready_;
  }

  private spawnChild(binary: string, args: string[]): Promise<ReadyInfo> {
    return new Promise<ReadyInfo>((resolve, reject) => {
      let child: ChildProcessWithoutNullStreams;
      try {
        child = spawn(binary, args, {
          stdio: 'pipe',
          env: { ...process.env, ...this.opts_.env, OMP_NUM_THREADS: String(this.opts_.threads), MKL_NUM_THREADS: String(this.opts_.threads) },
        });
      } catch (error) {
        this.state_ = 'failed';
        reject(error as Error);
        return;
      }
      this.child_ = child;
      const timer = setTimeout(() => {
        this.log(`worker did not become ready within ${this.opts_.readyTimeoutMs} ms; killing it`);
        child.kill('SIGKILL');
        reject(new ExpectedError('unsupported', 'The native worker did not start in time; see logs/worker.log.'));
      }, this.opts_.readyTimeoutMs);
      child.on('error', (error) => {
        clearTimeout(timer);
        if (this.child_ === child) this.child_ = null;
        this.state_ = 'failed';
        this.log(`worker could not be started: ${error.message}`);
        reject(new ExpectedError('unsupported', `The native worker could not be started (${error.message}). Run the setup again (npm start) to build it.`));
      });
      createInterface({ input: child.stderr }).on('line', (line) => this.log(`stderr: ${line}`));
      createInterface({ input: child.stdout }).on('line', (line) => {
        let message: Record<string, unknown>;
        try {
          message = JSON.parse(line) as Record<string, unknown>;
        } catch {
          this.log(`stdout: ${line}`);
          return;
        }
        if (message.event === 'ready' && this.child_ === child && this.state_ === 'starting') {
          clearTimeout(timer);
          this.state_ = 'ready';
          this.readyInfo_ = message as ReadyInfo;
          resolve(this.readyInfo_);
          return;
        }
        this.route(message);
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (this.child_ !== child) return;
        this.child_ = null;
        const why = signal ? `signal ${signal}` : `code ${code}`;
        this.log(`worker exited (${why})`);
        const wasStarting = this.state_ === 'starting';
        for (const p of this.pending_.values()) p.reject(new WorkerExitError(why));
        this.pending_.clear();
        if (this.state_ === 'closed') return;
        if (wasStarting) {
          this.state_ = 'failed';
          reject(new ExpectedError('unsupported', `The native worker exited at start (${why}); see logs/worker.log.`));
          return;
        }
        this.state_ = 'stopped';
        this.maybeRestart();
      });
    });
  }

  private maybeRestart(): void {
    const now = Date.now();
    this.restarts_ = this.restarts_.filter((t) => now - t < this.opts_.restartWindowMs);
    if (this.restarts_.length >= this.opts_.maxRestarts) {
      this.state_ = 'failed';
      this.log(`worker crashed ${this.restarts_.length + 1} times within ${this.opts_.restartWindowMs} ms; not restarting`);
      return;
    }
    this.restarts_.push(now);
    const delay = 200 * 2 ** (this.restarts_.length - 1);
    this.log(`restarting worker in ${delay} ms`);
    setTimeout(() => {
      if (this.state_ === 'stopped') void this.start().catch(() => {});
    }, delay).unref();
  }

  private route(message: Record<string, unknown>): void {
    const id = typeof message.id === 'number' ? message.id : null;
    if (typeof message.event === 'string') {
      const event = message as WorkerEvent;
      if (id !== null) this.pending_.get(id)?.onEvent?.(event);
      for (const l of this.listeners_) l(event);
      return;
    }
    if (id === null) {
      this.log(`unroutable message: ${JSON.stringify(message).slice(0, 500)}`);
      return;
    }
    const pending = this.pending_.get(id);
    if (!pending) return;
    this.pending_.delete(id);
    if (message.ok === true) pending.resolve(message.result ?? message.value ?? null);
    else {
      const error = (message.error ?? {}) as Partial<ApiError>;
      pending.reject(new WorkerError({ type: error.type ?? 'internal', message: error.message ?? 'The worker reported an error without a message.', details: error.details }));
    }
  }

  /**
   * Sends one request; resolves with its result, rejects with WorkerError (WorkerExitError when the process died
   * meanwhile). Starts the worker if needed. `onEvent` receives the op's progress events.
   */
  async request<Op extends OpName<P>>(op: Op, args: ArgsOf<P, Op>, onEvent?: (event: EventOf<P, Op>) => void): Promise<ReplyOf<P, Op>> {
    if (this.state_ !== 'ready') await this.start();
    const child = this.child_;
    if (!child) throw new WorkerError({ type: 'internal', message: 'The native worker is not running.' });
    const id = this.nextId_++;
    return new Promise<ReplyOf<P, Op>>((resolve, reject) => {
      this.pending_.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent: onEvent as ((event: WorkerEvent) => void) | undefined });
      child.stdin.write(`${JSON.stringify({ id, op, args: wireArgs(args) })}\n`);
    });
  }

  /** Raw line, for protocol tests. */
  sendRaw(line: string): void {
    this.child_?.stdin.write(line.endsWith('\n') ? line : `${line}\n`);
  }

  async close(): Promise<void> {
    this.state_ = 'closed';
    await this.terminate('The app is closing.');
  }

  /** Ends the process, if any, so that the next request starts afresh (and `launch` chooses again). */
  async stop(): Promise<void> {
    if (this.state_ === 'closed') return;
    this.state_ = 'stopped';
    this.ready_ = null;
    this.readyInfo_ = null;
    this.restarts_ = [];
    await this.terminate('The engine was restarted (its device changed).');
  }

  private async terminate(why: string): Promise<void> {
    const child = this.child_;
    this.child_ = null;
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    for (const p of this.pending_.values()) p.reject(new WorkerError({ type: 'cancelled', message: why }));
    this.pending_.clear();
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      // Closing stdin is the polite shutdown; the worker exits at EOF.
      child.stdin.end();
      child.kill('SIGTERM');
    });
  }

  private log(line: string): void {
    if (!this.opts_.logFile) return;
    try {
      appendFileSync(this.opts_.logFile, `${new Date().toISOString()} ${line}\n`);
    } catch {
      // never let logging take the supervisor down
    }
  }
}
