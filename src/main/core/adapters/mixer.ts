// Fused-mode switching (paper §3.2): the worker's resident base weights become W0 + Σ αᵢ·Sᵢ.
// The worker keeps decoded adapters in an LRU and re-blends only the layers whose adapters or α
// changed; this side picks the base, checks every adapter belongs to it, and hands over
// content-addressed cache files. Nothing here touches a tensor.
import type { MixEntry, MixResult } from '../../../shared/api';
import { badInput, notFound, unsupported } from '../../../shared/errors';
import type { Db } from '../db/database';
import type { WorkerSupervisor } from '../worker/supervisor';
import type { AdapterLibrary } from './library';
import { notRunnable } from '../models/checkpoints';

export interface BaseRow {
  id: number;
  name: string;
  weights_path: string | null;
  weights_hash: string | null;
}

export class Mixer {
  /** What the worker holds: which base (by worker pid, so a restarted worker reloads) and which mix. */
  private loaded_: { pid: number | undefined; baseModelId: number } | null = null;
  private entries_: MixEntry[] = [];

  constructor(
    private readonly db: Db,
    private readonly library: AdapterLibrary,
    private readonly worker: () => WorkerSupervisor | null,
  ) {}

  current(): { baseModelId: number | null; entries: MixEntry[] } {
    const w = this.worker();
    const valid = this.loaded_ && w && w.state === 'ready' && w.pid === this.loaded_.pid;
    return { baseModelId: valid ? this.loaded_!.baseModelId : null, entries: valid ? [...this.entries_] : [] };
  }

  /** Loads `baseModelId` (default: the default model) into the worker unless it is already there. */
  async ensureBase(baseModelId?: number): Promise<{ base: BaseRow; ms: number }> {
    const w = this.requireWorker();
    const base = (
      baseModelId !== undefined
        ? this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE id = ?').get(baseModelId)
        : this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE is_default = 1').get()
    ) as BaseRow | undefined;
    if (!base) throw notFound(baseModelId !== undefined ? `Base model ${baseModelId} does not exist.` : 'There is no default base model.');
    if (!base.weights_path) throw unsupported(notRunnable(base.name));
    const t0 = performance.now();
    if (w.state !== 'ready') await w.start();
    if (!this.loaded_ || this.loaded_.baseModelId !== base.id || this.loaded_.pid !== w.pid) {
      this.loaded_ = null;
      this.entries_ = [];
      await w.request('load_model', { path: base.weights_path, identity: base.weights_hash ?? '' });
      this.loaded_ = { pid: w.pid, baseModelId: base.id };
    }
    return { base, ms: performance.now() - t0 };
  }

  /**
   * Checks a mix without touching any engine: no adapter twice, one base model for all, and every
   * adapter's recorded base identity equal to that base's weights now. Returns the base (the default
   * or `fallbackBaseId` when the mix is empty).
   */
  resolveBase(entries: readonly MixEntry[], fallbackBaseId?: number): BaseRow {
    const seen = new Set<number>();
    for (const e of entries) {
      if (seen.has(e.adapterId)) throw badInput(`Adapter ${e.adapterId} appears twice in the mix; give it one weight.`);
      seen.add(e.adapterId);
    }
    const summaries = entries.map((e) => this.library.summary(e.adapterId));
    const bases = new Set(summaries.map((s) => s.baseModelId));
    if (bases.size > 1) {
      const [a, b] = summaries.filter((s, i, all) => all.findIndex((x) => x.baseModelId === s.baseModelId) === i);
      throw badInput(`"${a!.name}" (${a!.baseModelName ?? 'unknown base'}) and "${b!.name}" (${b!.baseModelName ?? 'unknown base'}) were trained on different base models and cannot be mixed.`);
    }
    if (summaries.length && summaries[0]!.baseModelId === null) throw badInput(`"${summaries[0]!.name}" has no base model recorded, so it cannot be applied.`);
    const wanted = summaries.length ? summaries[0]!.baseModelId! : fallbackBaseId;
    const base = (
      wanted !== undefined
        ? this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE id = ?').get(wanted)
        : this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE is_default = 1').get()
    ) as BaseRow | undefined;
    if (!base) throw notFound(wanted !== undefined ? `Base model ${wanted} does not exist.` : 'There is no default base model.');
    for (const s of summaries) {
      if (s.baseWeightsHash && base.weights_hash && s.baseWeightsHash !== base.weights_hash) {
        throw badInput(`"${s.name}" was trained on other weights than "${base.name}" has now; it cannot be applied.`);
      }
    }
    return base;
  }

  async apply(entries: readonly MixEntry[]): Promise<MixResult> {
    const t0 = performance.now();
    const checked = this.resolveBase(entries, this.loaded_?.baseModelId);
    const { base } = await this.ensureBase(checked.id);
    const adapters = entries.map((e) => ({ path: this.library.cacheFile(e.adapterId).path, alpha: e.alpha }));
    const reply = await this.requireWorker().request('apply_mix', { adapters });
    this.entries_ = entries.map((e) => ({ ...e }));
    return {
      baseModelId: base.id,
      entries: [...this.entries_],
      switchMs: reply.ms,
      loadMs: reply.load_ms,
      totalMs: performance.now() - t0,
      cacheHits: reply.cache_hits,
      cacheMisses: reply.cache_misses,
      layersReblended: reply.layers_reblended,
      layersUnchanged: reply.layers_unchanged,
    };
  }

  /** Called before an adapter is deleted: a fused adapter must leave the weights first. */
  async forget(adapterId: number): Promise<void> {
    if (!this.entries_.some((e) => e.adapterId === adapterId)) return;
    const w = this.worker();
    if (w && w.state === 'ready' && this.loaded_?.pid === w.pid) await w.request('clear_mix', {});
    this.entries_ = [];
  }

  private requireWorker(): WorkerSupervisor {
    const w = this.worker();
    if (!w) throw unsupported('The native engine is not built, so adapters cannot be applied. Run `npm start` once to build it.');
    return w;
  }
}
