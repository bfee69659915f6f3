// The artist's own Stable Diffusion checkpoints in the library, registered by reference: a `base_models` row with
// source 'user' that records the path, every file's size and mtime, what the headers said (probe.ts) and, once the
// background hash is done, the SHA-256 that adapters are bound to. Nothing is copied; weights_path stays NULL, so
// no code made for the built-in format opens these files (generation and training arrive with the SD loader).
// Each registration, re-hash and removal is one statement: a refused file leaves the library as it was.
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { basename, extname, relative, resolve } from 'node:path';
import type { BaseModel, CheckpointFile, CoreEvent, HashProgress, ModelFileStatus, Prediction } from '../../../shared/api';
import { badInput, conflict, notFound } from '../../../shared/errors';
import type { Db } from '../db/database';
import type { Logger } from '../logger';
import { checkpointPath, familyLabel, probeCheckpoint, probeVae, resolutionOf, type Probe, type ProbedFile } from './probe';

/** What checkpoint_json holds: the probe (less the VAE shapes, re-read when needed) and the separate VAE file. */
type Stored = Omit<Probe, 'vaeShapes'> & { vae: ProbedFile | null };

interface Row {
  id: number;
  name: string;
  family: string;
  resolution: number;
  weights_hash: string | null;
  is_default: number;
  created_at: string;
  source: 'builtin' | 'user';
  source_path: string | null;
  checkpoint_json: string | null;
  prediction: Prediction | null;
}

/** Progress events at most this often while hashing (a 2 GB file hashes in seconds to a minute). */
const PROGRESS_EVERY_MS = 200;

/** Why a model cannot run here: said by generation, mixing and training when asked to use a user checkpoint. */
export function notRunnable(name: string): string {
  return `"${name}" is a registered Stable Diffusion checkpoint: generating from it and training on it arrive with the Stable Diffusion loader.`;
}

function fileStatus(f: ProbedFile): { status: ModelFileStatus; message: string | null } {
  let st;
  try {
    st = statSync(f.path);
  } catch {
    return { status: 'moved', message: `${f.path} is not there any more (moved, renamed or deleted). Remove the model and add it again from where it is now.` };
  }
  if (st.size !== f.size || st.mtimeMs !== f.mtimeMs) {
    const what = st.size !== f.size ? `its size went from ${f.size} to ${st.size} bytes` : `it was modified at ${new Date(st.mtimeMs).toISOString()}`;
    return { status: 'changed', message: `${f.path} changed since it was registered (${what}). Re-hash to register what it holds now; adapters trained on the old weights will no longer apply.` };
  }
  return { status: 'ok', message: null };
}

function publicFile(f: ProbedFile): CheckpointFile {
  return { role: f.role, path: f.path, sizeBytes: f.size, modifiedAt: new Date(f.mtimeMs).toISOString(), dtype: f.dtype, sha256: f.sha256, status: fileStatus(f).status };
}

/** SHA-256 of one file, streamed; `onBytes` after each chunk; aborting `signal` rejects with an AbortError. */
export async function sha256File(path: string, signal: AbortSignal, onBytes: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) {
    hash.update(chunk as Buffer);
    onBytes((chunk as Buffer).length);
  }
  return hash.digest('hex');
}

export class Checkpoints {
  /** Hash state of user models without a stored hash (absent = pending: queued or waiting for a restart). */
  private readonly hashes_ = new Map<number, HashProgress>();
  private queue_: number[] = [];
  private running_: { id: number; abort: AbortController; done: Promise<void> } | null = null;
  private closed_ = false;

  constructor(
    private readonly db: Db,
    private readonly emit: (event: CoreEvent) => void,
    private readonly log: Logger,
    private readonly progressEveryMs = PROGRESS_EVERY_MS,
  ) {}

  /** Queues the hash of every user checkpoint that has none yet (an earlier run was closed or cancelled mid-way). */
  start(): void {
    const rows = this.db.prepare(`SELECT * FROM base_models WHERE source = 'user' AND weights_hash IS NULL ORDER BY id`).all() as Row[];
    for (const row of rows) if (this.status(row).status === 'ok') this.enqueue(row.id);
  }

  list(): BaseModel[] {
    const rows = this.db.prepare(`SELECT * FROM base_models ORDER BY is_default DESC, source = 'user', name`).all() as Row[];
    return rows.map((r) => this.toModel(r));
  }

  get(id: number): BaseModel {
    return this.toModel(this.row(id));
  }

