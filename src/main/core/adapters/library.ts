// The adapter library: SQLite rows are the truth (one `adapters` row, one `adapter_tensors` row per layer with
// the encoded blobs as the worker wrote them). Files exist only as the content-addressed cache (cache.ts) and
// as exported packages (packages.ts). Every change that touches more than one row runs in one transaction.
import { existsSync } from 'node:fs';
import type { AdapterDetail, AdapterKind, AdapterSummary, AdapterUpdate } from '../../../shared/api';
import { notFound } from '../../../shared/errors';
import type { Db } from '../db/database';
import type { AdapterFileCache } from './cache';
import { autoV2, contentHash, trainableCount, type AdapterContent } from './format';

export interface StoreOptions {
  name: string;
  baseModelId: number;
  datasetId?: number | null;
  triggerWords?: string[];
  tags?: string[];
  notes?: string;
  preferredWeight?: number;
}

interface AdapterRow {
  id: number;
  name: string;
  kind: AdapterKind;
  method_json: string;
  base_model_id: number | null;
  base_model_name: string | null;
  base_weights_hash: string | null;
  dataset_id: number | null;
  trigger_words: string;
  preferred_weight: number;
  notes: string;
  cover_generation_id: number | null;
  content_hash: string | null;
  file_sha256: string | null;
  trainable: number;
  tags_json: string;
  size_bytes: number;
  cover_gen_id: number | null;
  cover_gen_width: number | null;
  cover_gen_height: number | null;
  cover_gen_pixel_art: number | null;
  cover_sample_id: number | null;
  base_resolution: number | null;
  created_at: string;
  updated_at: string;
}

// The cover a card shows: the chosen (or first) image, else the last preview of the run that trained the adapter:
// a run's first preview is drawn before it has learnt much, its last shows the style the adapter carries.
const SUMMARY_SQL = `
  SELECT a.*, b.name AS base_model_name, a.base_identity AS base_weights_hash, b.resolution AS base_resolution,
         (SELECT json_group_array(tag) FROM adapter_tags t WHERE t.adapter_id = a.id) AS tags_json,
         (SELECT coalesce(sum(length(values_blob) + coalesce(length(index_blob), 0)), 0) FROM adapter_tensors x WHERE x.adapter_id = a.id) AS size_bytes,
         cg.id AS cover_gen_id, cg.width AS cover_gen_width, cg.height AS cover_gen_height, cg.pixel_art AS cover_gen_pixel_art,
         (SELECT s.id FROM training_runs r JOIN training_samples s ON s.run_id = r.id WHERE r.adapter_id = a.id ORDER BY r.id DESC, s.step DESC LIMIT 1) AS cover_sample_id
  FROM adapters a LEFT JOIN base_models b ON b.id = a.base_model_id LEFT JOIN generations cg ON cg.id = a.cover_generation_id`;

export type AdapterSort = 'recent' | 'name' | 'size';

export interface ListFilter {
  query?: string;
  kind?: AdapterKind;
  baseModelId?: number;
  tag?: string;
  sort?: AdapterSort;
}

export class AdapterLibrary {
  constructor(
    private readonly db: Db,
    private readonly cache: AdapterFileCache,
  ) {}

  list(f: ListFilter = {}): AdapterSummary[] {
    const like = f.query ? `%${f.query.replace(/[\\%_]/g, (c) => `\\${c}`)}%` : null;
    const order = f.sort === 'name' ? 'a.name COLLATE NOCASE, a.id' : f.sort === 'size' ? 'size_bytes DESC, a.id DESC' : 'a.updated_at DESC, a.id DESC';
    const rows = this.db
      .prepare(
        `${SUMMARY_SQL}
         WHERE (@kind IS NULL OR a.kind = @kind)
           AND (@base IS NULL OR a.base_model_id = @base)
           AND (@tag IS NULL OR EXISTS (SELECT 1 FROM adapter_tags t WHERE t.adapter_id = a.id AND t.tag = @tag))
           AND (@like IS NULL OR a.name LIKE @like ESCAPE '\\' OR a.trigger_words LIKE @like ESCAPE '\\' OR a.notes LIKE @like ESCAPE '\\'
                OR a.method_json LIKE @like ESCAPE '\\' OR b.name LIKE @like ESCAPE '\\'
                OR EXISTS (SELECT 1 FROM adapter_tags t WHERE t.adapter_id = a.id AND t.tag LIKE @like ESCAPE '\\'))
         ORDER BY ${order}`,
      )
      .all({ kind: f.kind ?? null, like, base: f.baseModelId ?? null, tag: f.tag ?? null }) as AdapterRow[];
    return rows.map(toSummary);
  }

