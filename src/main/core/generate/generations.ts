// Generation and the gallery. Every image is stored with its full recipe (base model, mix with
// adapter names and hashes, prompt, seed, sampler, steps, guidance) in its row and inside the PNG
// itself, as A1111-style "parameters" text plus a JSON chunk, so an exported file re-runs anywhere.
// Each image of a batch gets its own seed (seed, seed+1, …) so any single image can be re-run alone.
// Generation is deterministic, so an identical request (same base weights, adapters and α, prompt, seed, settings and
// engine) is stored once: the row is found by its recipe key and comes back instead of a copy. Compare cells are
// drawn with `forGrid` and live in the gallery only as part of a kept grid (one entry, expandable to its cells).
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  PIXEL_ART_MAX_SIDE,
  type CoreEvent,
  type GalleryEntry,
  type GalleryPage,
  type Generation,
  type GenerateRequest,
  type GenerationPage,
  type Grid,
  type GridInput,
  type GridSummary,
  type MixEntry,
} from '../../../shared/api';
import { badInput, notFound, unsupported } from '../../../shared/errors';
import { SAMPLING, SEED } from '../../../shared/ranges';
import type { Db } from '../db/database';
import type { Mixer } from '../adapters/mixer';
import type { AdapterLibrary } from '../adapters/library';
import type { EngineName, OrtService } from '../ort/service';
import { readSafetensors } from '../io/safetensors';
import type { WorkerSupervisor } from '../worker/supervisor';
import { addPngText } from './png-text';
import { notRunnable } from '../models/checkpoints';

interface GenerationRow {
  id: number;
  base_model_id: number | null;
  base_model_name: string | null;
  prompt: string;
  negative_prompt: string;
  seed: number;
  sampler: string;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  mix_json: string;
  favourite: number;
  duration_ms: number | null;
  engine: string | null;
  pixel_art: number;
  created_at: string;
}

interface GridRow {
  id: number;
  title: string;
  layout_json: string;
  created_at: string;
}

export interface Recipe {
  model: { name: string; weightsHash: string | null };
  mix: (MixEntry & { name: string; autoV2: string | null })[];
  prompt: string;
  negativePrompt: string;
  seed: number;
  sampler: string;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  /** 'worker' (libtorch) or 'ort' (onnxruntime-node); both give the same image within one 8-bit level. */
  engine: EngineName;
}

/** A1111's "parameters" text, which most image tools show and parse. */
export function a1111Parameters(r: Recipe): string {
  const adapters = r.mix.map((m) => `<lora:${m.name}:${m.alpha}>`).join(' ');
  const hashes = r.mix.filter((m) => m.autoV2).map((m) => `${m.name}: ${m.autoV2!.toLowerCase()}`);
  return [
    adapters ? `${r.prompt} ${adapters}` : r.prompt,
    ...(r.negativePrompt ? [`Negative prompt: ${r.negativePrompt}`] : []),
    [
      `Steps: ${r.steps}`,
      `Sampler: ${r.sampler === 'ddim' ? 'DDIM' : 'Euler'}`,
      `CFG scale: ${r.guidance}`,
      `Seed: ${r.seed}`,
      `Size: ${r.width}x${r.height}`,
      ...(r.model.weightsHash ? [`Model hash: ${r.model.weightsHash.slice(0, 10)}`] : []),
      `Model: ${r.model.name}`,
      ...(hashes.length ? [`Lora hashes: "${hashes.join(', ')}"`] : []),
      `Version: Shira Studio (${r.engine === 'ort' ? 'ONNX Runtime' : 'libtorch'})`,
    ].join(', '),
  ].join('\n');
}

/** A gallery row without its image blobs, with the base model's name. */
const ROW_SQL = `SELECT g.id, g.base_model_id, b.name AS base_model_name, g.prompt, g.negative_prompt, g.seed, g.sampler, g.steps, g.guidance,
         g.width, g.height, g.mix_json, g.favourite, g.duration_ms, g.engine, g.pixel_art, g.created_at
  FROM generations g LEFT JOIN base_models b ON b.id = g.base_model_id`;

/** Made with this adapter (`@adapter` null: any). */
const WITH_ADAPTER = `(@adapter IS NULL OR EXISTS (SELECT 1 FROM json_each(g.mix_json) j WHERE json_extract(j.value, '$.adapterId') = @adapter))`;