  add(input: { path: string; vaePath?: string; name?: string }): BaseModel {
    const path = checkpointPath(input.path);
    const taken = this.db.prepare('SELECT name FROM base_models WHERE source_path = ?').get(path) as { name: string } | undefined;
    if (taken) throw conflict(`${path} is already in the library as "${taken.name}".`);
    const probe = probeCheckpoint(path);
    const vae = input.vaePath !== undefined ? probeVae(resolve(input.vaePath), probe.vaeShapes) : null;
    const name = input.name ?? this.freeName(basename(path, probe.layout === 'ldm' ? extname(path) : ''));
    if (input.name !== undefined && this.db.prepare('SELECT 1 FROM base_models WHERE name = ?').get(name)) throw conflict(`A base model named "${name}" already exists; choose another name.`);
    const id = Number(
      this.db
        .prepare(`INSERT INTO base_models (name, family, resolution, source, source_path, checkpoint_json) VALUES (?, ?, ?, 'user', ?, ?)`)
        .run(name, probe.family, resolutionOf(probe, probe.prediction), path, JSON.stringify(stored(probe, vae))).lastInsertRowid,
    );
    this.log.info(`registered checkpoint "${name}" (${probe.family}, ${probe.layout}) from ${path}`);
    this.emit({ type: 'library.changed', what: 'models', id });
    this.enqueue(id);
    return this.get(id);
  }

  async remove(id: number): Promise<{ removed: boolean }> {
    const row = this.userRow(id, 'removed');
    const adapters = (this.db.prepare('SELECT count(*) AS n FROM adapters WHERE base_model_id = ?').get(id) as { n: number }).n;
    if (adapters > 0) throw conflict(`${adapters} adapter${adapters === 1 ? ' was' : 's were'} trained on "${row.name}"; delete ${adapters === 1 ? 'it' : 'them'} before removing the model.`);
    await this.stopHash(id);
    this.db.prepare('DELETE FROM base_models WHERE id = ?').run(id);
    this.hashes_.delete(id);
    this.emit({ type: 'library.changed', what: 'models', id });
    return { removed: true };
  }

  setPrediction(id: number, prediction: Prediction | null): BaseModel {
    const row = this.userRow(id, 'given another prediction type');
    const probe = JSON.parse(row.checkpoint_json!) as Stored;
    this.db.prepare('UPDATE base_models SET prediction = ?, resolution = ? WHERE id = ?').run(prediction, resolutionOf(probe, prediction ?? probe.prediction), id);
    this.emit({ type: 'library.changed', what: 'models', id });
    return this.get(id);
  }

  /** Reads the headers again (refusing a file that is no longer a usable checkpoint, leaving the row as it was), then hashes anew. */
  async rehash(id: number): Promise<BaseModel> {
    const row = this.userRow(id, 're-hashed');
    const old = JSON.parse(row.checkpoint_json!) as Stored;
    const probe = probeCheckpoint(row.source_path!);
    const vae = old.vae ? probeVae(old.vae.path, probe.vaeShapes) : null;
    await this.stopHash(id);
    this.db
      .prepare('UPDATE base_models SET family = ?, resolution = ?, checkpoint_json = ?, weights_hash = NULL WHERE id = ?')
      .run(probe.family, resolutionOf(probe, row.prediction ?? probe.prediction), JSON.stringify(stored(probe, vae)), id);
    this.hashes_.delete(id);
    this.emit({ type: 'library.changed', what: 'models', id });
    this.enqueue(id);
    return this.get(id);
  }

  async cancelHash(id: number): Promise<BaseModel> {
    this.userRow(id, 'hashed');
    await this.stopHash(id);
    return this.get(id);
  }

  async close(): Promise<void> {
    this.closed_ = true;
    this.queue_ = [];
    const running = this.running_;
    running?.abort.abort();
    await running?.done;
  }

  private row(id: number): Row {
    const row = this.db.prepare('SELECT * FROM base_models WHERE id = ?').get(id) as Row | undefined;
    if (!row) throw notFound(`Base model ${id} does not exist.`);
    return row;
  }

  private userRow(id: number, verb: string): Row {
    const row = this.row(id);
    if (row.source !== 'user') throw badInput(`"${row.name}" is built in and cannot be ${verb}.`);
    return row;
  }

  private freeName(wanted: string): string {
    const base = wanted.trim().slice(0, 190) || 'checkpoint';
    for (let n = 1; ; n++) {
      const name = n === 1 ? base : `${base} (${n})`;
      if (!this.db.prepare('SELECT 1 FROM base_models WHERE name = ?').get(name)) return name;
    }
  }

  private status(row: Row): { status: ModelFileStatus; message: string | null } {
    const probe = JSON.parse(row.checkpoint_json!) as Stored;
    const states = [...probe.files, ...(probe.vae ? [probe.vae] : [])].map(fileStatus);
    return states.find((s) => s.status === 'moved') ?? states.find((s) => s.status === 'changed') ?? { status: 'ok', message: null };
  }