  summary(id: number): AdapterSummary {
    const row = this.db.prepare(`${SUMMARY_SQL} WHERE a.id = ?`).get(id) as AdapterRow | undefined;
    if (!row) throw notFound(`Adapter ${id} does not exist.`);
    return toSummary(row);
  }

  detail(id: number): AdapterDetail {
    const summary = this.summary(id);
    const tensors = this.db
      .prepare('SELECT name, shape_json, encoding, meta_json, length(values_blob) + coalesce(length(index_blob), 0) AS bytes FROM adapter_tensors WHERE adapter_id = ? ORDER BY name')
      .all(id) as {
      name: string;
      shape_json: string;
      encoding: string;
      meta_json: string;
      bytes: number;
    }[];
    const run = this.db.prepare('SELECT * FROM training_runs WHERE adapter_id = ? ORDER BY id DESC LIMIT 1').get(id) as
      { id: number; config_json: string; device: string | null; started_at: string | null; finished_at: string | null; result_json: string | null; steps: number } | undefined;
    const loss = run ? lossCurve(this.db, run.id, 400) : [];
    return {
      ...summary,
      tensors: tensors.map((t) => {
        const meta = JSON.parse(t.meta_json) as Record<string, unknown>;
        const lora = t.encoding.startsWith('lora-');
        return {
          name: t.name,
          shape: JSON.parse(t.shape_json) as number[],
          encoding: t.encoding,
          bytes: t.bytes,
          ...(lora ? { rank: (meta.a_shape as number[])[0]! } : { k: meta.k as number }),
        };
      }),
      training: run
        ? {
            runId: run.id,
            config: JSON.parse(run.config_json) as Record<string, unknown>,
            device: run.device,
            steps: run.steps,
            startedAt: run.started_at,
            finishedAt: run.finished_at,
            result: run.result_json ? (JSON.parse(run.result_json) as Record<string, unknown>) : null,
            loss,
          }
        : null,
    };
  }

  /** The adapter's tensors as stored, ready to write as a file. */
  content(id: number): AdapterContent {
    const a = this.db.prepare('SELECT kind, method_json, base_identity FROM adapters WHERE id = ?').get(id) as { kind: AdapterKind; method_json: string; base_identity: string | null } | undefined;
    if (!a) throw notFound(`Adapter ${id} does not exist.`);
    const rows = this.db.prepare('SELECT name, shape_json, mask_kind, encoding, meta_json, values_blob, index_blob FROM adapter_tensors WHERE adapter_id = ? ORDER BY name').all(id) as {
      name: string;
      shape_json: string;
      mask_kind: string | null;
      encoding: string;
      meta_json: string;
      values_blob: Buffer;
      index_blob: Buffer | null;
    }[];
    return {
      kind: a.kind,
      baseIdentity: a.base_identity ?? '',
      methodJson: a.method_json,
      tensors: rows.map((r) => ({
        name: r.name,
        shape: JSON.parse(r.shape_json) as number[],
        maskKind: r.mask_kind,
        encoding: r.encoding,
        meta: JSON.parse(r.meta_json) as Record<string, unknown>,
        values: r.values_blob,
        index: r.index_blob,
      })),
    };
  }

