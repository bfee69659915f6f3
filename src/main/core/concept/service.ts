// Concept loss for the user's own adapters (Compare view): a judge trained on demand on each
// adapter's training images against the base model's samples, then single vs fused style scores,
// drift and weight-space overlap — the same measurements as `eval:concept` (core/concept/lab.ts),
// stored per adapter set in SQLite. The user's current mix is restored afterwards.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { ConceptReport, ConceptRequest, CoreEvent } from '../../../shared/api';
import { badInput, unsupported } from '../../../shared/errors';
import { CONCEPT } from '../../../shared/ranges';
import type { Db } from '../db/database';
import type { AdapterLibrary } from '../adapters/library';
import type { Mixer } from '../adapters/mixer';
import type { WorkerSupervisor } from '../worker/supervisor';
import type { TensorData } from '../io/safetensors';
import { ConceptLab, CONTENT_PROMPTS, drift, SCORE_SEEDS, styleScore, UNRELATED_PROMPTS } from './lab';

const BASE_SEEDS = [11, 12, 13, 14];

export class ConceptService {
  private running_ = false;

  constructor(
    private readonly db: Db,
    private readonly library: AdapterLibrary,
    private readonly mixer: Mixer,
    private readonly worker: () => WorkerSupervisor | null,
    private readonly workDir: string,
    private readonly emit: (event: CoreEvent) => void,
  ) {}

  latest(adapterIds: number[]): ConceptReport | null {
    const key = JSON.stringify([...new Set(adapterIds)].sort((a, b) => a - b));
    const row = this.db.prepare('SELECT id, result_json, created_at FROM concept_results WHERE adapter_ids = ? ORDER BY id DESC LIMIT 1').get(key) as
      { id: number; result_json: string; created_at: string } | undefined;
    return row ? { ...(JSON.parse(row.result_json) as Omit<ConceptReport, 'id' | 'createdAt'>), id: row.id, createdAt: row.created_at } : null;
  }