/**
 * What fixes a generation's pixels, hashed: the identity of an image. Adapters count by content (an id can be reused
 * after a delete) and in id order (the blend W0 + Σ αᵢ·Sᵢ does not depend on the order they were listed in).
 */
export function recipeKey(r: {
  base: string;
  mix: readonly { content: string; alpha: number }[];
  prompt: string;
  negativePrompt: string;
  seed: number;
  sampler: string;
  steps: number;
  guidance: number;
  engine: EngineName;
}): string {
  return createHash('sha256')
    .update(JSON.stringify([r.base, r.mix.map((m) => [m.content, m.alpha]), r.prompt, r.negativePrompt, r.seed, r.sampler, r.steps, r.guidance, r.engine]))
    .digest('hex');
}

export class Generations {
  constructor(
    private readonly db: Db,
    private readonly mixer: Mixer,
    private readonly library: AdapterLibrary,
    private readonly worker: () => WorkerSupervisor | null,
    private readonly ort: OrtService | null,
    /** The core's lane for the mixing worker (mixes and worker sampling must not interleave). */
    private readonly serial: <T>(fn: () => Promise<T>) => Promise<T>,
    private readonly tmpDir: string,
    private readonly emit: (event: CoreEvent) => void = () => {},
  ) {
    // Compare cells whose grid was not kept (or was deleted) are held by nothing once the app restarts.
    db.prepare(
      `DELETE FROM generations WHERE standalone = 0 AND favourite = 0
         AND NOT EXISTS (SELECT 1 FROM generation_grid_cells c WHERE c.generation_id = generations.id)
         AND NOT EXISTS (SELECT 1 FROM adapters a WHERE a.cover_generation_id = generations.id)`,
    ).run();
  }

  /**
   * Which engine draws: 'worker' (libtorch), 'ort' (onnxruntime-node, SHiRA mixes patched in place), or
   * 'auto' = whichever was faster on this machine (measured once, remembered). The ONNX engine patches
   * SHiRA adapters only, so 'auto' keeps mixes with a LoRA on the worker.
   */
  async engineFor(req: Pick<GenerateRequest, 'engine'>, weightsPath: string, entries: readonly MixEntry[]): Promise<EngineName> {
    const wanted = req.engine ?? 'auto';
    const hasLora = entries.some((e) => this.library.summary(e.adapterId).kind === 'lora');
    if (wanted === 'ort') {
      if (!this.ort) throw unsupported('The ONNX engine is not available in this build.');
      if (hasLora) throw badInput('The ONNX engine applies SHiRA adapters only; generate with the native engine to use a LoRA.');
      return 'ort';
    }
    if (wanted === 'worker' || !this.ort || hasLora) return 'worker';
    if (!this.worker()) return 'ort';
    return (await this.serial(() => this.ort!.chooseEngine(weightsPath))).engine;
  }

  async generate(req: GenerateRequest): Promise<Generation[]> {
    const entries = req.mix ?? this.mixer.current().entries;
    const checked = this.mixer.resolveBase(entries, req.baseModelId ?? this.mixer.current().baseModelId ?? undefined);
    if (!checked.weights_path) throw unsupported(notRunnable(checked.name));
    const engine = await this.engineFor(req, checked.weights_path, entries);
    if (engine === 'worker') return this.serial(() => this.generateWith('worker', req, checked.id));
    return this.generateWith('ort', req, checked.id);
  }

