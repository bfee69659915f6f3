// Durable training queue. A job is a training_runs row; the queue survives app restarts and worker
// crashes because everything a job needs to continue is on disk:
//   <data>/jobs/<id>/data.safetensors        the packed dataset (rebuilt from the library if missing)
//   <data>/jobs/<id>/checkpoint.safetensors  trainable tensors + optimiser + RNG every N steps (worker, atomic)
//   <data>/jobs/<id>/adapter.safetensors     written by the worker only at the very end (atomic)
// The adapter enters the library in the same transaction that marks the run completed, so a crash at
// any point leaves either no adapter row or a completed run — never half of one.
// One training job runs at a time, on its own worker process, so generation stays possible meanwhile.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { CoreEvent, JobStatus, TrainingJob, TrainingRequest } from '../../../shared/api';
import { badInput, conflict, notFound, unsupported } from '../../../shared/errors';
import { TRAINING } from '../../../shared/ranges';
import type { Db } from '../db/database';
import type { EventBus } from '../events';
import type { Logger } from '../logger';
import { readAdapterFile } from '../adapters/format';
import { lossCurve, type AdapterLibrary } from '../adapters/library';
import { imagesToGridPng } from '../generate/grid';
import { packDataset } from '../worker/pack';
import type { ArgsOf, WorkerOps } from '../worker/protocol';
import { WorkerError, WorkerExitError, type WorkerSupervisor } from '../worker/supervisor';
import { notRunnable } from '../models/checkpoints';

/** Worker deaths tolerated per job before it is marked failed (each one resumes from the checkpoint). */
export const MAX_ATTEMPTS = 3;