  async evaluate(req: ConceptRequest): Promise<ConceptReport> {
    const w = this.worker();
    if (!w) throw unsupported('The native engine is not built, so nothing can be measured. Run `npm start` once to build it.');
    if (this.running_) throw badInput('A concept-loss measurement is already running; wait for it to finish.');
    const ids = [...new Set(req.adapterIds)].sort((a, b) => a - b);
    const adapters = ids.map((id) => this.library.summary(id));
    for (const a of adapters) {
      if (a.datasetId === null) throw badInput(`"${a.name}" has no training images in the library (it was imported), so its style cannot be judged.`);
      if (!this.db.prepare('SELECT 1 FROM datasets WHERE id = ?').get(a.datasetId)) throw badInput(`The training images of "${a.name}" were deleted, so its style cannot be judged.`);
    }
    const alphas = req.alphas ?? [CONCEPT.alpha.default];
    const t0 = performance.now();
    const previous = this.mixer.current().entries;
    const runDir = join(this.workDir, `concept-${process.pid}-${Date.now()}`);
    const lab = new ConceptLab(w, runDir, { steps: req.steps ?? CONCEPT.steps.default, guidance: req.guidance ?? CONCEPT.guidance.default });
    const total = 2 + adapters.length * 2 + alphas.length * adapters.length + (adapters.length * (adapters.length - 1)) / 2;
    let done = 0;
    const step = (phase: string) => this.emit({ type: 'concept.progress', phase, done: ++done, total });
    this.running_ = true;
    try {
      // 1. judge: base samples vs each adapter's own training images
      await this.mixer.apply([]);
      const base = await lab.images([...CONTENT_PROMPTS, ...UNRELATED_PROMPTS], BASE_SEEDS, 'base');
      const size = base.shape[1]!;
      const classes = ['base', ...adapters.map((a) => `adapter-${a.id}`)];
      const judgeFile = join(runDir, 'judge.safetensors');
      const sets: TensorData[] = [base];
      for (const a of adapters) sets.push(await this.datasetImages(a.datasetId!, size));
      const judge = await lab.trainJudge(classes, sets, judgeFile, { steps: 300 });
      step('judge');
      const promptsOf = (id: number) => {
        const a = adapters.find((x) => x.id === id)!;
        const trigger = a.triggerWords.join(', ');
        return CONTENT_PROMPTS.map((c) => (trigger ? `${trigger}, ${c}` : c));
      };
      const score = async (prompts: string[], tag: string) => lab.score(judgeFile, await lab.images(prompts, SCORE_SEEDS, tag));
      const baseUnrelated = await score(UNRELATED_PROMPTS, 'base-unrelated');
      step('base');

      // 2. single adapters at α = 1
      const single: ConceptReport['single'] = [];
      for (const a of adapters) {
        const baseScore = styleScore(await score(promptsOf(a.id), `base-${a.id}`), `adapter-${a.id}`);
        step('base scores');
        await this.mixer.apply([{ adapterId: a.id, alpha: 1 }]);
        const s = styleScore(await score(promptsOf(a.id), `single-${a.id}`), `adapter-${a.id}`);
        const d = drift(await score(UNRELATED_PROMPTS, `drift-${a.id}`), baseUnrelated);
        single.push({ adapterId: a.id, name: a.name, score: s, baseScore, drift: d });
        step('single');
      }

      // 3. all adapters fused, each scored on its own prompts
      const fused: ConceptReport['fused'] = [];
      if (adapters.length > 1) {
        for (const alpha of alphas) {
          await this.mixer.apply(adapters.map((a) => ({ adapterId: a.id, alpha })));
          for (const a of adapters) {
            const s = styleScore(await score(promptsOf(a.id), `fused-${alpha}-${a.id}`), `adapter-${a.id}`);
            const one = single.find((x) => x.adapterId === a.id)!.score;
            fused.push({ alpha, adapterId: a.id, score: s, dropPoints: (one - s) * 100, retention: one > 0 ? s / one : null });
            step('fused');
          }
        }
      }

      // 4. weight-space overlap of every pair
      const overlaps: ConceptReport['overlaps'] = [];
      for (let i = 0; i < adapters.length; i++)
        for (let j = i + 1; j < adapters.length; j++) {
          const o = await lab.overlap(this.library.cacheFile(adapters[i]!.id).path, this.library.cacheFile(adapters[j]!.id).path);
          overlaps.push({ a: adapters[i]!.id, b: adapters[j]!.id, layers: o.layers, awor: o.awor_mean, awomNormalized: o.awom_normalized_mean, awom: o.awom_mean });
          step('overlap');
        }

      const report: Omit<ConceptReport, 'id' | 'createdAt'> = {
        adapterIds: ids,
        alphas,
        judge: { classes: ['base', ...adapters.map((a) => a.name)], heldoutAccuracy: judge.heldout_accuracy, heldoutAccuracyPerClass: judge.heldout_accuracy_per_class },
        single,
        fused,
        overlaps,
        seconds: (performance.now() - t0) / 1000,
      };
      const id = Number(this.db.prepare('INSERT INTO concept_results (adapter_ids, result_json) VALUES (?, ?)').run(JSON.stringify(ids), JSON.stringify(report)).lastInsertRowid);
      return this.latest(ids) ?? { ...report, id, createdAt: new Date().toISOString() };
    } finally {
      this.running_ = false;
      rmSync(runDir, { recursive: true, force: true });
      await this.mixer.apply(previous).catch(() => {});
    }
  }

  /** A dataset's stored images, centre-cropped to the model's size: U8 [n, size, size, 3]. */
  private async datasetImages(datasetId: number, size: number): Promise<TensorData> {
    const rows = this.db.prepare('SELECT d.normalized FROM dataset_images i JOIN dataset_image_data d ON d.image_id = i.id WHERE i.dataset_id = ? ORDER BY i.id LIMIT 200').all(datasetId) as {
      normalized: Buffer;
    }[];
    if (rows.length < 2) throw badInput('A style needs at least 2 training images to be judged.');
    const parts: Buffer[] = [];
    for (const r of rows) parts.push(await sharp(r.normalized).resize(size, size, { fit: 'cover' }).removeAlpha().raw().toBuffer());
    return { dtype: 'U8', shape: [rows.length, size, size, 3], data: Buffer.concat(parts) };
  }
}