  /**
   * Stores `content` as a new adapter in one transaction. The canonical file is written to the cache
   * first (its SHA-256 is part of the row), so a failure leaves at most an unreferenced cache file.
   */
  insert(content: AdapterContent, o: StoreOptions, beforeCommit?: (adapterId: number) => void): number {
    const base = this.db.prepare('SELECT weights_hash FROM base_models WHERE id = ?').get(o.baseModelId) as { weights_hash: string | null } | undefined;
    if (!base) throw notFound(`Base model ${o.baseModelId} does not exist.`);
    const stamped: AdapterContent = { ...content, baseIdentity: base.weights_hash ?? content.baseIdentity };
    const { sha256 } = this.cache.write(stamped);
    const hash = contentHash(stamped);
    const trainable = trainableCount(stamped);
    const tx = this.db.transaction(() => {
      const id = Number(
        this.db
          .prepare(
            `INSERT INTO adapters (name, kind, method_json, base_model_id, base_identity, dataset_id, trigger_words, preferred_weight, notes, content_hash, file_sha256, trainable)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(
            o.name,
            stamped.kind,
            stamped.methodJson,
            o.baseModelId,
            stamped.baseIdentity || null,
            o.datasetId ?? null,
            JSON.stringify(o.triggerWords ?? []),
            o.preferredWeight ?? 1,
            o.notes ?? '',
            hash,
            sha256,
            trainable,
          ).lastInsertRowid,
      );
      const put = this.db.prepare('INSERT INTO adapter_tensors (adapter_id, name, shape_json, mask_kind, encoding, meta_json, values_blob, index_blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
      for (const t of stamped.tensors) put.run(id, t.name, JSON.stringify(t.shape), t.maskKind, t.encoding, JSON.stringify(t.meta), t.values, t.index);
      this.setTags(id, o.tags ?? []);
      beforeCommit?.(id);
      return id;
    });
    return tx();
  }

  update(id: number, patch: AdapterUpdate): AdapterSummary {
    this.summary(id);
    this.db.transaction(() => {
      const set = (column: string, value: unknown) => this.db.prepare(`UPDATE adapters SET ${column} = ? WHERE id = ?`).run(value, id);
      if (patch.name !== undefined) set('name', patch.name);
      if (patch.notes !== undefined) set('notes', patch.notes);
      if (patch.triggerWords !== undefined) set('trigger_words', JSON.stringify(dedupe(patch.triggerWords)));
      if (patch.preferredWeight !== undefined) set('preferred_weight', patch.preferredWeight);
      if (patch.coverGenerationId !== undefined) {
        if (patch.coverGenerationId !== null && !this.db.prepare('SELECT 1 FROM generations WHERE id = ?').get(patch.coverGenerationId)) {
          throw notFound(`Generation ${patch.coverGenerationId} does not exist, so it cannot be the cover.`);
        }
        set('cover_generation_id', patch.coverGenerationId);
      }
      if (patch.tags !== undefined) this.setTags(id, patch.tags);
      this.db.prepare(`UPDATE adapters SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`).run(id);
    })();
    return this.summary(id);
  }

  /**
   * Adapters of the mix that have no cover yet take this image: the first picture made with an adapter is its cover
   * until the artist picks one. Returns the adapters that changed.
   */
  adoptCover(generationId: number, mix: readonly { adapterId: number; alpha: number }[]): number[] {
    const take = this.db.prepare('UPDATE adapters SET cover_generation_id = ? WHERE id = ? AND cover_generation_id IS NULL');
    return mix.filter((e) => e.alpha !== 0 && take.run(generationId, e.adapterId).changes > 0).map((e) => e.adapterId);
  }

  duplicate(id: number, name?: string): AdapterSummary {
    const src = this.summary(id);
    const copyName = name ?? `${src.name} (copy)`;
    const newId = this.db.transaction(() => {
      const nid = Number(
        this.db
          .prepare(
            `INSERT INTO adapters (name, kind, method_json, base_model_id, base_identity, dataset_id, trigger_words, preferred_weight, notes, cover_generation_id, content_hash, file_sha256, trainable)
             SELECT ?, kind, method_json, base_model_id, base_identity, dataset_id, trigger_words, preferred_weight, notes, cover_generation_id, content_hash, file_sha256, trainable FROM adapters WHERE id = ?`,
          )
          .run(copyName, id).lastInsertRowid,
      );
      this.db
        .prepare(
          `INSERT INTO adapter_tensors (adapter_id, name, shape_json, mask_kind, encoding, meta_json, values_blob, index_blob)
           SELECT ?, name, shape_json, mask_kind, encoding, meta_json, values_blob, index_blob FROM adapter_tensors WHERE adapter_id = ?`,
        )
        .run(nid, id);
      this.setTags(nid, src.tags);
      return nid;
    })();
    return this.summary(newId);
  }

  /** Removes the adapter with its tensors, tags and mix entries (one transaction); drops its cache file when unshared. */
  delete(id: number): boolean {
    const row = this.db.prepare('SELECT file_sha256 FROM adapters WHERE id = ?').get(id) as { file_sha256: string | null } | undefined;
    if (!row) return false;
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM adapters WHERE id = ?').run(id);
    })();
    if (row.file_sha256 && !this.db.prepare('SELECT 1 FROM adapters WHERE file_sha256 = ?').get(row.file_sha256)) {
      this.cache.remove(row.file_sha256);
    }
    return true;
  }

  /** The adapter as a file for the worker; rebuilt from the rows when missing or damaged. */
  cacheFile(id: number): { path: string; sha256: string; rebuilt: boolean } {
    const row = this.db.prepare('SELECT file_sha256 FROM adapters WHERE id = ?').get(id) as { file_sha256: string | null } | undefined;
    if (!row) throw notFound(`Adapter ${id} does not exist.`);
    if (row.file_sha256) {
      const path = this.cache.path(row.file_sha256);
      if (existsSync(path)) return { path, sha256: row.file_sha256, rebuilt: false };
    }
    const written = this.cache.write(this.content(id));
    if (row.file_sha256 && written.sha256 !== row.file_sha256) {
      // The rows are the truth; a hash recorded by an older writer is brought up to date.
      this.db.prepare('UPDATE adapters SET file_sha256 = ? WHERE id = ?').run(written.sha256, id);
    }
    return { ...written, rebuilt: true };
  }

  /** Drops a cache file so the next use reads the rows again (cold-switch benchmarks, tests). */
  evictCache(id: number): void {
    const row = this.db.prepare('SELECT file_sha256 FROM adapters WHERE id = ?').get(id) as { file_sha256: string | null } | undefined;
    if (row?.file_sha256) this.cache.remove(row.file_sha256);
  }

  private setTags(id: number, tags: readonly string[]): void {
    this.db.prepare('DELETE FROM adapter_tags WHERE adapter_id = ?').run(id);
    const put = this.db.prepare('INSERT INTO adapter_tags (adapter_id, tag) VALUES (?, ?)');
    for (const t of dedupe(tags)) put.run(id, t);
  }
}

function toSummary(r: AdapterRow): AdapterSummary {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    method: JSON.parse(r.method_json) as Record<string, unknown>,
    baseModelId: r.base_model_id,
    baseModelName: r.base_model_name,
    baseWeightsHash: r.base_weights_hash,
    datasetId: r.dataset_id,
    triggerWords: JSON.parse(r.trigger_words) as string[],
    preferredWeight: r.preferred_weight,
    tags: (JSON.parse(r.tags_json) as string[]).sort(),
    notes: r.notes,
    coverGenerationId: r.cover_generation_id,
    cover:
      r.cover_gen_id !== null
        ? { media: 'generation-thumb', id: r.cover_gen_id, width: r.cover_gen_width!, height: r.cover_gen_height!, pixelArt: r.cover_gen_pixel_art === 1 }
        : r.cover_sample_id !== null
          ? { media: 'training-sample', id: r.cover_sample_id, width: r.base_resolution ?? 0, height: r.base_resolution ?? 0, pixelArt: false }
          : null,
    sizeBytes: r.size_bytes,
    trainable: r.trainable,
    bytesPerValue: r.trainable ? r.size_bytes / r.trainable : null,
    contentHash: r.content_hash,
    fileSha256: r.file_sha256,
    autoV2: r.file_sha256 ? autoV2(r.file_sha256) : null,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function dedupe(words: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of words.map((x) => x.trim()).filter(Boolean)) if (!out.includes(w)) out.push(w);
  return out;
}

/** A run's loss curve thinned to about `maxPoints` (a chart needs hundreds, not every step), always with the last. */
export function lossCurve(db: Db, runId: number, maxPoints: number): { step: number; loss: number }[] {
  const all = db.prepare('SELECT step, loss FROM training_loss WHERE run_id = ? ORDER BY step').all(runId) as { step: number; loss: number }[];
  const stride = Math.max(1, Math.ceil(all.length / maxPoints));
  return all.filter((_, i) => i % stride === 0 || i === all.length - 1);
}