  private toModel(r: Row): BaseModel {
    const base = { id: r.id, name: r.name, family: r.family, resolution: r.resolution, weightsHash: r.weights_hash, isDefault: r.is_default === 1, createdAt: r.created_at };
    if (r.source !== 'user') return { ...base, source: 'builtin', familyLabel: 'Built-in pixel-space model', runnable: true, checkpoint: null };
    const probe = JSON.parse(r.checkpoint_json!) as Stored;
    const prediction = r.prediction ?? probe.prediction;
    const sizeBytes = probe.files.reduce((a, f) => a + f.size, 0);
    const total = sizeBytes + (probe.vae?.size ?? 0);
    const hash: HashProgress = r.weights_hash ? { state: 'done', done: total, total, error: null } : (this.hashes_.get(r.id) ?? { state: 'pending', done: 0, total, error: null });
    const { status, message } = this.status(r);
    return {
      ...base,
      source: 'user',
      familyLabel: familyLabel(r.family, r.resolution, prediction),
      runnable: false,
      checkpoint: {
        path: r.source_path!,
        layout: probe.layout,
        prediction,
        detectedPrediction: probe.prediction,
        predictionSource: r.prediction ? 'user' : probe.predictionSource,
        predictionNote: r.prediction ? `set by you (${probe.prediction ? `detected: ${probe.prediction}, from ${probe.predictionNote}` : 'the file does not say'})` : probe.predictionNote,
        dtype: probe.dtype,
        emaKeys: probe.emaKeys,
        weights: probe.weights,
        variant: probe.variant,
        sizeBytes,
        autoV2: r.weights_hash?.slice(0, 10) ?? null,
        hash,
        status,
        statusMessage: message,
        evidence: probe.evidence,
        metadata: probe.metadata,
        files: probe.files.map(publicFile),
        vae: probe.vae ? publicFile(probe.vae) : null,
      },
    };
  }

  // ---- the background hash: one model at a time (disk-bound; the machine is shared) ----

  private enqueue(id: number): void {
    if (this.closed_ || this.queue_.includes(id) || this.running_?.id === id) return;
    this.queue_.push(id);
    this.hashes_.delete(id);
    this.pump();
  }

  private async stopHash(id: number): Promise<void> {
    if (this.queue_.includes(id)) {
      this.queue_ = this.queue_.filter((q) => q !== id);
      this.setHash(id, { ...(this.hashes_.get(id) ?? { done: 0, total: 0 }), state: 'cancelled', error: null });
    }
    const running = this.running_;
    if (running?.id === id) {
      running.abort.abort();
      await running.done;
    }
  }

  private pump(): void {
    if (this.running_ || this.closed_) return;
    const id = this.queue_.shift();
    if (id === undefined) return;
    const abort = new AbortController();
    const done = this.hash(id, abort.signal)
      .catch((error: unknown) => {
        const last = this.hashes_.get(id) ?? { done: 0, total: 0 };
        if (abort.signal.aborted) this.setHash(id, { ...last, state: 'cancelled', error: null });
        else {
          this.log.warn(`hashing base model ${id} failed`, error);
          this.setHash(id, { ...last, state: 'failed', error: (error as Error).message });
        }
      })
      .finally(() => {
        this.running_ = null;
        this.pump();
      });
    this.running_ = { id, abort, done };
  }

  private setHash(id: number, progress: HashProgress): void {
    this.hashes_.set(id, progress);
    this.emit({ type: 'models.hash', modelId: id, ...progress });
  }

  private async hash(id: number, signal: AbortSignal): Promise<void> {
    const row = this.db.prepare(`SELECT * FROM base_models WHERE id = ? AND source = 'user'`).get(id) as Row | undefined;
    if (!row || row.weights_hash) return;
    const json = row.checkpoint_json!;
    const probe = JSON.parse(json) as Stored;
    const files = [...probe.files, ...(probe.vae ? [probe.vae] : [])];
    const total = files.reduce((a, f) => a + f.size, 0);
    let done = 0;
    let last = 0;
    this.setHash(id, { state: 'running', done, total, error: null });
    for (const f of files) {
      const before = fileStatus(f);
      if (before.status !== 'ok') throw new Error(before.message!);
      f.sha256 = await sha256File(f.path, signal, (n) => {
        done += n;
        if (Date.now() - last >= this.progressEveryMs) {
          last = Date.now();
          this.setHash(id, { state: 'running', done, total, error: null });
        }
      });
      if (fileStatus(f).status !== 'ok') throw new Error(`${f.path} changed while it was being hashed; re-hash when nothing is writing to it.`);
    }
    // A single file's identity is its own SHA-256 (A1111's and Civitai's); a diffusers folder has no such standard,
    // so its identity is the SHA-256 of its weight files' list: "role relative-path sha256" lines, in probe order.
    const identity =
      probe.layout === 'ldm'
        ? probe.files[0]!.sha256!
        : createHash('sha256')
            .update(probe.files.map((f) => `${f.role} ${relative(row.source_path!, f.path)} ${f.sha256}\n`).join(''))
            .digest('hex');
    // Only if nothing re-probed or removed the row meanwhile.
    const changed = this.db
      .prepare('UPDATE base_models SET weights_hash = ?, checkpoint_json = ? WHERE id = ? AND checkpoint_json = ? AND weights_hash IS NULL')
      .run(identity, JSON.stringify(probe), id, json).changes;
    if (!changed) return;
    this.hashes_.delete(id);
    this.emit({ type: 'models.hash', modelId: id, state: 'done', done: total, total, error: null });
    this.emit({ type: 'library.changed', what: 'models', id });
  }
}

function stored(probe: Probe, vae: ProbedFile | null): Stored {
  const { vaeShapes: _shapes, ...rest } = probe;
  return { ...rest, vae };
}