  /** `checkedBaseId`: the base `generate` resolved for this mix (the ORT path uses it as is). */
  private async generateWith(engine: EngineName, req: GenerateRequest, checkedBaseId: number): Promise<Generation[]> {
    const w = this.worker();
    if (engine === 'worker' && !w) throw unsupported('The native engine is not built, so nothing can be generated. Run `npm start` once to build it.');
    // The mix decides the base model; without adapters the requested (or default) base is used.
    let baseModelId: number | null;
    let entries: MixEntry[];
    if (engine === 'ort') {
      entries = (req.mix ?? this.mixer.current().entries).map((e) => ({ ...e }));
      baseModelId = checkedBaseId;
    } else if (req.mix) {
      const applied = await this.mixer.apply(req.mix);
      baseModelId = applied.baseModelId;
      entries = applied.entries;
    } else {
      const current = this.mixer.current();
      const { base } = await this.mixer.ensureBase(req.baseModelId ?? current.baseModelId ?? undefined);
      baseModelId = base.id;
      entries = this.mixer.current().entries;
    }
    const base = this.db.prepare('SELECT name, weights_hash, weights_path, resolution FROM base_models WHERE id = ?').get(baseModelId) as {
      name: string;
      weights_hash: string | null;
      weights_path: string;
      resolution: number;
    };
    const adapters = new Map(
      entries.map((e) => {
        const a = this.db.prepare('SELECT name, file_sha256, content_hash FROM adapters WHERE id = ?').get(e.adapterId) as { name: string; file_sha256: string | null; content_hash: string | null };
        return [e.adapterId, a] as const;
      }),
    );
    const mix = entries.map((e) => {
      const a = adapters.get(e.adapterId)!;
      return { ...e, name: a.name, autoV2: a.file_sha256 ? a.file_sha256.slice(0, 10).toUpperCase() : null };
    });
    const byContent = [...entries].sort((a, b) => a.adapterId - b.adapterId).map((e) => ({ content: adapters.get(e.adapterId)!.content_hash ?? `adapter ${e.adapterId}`, alpha: e.alpha }));
    const seed0 = req.seed ?? Math.floor(Math.random() * (SEED.max + 1));
    const batch = req.batch ?? SAMPLING.batch.default;
    const steps = req.steps ?? SAMPLING.steps.default;
    const guidance = req.guidance ?? SAMPLING.guidance.default;
    const sampler = req.sampler ?? SAMPLING.sampler.default;
    mkdirSync(this.tmpDir, { recursive: true });
    const out: Generation[] = [];
    const standalone = req.forGrid ? 0 : 1;
    for (let i = 0; i < batch; i++) {
      const seed = seed0 + i;
      const key = recipeKey({
        base: base.weights_hash ?? `base model ${baseModelId}`,
        mix: byContent,
        prompt: req.prompt,
        negativePrompt: req.negativePrompt ?? '',
        seed,
        sampler,
        steps,
        guidance,
        engine,
      });
      const same = this.db.prepare('SELECT id, standalone FROM generations WHERE recipe_key = ? ORDER BY id LIMIT 1').get(key) as { id: number; standalone: number } | undefined;
      if (same) {
        // Drawn before (maybe as a Compare cell): asked for on its own now, it joins the gallery.
        if (standalone && !same.standalone) {
          this.db.prepare('UPDATE generations SET standalone = 1 WHERE id = ?').run(same.id);
          this.adoptCovers(same.id, entries);
        }
        out.push(this.get(same.id));
        continue;
      }
      const file = join(this.tmpDir, `generate-${process.pid}-${Date.now()}-${i}.safetensors`);
      const started = performance.now();
      try {
        let images: { dtype: string; shape: number[]; data: Uint8Array } | undefined;
        if (engine === 'worker') {
          await w!.request('sample', { prompt: req.prompt, negativePrompt: req.negativePrompt ?? '', seed, steps, guidance, sampler, batch: 1, out: file });
          images = readSafetensors(file).tensors.get('images');
        } else {
          const r = await this.ort!.generate({
            modelPath: base.weights_path,
            mix: entries.map((e) => ({ adapter: this.library.cacheFile(e.adapterId), alpha: e.alpha })),
            prompt: req.prompt,
            negativePrompt: req.negativePrompt ?? '',
            seed,
            steps,
            guidance,
            sampler,
          });
          images = { dtype: 'U8', shape: r.shape, data: r.images };
        }
        if (!images || images.dtype !== 'U8' || images.shape.length !== 4) throw new Error(`the ${engine === 'worker' ? 'worker' : 'ONNX engine'} returned no images`);
        const [, h, wd, c] = images.shape as [number, number, number, number];
        const recipe: Recipe = {
          model: { name: base.name, weightsHash: base.weights_hash },
          mix,
          prompt: req.prompt,
          negativePrompt: req.negativePrompt ?? '',
          seed,
          sampler,
          steps,
          guidance,
          width: wd,
          height: h,
          engine,
        };
        const raw = sharp(Buffer.from(images.data), { raw: { width: wd, height: h, channels: c as 3 } });
        const png = addPngText(await raw.clone().png().toBuffer(), { parameters: a1111Parameters(recipe), 'shira-studio': JSON.stringify(recipe) });
        // Small images (the built-in model draws 64×64) are upscaled with nearest-neighbour: pixels, not a blur.
        const kernel = Math.max(wd, h) <= PIXEL_ART_MAX_SIDE ? 'nearest' : 'lanczos3';
        const thumb = await raw.clone().resize(256, 256, { kernel, fit: 'inside' }).webp({ quality: 85 }).toBuffer();
        const id = Number(
          this.db
            .prepare(
              `INSERT INTO generations (base_model_id, prompt, negative_prompt, seed, sampler, steps, guidance, width, height, mix_json, image_png, thumb_webp, duration_ms, engine, recipe_key, standalone)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            )
            .run(
              baseModelId,
              req.prompt,
              req.negativePrompt ?? '',
              seed,
              sampler,
              steps,
              guidance,
              wd,
              h,
              JSON.stringify(entries),
              png,
              thumb,
              Math.round(performance.now() - started),
              engine,
              key,
              standalone,
            ).lastInsertRowid,
        );
        if (standalone) this.adoptCovers(id, entries);
        out.push(this.get(id));
      } finally {
        rmSync(file, { force: true });
      }
    }
    return out;
  }

  /** Images kept on their own (Compare cells live in their grids), newest first. */
  list(o: { offset?: number; limit?: number; favourite?: boolean; adapterId?: number }): GenerationPage {
    const where = `g.standalone = 1 AND (@fav IS NULL OR g.favourite = @fav) AND ${WITH_ADAPTER}`;
    const params = { fav: o.favourite === undefined ? null : o.favourite ? 1 : 0, adapter: o.adapterId ?? null };
    const total = (this.db.prepare(`SELECT count(*) AS n FROM generations g WHERE ${where}`).get(params) as { n: number }).n;
    const rows = this.db
      .prepare(
        `${ROW_SQL} WHERE ${where}
         ORDER BY g.id DESC LIMIT @limit OFFSET @offset`,
      )
      .all({ ...params, limit: o.limit ?? 100, offset: o.offset ?? 0 }) as GenerationRow[];
    return { total, items: rows.map(toGeneration) };
  }

  get(id: number): Generation {
    const row = this.db.prepare(`${ROW_SQL} WHERE g.id = ?`).get(id) as GenerationRow | undefined;
    if (!row) throw notFound(`Generation ${id} does not exist.`);
    return toGeneration(row);
  }

  setFavourite(id: number, favourite: boolean): Generation {
    if (this.db.prepare('UPDATE generations SET favourite = ? WHERE id = ?').run(favourite ? 1 : 0, id).changes === 0) throw notFound(`Generation ${id} does not exist.`);
    return this.get(id);
  }

  /**
   * The gallery: images kept on their own and Compare grids, newest first. With `favourite`, favourite images only
   * (a favourite Compare cell included); with `adapterId`, images and grids made with that adapter.
   */
  gallery(o: { offset?: number; limit?: number; favourite?: boolean; adapterId?: number }): GalleryPage {
    const params = { adapter: o.adapterId ?? null, limit: o.limit ?? 100, offset: o.offset ?? 0 };
    const entries = o.favourite
      ? `SELECT 'image' AS type, g.id, g.created_at FROM generations g WHERE g.favourite = 1 AND ${WITH_ADAPTER}`
      : `SELECT 'image' AS type, g.id, g.created_at FROM generations g WHERE g.standalone = 1 AND ${WITH_ADAPTER}
         UNION ALL
         SELECT 'grid', r.id, r.created_at FROM generation_grids r
         WHERE @adapter IS NULL OR EXISTS (SELECT 1 FROM generation_grid_cells c JOIN generations g ON g.id = c.generation_id WHERE c.grid_id = r.id AND ${WITH_ADAPTER})`;
    const total = (this.db.prepare(`SELECT count(*) AS n FROM (${entries})`).get(params) as { n: number }).n;
    const page = this.db.prepare(`${entries} ORDER BY created_at DESC, id DESC LIMIT @limit OFFSET @offset`).all(params) as { type: 'image' | 'grid'; id: number }[];
    const items: GalleryEntry[] = page.map((e) => (e.type === 'image' ? { type: 'image', ...this.get(e.id) } : { type: 'grid', ...this.gridSummary(e.id) }));
    return { total, items };
  }

  /** Keeps a Compare grid as one gallery entry. Its cells are images already drawn (with `forGrid`). */
  saveGrid(input: GridInput): GridSummary {
    const { title, cells, ...layout } = input;
    if (cells.length !== layout.rows.length || cells.some((row) => row.length !== layout.columns.length)) {
      throw badInput(`cells must have ${layout.rows.length} rows of ${layout.columns.length} (one per row and column).`);
    }
    const ids = [...new Set(cells.flat().filter((c): c is number => c !== null))];
    if (ids.length === 0) throw badInput('The grid has no images to keep.');
    const missing = ids.find((id) => !this.db.prepare('SELECT 1 FROM generations WHERE id = ?').get(id));
    if (missing !== undefined) throw notFound(`Generation ${missing} does not exist, so the grid cannot hold it.`);
    const id = this.db.transaction(() => {
      const gridId = Number(this.db.prepare('INSERT INTO generation_grids (title, layout_json) VALUES (?, ?)').run(title, JSON.stringify(layout)).lastInsertRowid);
      const put = this.db.prepare('INSERT INTO generation_grid_cells (grid_id, row, col, generation_id) VALUES (?, ?, ?, ?)');
      cells.forEach((row, r) => row.forEach((g, c) => g !== null && put.run(gridId, r, c, g)));
      // A kept grid is the first picture of an adapter as much as a single image is.
      for (const g of ids) this.adoptCovers(g, this.get(g).mix);
      return gridId;
    })();
    return this.gridSummary(id);
  }

  gridSummary(id: number): GridSummary {
    const row = this.db.prepare('SELECT * FROM generation_grids WHERE id = ?').get(id) as GridRow | undefined;
    if (!row) throw notFound(`Grid ${id} does not exist.`);
    const layout = JSON.parse(row.layout_json) as Omit<GridInput, 'title' | 'cells'>;
    const cells: (number | null)[][] = layout.rows.map(() => layout.columns.map(() => null));
    for (const c of this.db.prepare('SELECT row, col, generation_id FROM generation_grid_cells WHERE grid_id = ?').all(id) as { row: number; col: number; generation_id: number }[]) {
      if (cells[c.row]?.[c.col] !== undefined) cells[c.row]![c.col] = c.generation_id;
    }
    return { id: row.id, title: row.title, ...layout, cells, createdAt: row.created_at };
  }

  grid(id: number): Grid {
    const summary = this.gridSummary(id);
    const ids = [...new Set(summary.cells.flat().filter((c): c is number => c !== null))];
    return { ...summary, generations: ids.map((g) => this.get(g)) };
  }

  deleteGrid(id: number): boolean {
    return this.db.prepare('DELETE FROM generation_grids WHERE id = ?').run(id).changes > 0;
  }

  setPixelArt(id: number, pixelArt: boolean): Generation {
    if (this.db.prepare('UPDATE generations SET pixel_art = ? WHERE id = ?').run(pixelArt ? 1 : 0, id).changes === 0) throw notFound(`Generation ${id} does not exist.`);
    return this.get(id);
  }

  private adoptCovers(generationId: number, mix: readonly MixEntry[]): void {
    const changed = this.library.adoptCover(generationId, mix);
    for (const adapterId of changed) this.emit({ type: 'library.changed', what: 'adapters', id: adapterId });
  }

  delete(id: number): boolean {
    return this.db.transaction(() => {
      // A cover that points at a deleted image is cleared in the same transaction.
      this.db.prepare('UPDATE adapters SET cover_generation_id = NULL WHERE cover_generation_id = ?').run(id);
      return this.db.prepare('DELETE FROM generations WHERE id = ?').run(id).changes > 0;
    })();
  }

  media(id: number, thumb: boolean): Buffer | null {
    const row = this.db.prepare(`SELECT ${thumb ? 'thumb_webp' : 'image_png'} AS data FROM generations WHERE id = ?`).get(id) as { data: Buffer | null } | undefined;
    return row?.data ?? null;
  }
}

function toGeneration(r: GenerationRow): Generation {
  return {
    id: r.id,
    baseModelId: r.base_model_id,
    baseModelName: r.base_model_name,
    prompt: r.prompt,
    negativePrompt: r.negative_prompt,
    seed: r.seed,
    sampler: r.sampler as 'ddim' | 'euler',
    steps: r.steps,
    guidance: r.guidance,
    width: r.width,
    height: r.height,
    mix: JSON.parse(r.mix_json) as MixEntry[],
    favourite: r.favourite === 1,
    durationMs: r.duration_ms,
    engine: r.engine === 'ort' ? 'ort' : 'worker',
    pixelArt: r.pixel_art === 1,
    createdAt: r.created_at,
  };
}
