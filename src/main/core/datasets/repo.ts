// SQL for datasets. Row ↔ API shape mapping lives here and nowhere else.
import type { Dataset, DatasetImage, DatasetSummary } from '../../../shared/api';
import { badInput, notFound } from '../../../shared/errors';
import type { Db } from '../db/database';

interface DatasetRow {
  id: number;
  name: string;
  trigger_word: string | null;
  source_path: string | null;
  image_count: number;
  weighted_count: number | null;
  cover_image_id: number | null;
  pixel_art: number;
  created_at: string;
  updated_at: string;
}

interface ImageRow {
  id: number;
  dataset_id: number;
  rel_path: string;
  width: number;
  height: number;
  format: string;
  bytes: number;
  sha256: string;
  caption: string;
  caption_source: DatasetImage['captionSource'];
  repeats: number;
  class_tokens: string | null;
}

const SUMMARY_SQL = /* sql */ `
  SELECT d.*,
         (SELECT count(*) FROM dataset_images i WHERE i.dataset_id = d.id) AS image_count,
         (SELECT sum(repeats) FROM dataset_images i WHERE i.dataset_id = d.id) AS weighted_count,
         (SELECT min(id) FROM dataset_images i WHERE i.dataset_id = d.id) AS cover_image_id
  FROM datasets d`;