interface RunRow {
  id: number;
  kind: 'shira' | 'lora';
  name: string | null;
  status: JobStatus;
  dataset_id: number | null;
  base_model_id: number | null;
  adapter_id: number | null;
  config_json: string;
  step: number;
  steps: number;
  attempts: number;
  error: string | null;
  result_json: string | null;
  device: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export class TrainingQueue {
  private running_: { id: number; cancel: boolean; done: Promise<void> } | null = null;
  private pump_: Promise<void> | null = null;
  private closed_ = false;

  constructor(
    private readonly db: Db,
    private readonly library: AdapterLibrary,
    private readonly events: EventBus,
    private readonly log: Logger,
    private readonly jobsDir: string,
    private readonly worker: WorkerSupervisor | null,
  ) {
    // Anything 'running' now was interrupted by a quit or a crash: it resumes from its checkpoint.
    const n = db.prepare(`UPDATE training_runs SET status = 'queued' WHERE status = 'running' AND kind IN ('shira', 'lora')`).run().changes;
    if (n) log.info(`${n} interrupted training job(s) will resume from their checkpoints`);
  }

  /** Starts working through the queue (hosts call this once the core is up). */
  start(): void {
    this.kick();
  }

  enqueue(req: TrainingRequest): TrainingJob {
    const dataset = this.db.prepare('SELECT name, (SELECT count(*) FROM dataset_images WHERE dataset_id = datasets.id) AS n FROM datasets WHERE id = ?').get(req.datasetId) as
      { name: string; n: number } | undefined;
    if (!dataset) throw notFound(`Dataset ${req.datasetId} does not exist.`);
    if (dataset.n === 0) throw badInput(`Dataset "${dataset.name}" has no images to train on.`);
    const base = (
      req.baseModelId !== undefined
        ? this.db.prepare('SELECT id, name, weights_path FROM base_models WHERE id = ?').get(req.baseModelId)
        : this.db.prepare('SELECT id, name, weights_path FROM base_models WHERE is_default = 1').get()
    ) as { id: number; name: string; weights_path: string | null } | undefined;
    if (!base) throw notFound(req.baseModelId !== undefined ? `Base model ${req.baseModelId} does not exist.` : 'There is no default base model to train on.');
    if (!base.weights_path) throw unsupported(notRunnable(base.name));
    if (req.method === 'lora' && req.mask !== undefined) throw badInput('mask applies to SHiRA; a LoRA takes rank or matchDensity.');
    if (req.method === 'shira' && (req.rank !== undefined || req.matchDensity !== undefined)) throw badInput('rank and matchDensity apply to LoRA; SHiRA takes mask and density.');
    if (req.method === 'lora' && req.rank !== undefined && req.matchDensity !== undefined) throw badInput('Give a LoRA either rank or matchDensity, not both.');
    if ((req.sampleEvery === undefined) !== (req.samplePrompts === undefined || req.samplePrompts.length === 0)) {
      throw badInput('sampleEvery and samplePrompts go together.');
    }
    const config: TrainingRequest = {
      ...req,
      baseModelId: base.id,
      steps: req.steps ?? TRAINING.steps.default,
      batch: req.batch ?? TRAINING.batch.default,
      seed: req.seed ?? TRAINING.seed.default,
      lr: req.lr ?? TRAINING.lr.default,
      checkpointEvery: req.checkpointEvery ?? TRAINING.checkpointEvery.default,
      valuesDtype: req.valuesDtype ?? 'f16',
      ...(req.method === 'shira' ? { mask: req.mask ?? 'struct', density: req.density ?? TRAINING.density.default } : {}),
      ...(req.method === 'lora' && req.rank === undefined ? { matchDensity: req.matchDensity ?? TRAINING.density.default } : {}),
    };
    const name = req.name ?? `${dataset.name} · ${req.method === 'shira' ? `SHiRA ${config.mask}` : `LoRA ${config.rank ? `r${config.rank}` : 'matched'}`}`;
    const id = Number(
      this.db
        .prepare('INSERT INTO training_runs (kind, name, dataset_id, base_model_id, config_json, status, steps) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(req.method, name, req.datasetId, base.id, JSON.stringify(config), 'queued', config.steps).lastInsertRowid,
    );
    this.changed(id);
    this.kick();
    return this.get(id);
  }

  list(status?: JobStatus): TrainingJob[] {
    const rows = this.db.prepare(`SELECT * FROM training_runs WHERE kind IN ('shira', 'lora') AND (@status IS NULL OR status = @status) ORDER BY id DESC`).all({ status: status ?? null }) as RunRow[];
    return rows.map(toJob);
  }

  /** Preview grids of a job so far: ids for `/media/training-sample/<id>`. */
  samples(id: number): { id: number; step: number }[] {
    this.get(id);
    return this.db.prepare('SELECT id, step FROM training_samples WHERE run_id = ? ORDER BY step').all(id) as { id: number; step: number }[];
  }

  /** The curve so far, for a chart opened mid-run (live points then continue it). */
  loss(id: number): { step: number; loss: number }[] {
    this.get(id);
    return lossCurve(this.db, id, 2000);
  }

  sampleMedia(sampleId: number): Buffer | null {
    return (this.db.prepare('SELECT image_png FROM training_samples WHERE id = ?').get(sampleId) as { image_png: Buffer } | undefined)?.image_png ?? null;
  }

  get(id: number): TrainingJob {
    const row = this.db.prepare(`SELECT * FROM training_runs WHERE id = ? AND kind IN ('shira', 'lora')`).get(id) as RunRow | undefined;
    if (!row) throw notFound(`Training job ${id} does not exist.`);
    return toJob(row);
  }

  async cancel(id: number): Promise<TrainingJob> {
    const job = this.get(id);
    if (job.status === 'queued') {
      this.finish(id, 'cancelled', null);
    } else if (job.status === 'running' && this.running_?.id === id) {
      const running = this.running_;
      running.cancel = true;
      await this.worker?.request('cancel', {}).catch(() => {});
      await running.done;
    } else if (job.status !== 'running') {
      throw conflict(`Training job ${id} has already ${job.status === 'completed' ? 'completed' : job.status}.`);
    }
    return this.get(id);
  }

  /** Resolves when the queue is idle (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.pump_) await this.pump_;
  }

  /** Stops taking jobs; a running one stays 'running' in the library and resumes at the next start. */
  async close(): Promise<void> {
    this.closed_ = true;
  }

  private kick(): void {
    if (this.pump_ || this.closed_ || !this.worker) return;
    const pump = (async () => {
      // Yield first: an empty queue must not finish (and clear pump_) before pump_ is even assigned.
      await null;
      for (;;) {
        if (this.closed_) return;
        const next = this.db.prepare(`SELECT id FROM training_runs WHERE status = 'queued' AND kind IN ('shira', 'lora') ORDER BY id LIMIT 1`).get() as { id: number } | undefined;
        if (!next) return;
        const run = { id: next.id, cancel: false, done: Promise.resolve() };
        run.done = this.run(run);
        this.running_ = run;
        await run.done;
      }
    })();
    this.pump_ = pump;
    pump
      .catch((error) => this.log.error('training queue stopped', error))
      .finally(() => {
        if (this.pump_ === pump) this.pump_ = null;
      });
  }

  private async run(job: { id: number; cancel: boolean }): Promise<void> {
    const id = job.id;
    const row = this.db.prepare('SELECT * FROM training_runs WHERE id = ?').get(id) as RunRow;
    const config = JSON.parse(row.config_json) as TrainingRequest;
    const dir = join(this.jobsDir, String(id));
    const data = join(dir, 'data.safetensors');
    const checkpoint = join(dir, 'checkpoint.safetensors');
    const out = join(dir, 'adapter.safetensors');
    this.db.prepare(`UPDATE training_runs SET status = 'running', started_at = coalesce(started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) WHERE id = ?`).run(id);
    this.changed(id);
    const w = this.worker!;
    try {
      const base = this.db.prepare('SELECT name, weights_path, weights_hash, resolution FROM base_models WHERE id = ?').get(row.base_model_id) as
        { name: string; weights_path: string | null; weights_hash: string | null; resolution: number } | undefined;
      if (!base?.weights_path || !existsSync(base.weights_path)) throw badInput('The base model of this job is gone or has no weights file.');
      if (row.dataset_id === null) throw badInput('The dataset of this job was deleted.');
      mkdirSync(dir, { recursive: true });
      if (!existsSync(data)) await packDataset(this.db, row.dataset_id, data, { resolution: base.resolution, fit: 'cover' });
      const info = await w.start();
      this.db.prepare('UPDATE training_runs SET device = ? WHERE id = ?').run(typeof info.device === 'string' ? info.device : null, id);
      await w.request('load_model', { path: base.weights_path, identity: base.weights_hash ?? '' });
      const resume = existsSync(checkpoint);
      const trigger = (this.db.prepare('SELECT trigger_word FROM datasets WHERE id = ?').get(row.dataset_id) as { trigger_word: string | null } | undefined)?.trigger_word;
      const args: ArgsOf<WorkerOps, 'train'> = {
        method: config.method,
        data,
        out,
        steps: config.steps,
        batch: config.batch,
        lr: config.lr,
        seed: config.seed,
        valuesDtype: config.valuesDtype,
        checkpoint,
        checkpointEvery: config.checkpointEvery,
        progressEvery: Math.max(1, Math.min(25, Math.floor((config.steps ?? 1) / 50) || 1)),
        ...(config.method === 'shira' ? { mask: config.mask, density: config.density } : {}),
        ...(config.method === 'lora' ? (config.rank ? { rank: config.rank, alpha: config.rank } : { matchDensity: config.matchDensity }) : {}),
        ...(config.samplePrompts?.length ? { samplePrompts: config.samplePrompts, sampleEvery: config.sampleEvery, sampleDir: join(dir, 'samples') } : {}),
        // The packed captions hold the trigger (withTrigger prepends it where missing); the tag holding it never drops.
        ...(config.tagDropout ? { captionTagDropout: config.tagDropout, ...(trigger ? { captionKeepWords: [trigger] } : {}) } : {}),
        ...(config.flip ? { flip: true } : {}),
        ...(resume ? { resume: checkpoint } : {}),
      };
      if (resume) this.log.info(`training job ${id} resumes from ${checkpoint}`);
      const putLoss = this.db.prepare('INSERT OR REPLACE INTO training_loss (run_id, step, loss, elapsed_ms) VALUES (?, ?, ?, ?)');
      const t0 = Date.now();
      // Sample grids are converted while training goes on; the job folder is removed only after.
      const pendingSamples: Promise<void>[] = [];
      // Events are checked, not trusted: a malformed line must not throw inside the supervisor's reader.
      const result = await w.request('train', args, (e) => {
        if (e.event === 'progress' && typeof e.step === 'number' && typeof e.loss === 'number') {
          putLoss.run(id, e.step, e.loss, Date.now() - t0);
          this.db.prepare('UPDATE training_runs SET step = ? WHERE id = ?').run(e.step, id);
          this.events.emit({ type: 'training.progress', jobId: id, step: e.step, steps: Number(e.steps), loss: e.loss, itS: Number(e.it_s ?? 0), etaS: Number(e.eta_s ?? 0) });
        } else if (e.event === 'sample' && typeof e.path === 'string') {
          const path = e.path;
          const step = Number(e.step);
          pendingSamples.push(
            imagesToGridPng(path, 4)
              .then((png) => {
                const { id: sampleId } = this.db
                  .prepare('INSERT INTO training_samples (run_id, step, image_png) VALUES (?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE SET image_png = excluded.image_png RETURNING id')
                  .get(id, step, png) as { id: number };
                this.events.emit({ type: 'training.sample', jobId: id, step, sampleId });
              })
              .catch((error) => this.log.warn(`training job ${id}: could not read samples at step ${step}`, error)),
          );
        }
      });
      await Promise.all(pendingSamples);
      // Stored in one transaction with the run's completion (see the header comment).
      const content = readAdapterFile(out, `the adapter of job ${id}`);
      this.library.insert(content, { name: row.name ?? `job ${id}`, baseModelId: row.base_model_id!, datasetId: row.dataset_id, triggerWords: trigger ? [trigger] : [] }, (adapterId) => {
        this.db
          .prepare(`UPDATE training_runs SET status = 'completed', adapter_id = ?, step = steps, result_json = ?, error = NULL, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`)
          .run(adapterId, JSON.stringify(result ?? {}), id);
      });
      rmSync(dir, { recursive: true, force: true });
      this.events.emit({ type: 'library.changed', what: 'adapters' });
      this.changed(id);
    } catch (error) {
      this.fail(job, error);
    } finally {
      if (this.running_?.id === id) this.running_ = null;
    }
  }

  private fail(job: { id: number; cancel: boolean }, error: unknown): void {
    const id = job.id;
    const we = error instanceof WorkerError ? error.error : null;
    const message = error instanceof Error ? error.message : String(error);
    // The app is quitting (the engine is being stopped under the job): it stays 'running' on disk
    // and resumes at the next start.
    if (this.closed_) return;
    if (job.cancel || we?.type === 'cancelled') {
      this.finish(id, 'cancelled', null);
      rmSync(join(this.jobsDir, String(id)), { recursive: true, force: true });
      return;
    }
    // A worker that died mid-job (crash, kill, out of memory) is restarted by the supervisor; the job
    // goes back to the queue and resumes from its checkpoint, up to MAX_ATTEMPTS times.
    const crashed = error instanceof WorkerExitError;
    const attempts = (this.db.prepare('SELECT attempts FROM training_runs WHERE id = ?').get(id) as { attempts: number }).attempts + 1;
    if (crashed && attempts < MAX_ATTEMPTS) {
      this.db.prepare(`UPDATE training_runs SET status = 'queued', attempts = ?, error = ? WHERE id = ?`).run(attempts, message, id);
      this.log.warn(`training job ${id}: ${message}; resuming (attempt ${attempts + 1} of ${MAX_ATTEMPTS})`);
      this.changed(id);
      return;
    }
    this.log.error(`training job ${id} failed`, error);
    this.db.prepare('UPDATE training_runs SET attempts = ? WHERE id = ?').run(attempts, id);
    this.finish(id, 'failed', crashed ? `The engine stopped ${attempts} times during this job (last: ${message}).` : message);
  }

  private finish(id: number, status: 'failed' | 'cancelled', error: string | null): void {
    this.db.prepare(`UPDATE training_runs SET status = ?, error = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`).run(status, error, id);
    this.changed(id);
  }

  private changed(id: number): void {
    const r = this.db.prepare('SELECT status, adapter_id, error FROM training_runs WHERE id = ?').get(id) as { status: JobStatus; adapter_id: number | null; error: string | null };
    const event: CoreEvent = { type: 'training.changed', jobId: id, status: r.status, adapterId: r.adapter_id, error: r.error };
    this.events.emit(event);
  }
}

function toJob(r: RunRow): TrainingJob {
  return {
    id: r.id,
    name: r.name ?? `job ${r.id}`,
    kind: r.kind,
    status: r.status,
    datasetId: r.dataset_id,
    baseModelId: r.base_model_id,
    adapterId: r.adapter_id,
    step: r.step,
    steps: r.steps,
    attempts: r.attempts,
    config: JSON.parse(r.config_json) as TrainingRequest,
    error: r.error,
    result: r.result_json ? (JSON.parse(r.result_json) as Record<string, unknown>) : null,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}