function toSummary(r: DatasetRow): DatasetSummary {
  return {
    id: r.id,
    name: r.name,
    triggerWord: r.trigger_word,
    sourcePath: r.source_path,
    imageCount: r.image_count,
    weightedCount: r.weighted_count ?? 0,
    coverImageId: r.cover_image_id,
    pixelArt: r.pixel_art === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function toImage(r: ImageRow): DatasetImage {
  return {
    id: r.id,
    datasetId: r.dataset_id,
    relPath: r.rel_path,
    width: r.width,
    height: r.height,
    format: r.format,
    bytes: r.bytes,
    sha256: r.sha256,
    caption: r.caption,
    captionSource: r.caption_source,
    repeats: r.repeats,
    classTokens: r.class_tokens,
  };
}

export interface NewImage {
  relPath: string;
  width: number;
  height: number;
  format: string;
  bytes: number;
  sha256: string;
  caption: string;
  captionSource: 'sidecar' | 'folder' | 'none';
  repeats: number;
  classTokens: string | null;
  normalized: Buffer;
  thumb: Buffer;
}

export class DatasetRepo {
  constructor(private readonly db_: Db) {}

  list(): DatasetSummary[] {
    return (this.db_.prepare(`${SUMMARY_SQL} ORDER BY d.updated_at DESC, d.id DESC`).all() as DatasetRow[]).map(toSummary);
  }

  summary(id: number): DatasetSummary {
    const row = this.db_.prepare(`${SUMMARY_SQL} WHERE d.id = ?`).get(id) as DatasetRow | undefined;
    if (!row) throw notFound(`Dataset ${id} does not exist (it may have been deleted).`);
    return toSummary(row);
  }

  get(id: number): Dataset {
    const summary = this.summary(id);
    const images = (this.db_.prepare('SELECT * FROM dataset_images WHERE dataset_id = ? ORDER BY rel_path, id').all(id) as ImageRow[]).map(toImage);
    return { ...summary, images };
  }

  image(imageId: number): DatasetImage {
    const row = this.db_.prepare('SELECT * FROM dataset_images WHERE id = ?').get(imageId) as ImageRow | undefined;
    if (!row) throw notFound(`Image ${imageId} does not exist (it may have been removed).`);
    return toImage(row);
  }

  /** sha256 → rel_path of images already in the dataset, for duplicate detection on append. */
  existingHashes(datasetId: number): Map<string, string> {
    const rows = this.db_.prepare('SELECT sha256, rel_path FROM dataset_images WHERE dataset_id = ?').all(datasetId) as { sha256: string; rel_path: string }[];
    return new Map(rows.map((r) => [r.sha256, r.rel_path]));
  }

  create(name: string, triggerWord: string | null, sourcePath: string | null): number {
    const info = this.db_.prepare('INSERT INTO datasets (name, trigger_word, source_path) VALUES (?, ?, ?)').run(name, triggerWord, sourcePath);
    return Number(info.lastInsertRowid);
  }

  insertImage(datasetId: number, img: NewImage): number {
    const info = this.db_
      .prepare(
        `INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256, caption, caption_source, repeats, class_tokens)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(datasetId, img.relPath, img.width, img.height, img.format, img.bytes, img.sha256, img.caption, img.captionSource, img.repeats, img.classTokens);
    const imageId = Number(info.lastInsertRowid);
    this.db_.prepare('INSERT INTO dataset_image_data (image_id, normalized, thumb_webp) VALUES (?, ?, ?)').run(imageId, img.normalized, img.thumb);
    return imageId;
  }

  touch(datasetId: number): void {
    this.db_.prepare(`UPDATE datasets SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`).run(datasetId);
  }

  update(id: number, patch: { name?: string; triggerWord?: string | null; pixelArt?: boolean }): DatasetSummary {
    this.summary(id);
    this.db_.transaction(() => {
      if (patch.name !== undefined) this.db_.prepare('UPDATE datasets SET name = ? WHERE id = ?').run(patch.name, id);
      if (patch.triggerWord !== undefined) this.db_.prepare('UPDATE datasets SET trigger_word = ? WHERE id = ?').run(patch.triggerWord || null, id);
      if (patch.pixelArt !== undefined) this.db_.prepare('UPDATE datasets SET pixel_art = ? WHERE id = ?').run(patch.pixelArt ? 1 : 0, id);
      this.touch(id);
    })();
    return this.summary(id);
  }

  setCaption(imageId: number, caption: string): DatasetImage {
    const img = this.image(imageId);
    this.db_.transaction(() => {
      this.db_.prepare(`UPDATE dataset_images SET caption = ?, caption_source = 'user' WHERE id = ?`).run(caption.trim(), imageId);
      this.touch(img.datasetId);
    })();
    return this.image(imageId);
  }

  /**
   * A bulk caption edit in one transaction: every image must belong to the dataset, or nothing changes. Only
   * captions that really change are written (and marked as the user's).
   */
  setCaptions(datasetId: number, captions: readonly { imageId: number; caption: string }[]): Dataset {
    this.summary(datasetId);
    const current = new Map((this.db_.prepare('SELECT id, caption FROM dataset_images WHERE dataset_id = ?').all(datasetId) as { id: number; caption: string }[]).map((r) => [r.id, r.caption]));
    const stray = captions.find((c) => !current.has(c.imageId));
    if (stray) throw badInput(`Image ${stray.imageId} is not in this dataset (it may have been removed); nothing was changed.`);
    this.db_.transaction(() => {
      const put = this.db_.prepare(`UPDATE dataset_images SET caption = ?, caption_source = 'user' WHERE id = ?`);
      let changed = 0;
      for (const { imageId, caption } of captions) {
        const text = caption.trim();
        if (current.get(imageId) === text) continue;
        put.run(text, imageId);
        changed++;
      }
      if (changed > 0) this.touch(datasetId);
    })();
    return this.get(datasetId);
  }

  removeImage(imageId: number): boolean {
    const img = this.image(imageId);
    this.db_.transaction(() => {
      this.db_.prepare('DELETE FROM dataset_images WHERE id = ?').run(imageId);
      this.touch(img.datasetId);
    })();
    return true;
  }

  delete(id: number): boolean {
    this.summary(id);
    // Image rows and their pixels go with it through ON DELETE CASCADE, in one statement.
    this.db_.prepare('DELETE FROM datasets WHERE id = ?').run(id);
    return true;
  }

  media(kind: 'thumb' | 'image', imageId: number): Buffer | null {
    const column = kind === 'thumb' ? 'thumb_webp' : 'normalized';
    const row = this.db_.prepare(`SELECT ${column} AS data FROM dataset_image_data WHERE image_id = ?`).get(imageId) as { data: Buffer } | undefined;
    return row?.data ?? null;
  }
}
