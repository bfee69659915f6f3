// Dataset import: scan → decode each file with sharp into a staging folder → one transaction.
// Invariant: the library sees all of an import or none of it; a cancel, crash or bug before the
// commit leaves the database exactly as it was (staged files are only ever temp files).
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import type { ImportFileReport, ImportInput, ImportReport } from '../../../shared/api';
import { cancelled, conflict } from '../../../shared/errors';
import type { Db } from '../db/database';
import type { EventBus } from '../events';
import { FileRefused, ReadAborted, readRegularFile } from '../files';
import { ImageRejected, MAX_FILE_BYTES, processImage } from './images';
import { DatasetRepo, type NewImage } from './repo';
import { captionFor, datasetNaming, scanFiles, scanFolder, type Candidate } from './scan';

/** Files decoded at once: libvips already threads inside one image, so 2 keeps 2 cores busy without swamping memory. */
const CONCURRENCY = 2;

interface Staged extends Omit<NewImage, 'normalized' | 'thumb'> {
  index: number;
  normalizedPath: string;
  thumbPath: string;
}

export class DatasetImporter {
  private readonly active_ = new Map<string, AbortController>();

  constructor(
    private readonly db_: Db,
    private readonly repo_: DatasetRepo,
    private readonly bus_: EventBus,
    private readonly stagingRoot_: string,
    private readonly uploadsRoot_: string,
  ) {}

  cancel(importId: string): boolean {
    const controller = this.active_.get(importId);
    if (!controller) return false;
    controller.abort();
    return true;
  }

  async run(input: ImportInput): Promise<ImportReport> {
    const importId = input.importId ?? randomUUID();
    if (this.active_.has(importId)) throw conflict(`An import with id "${importId}" is already running.`);
    const existing = input.datasetId !== undefined ? this.repo_.existingHashes(this.repo_.summary(input.datasetId).id) : new Map<string, string>();

    const controller = new AbortController();
    this.active_.set(importId, controller);
    await mkdir(this.stagingRoot_, { recursive: true });
    // The pid in the name lets the next start tell a crashed import's leftovers from a live one's.
    const staging = await mkdtemp(join(this.stagingRoot_, `import-${process.pid}-`));
    const { signal } = controller;
    try {
      let scan;
      try {
        scan = input.source.kind === 'folder' ? await scanFolder(input.source.path, signal, input.folderName) : await scanFiles(input.source.paths, signal);
      } catch (error) {
        if (error instanceof ReadAborted) throw cancelled('Import cancelled; nothing was added to the library.');
        throw error;
      }
      // Browser uploads arrive through a staging folder that is emptied on restart: no origin to record.
      const origin = scan.root && !isInside(scan.root, this.uploadsRoot_) ? scan.root : null;
      const naming = input.datasetId === undefined ? datasetNaming(scan, input, input.folderName ?? (origin && scan.rootName)) : null;
      const reports: ImportFileReport[] = scan.candidates.map((c) => ({ path: c.displayPath, status: 'skipped' }));
      const staged: Staged[] = [];
      const seen = new Map(existing);

      const progress = (phase: 'reading' | 'decoding', done: number, total: number, candidate: Candidate) =>
        this.bus_.emit({ type: 'import.progress', importId, phase, done, total, current: candidate.displayPath });
      const reject = (index: number, error: unknown) => {
        if (!(error instanceof ImageRejected || error instanceof FileRefused)) throw error;
        reports[index]!.status = 'skipped';
        reports[index]!.reason = error.message;
      };

      // Pass 1, in scan order: cheap checks and content hashes, so "duplicate of X" always names
      // the first file in folder order whatever the decode timing.
      const toDecode: { index: number; sha256: string; bytes: number }[] = [];
      for (const [index, candidate] of scan.candidates.entries()) {
        if (signal.aborted) break;
        try {
          if (candidate.rejected) throw new ImageRejected(candidate.rejected);
          // Hashed as it is read: a regular file only, within the size cap, each read bounded in time.
          const hash = createHash('sha256');
          const { size } = await readRegularFile(candidate.absPath, { maxBytes: MAX_FILE_BYTES, signal, onChunk: (chunk) => hash.update(chunk) });
          if (size === 0) throw new ImageRejected('empty file (0 bytes)');
          const sha256 = hash.digest('hex');
          const dup = seen.get(sha256);
          if (dup !== undefined) throw new ImageRejected(`duplicate of ${dup}`);
          seen.set(sha256, candidate.displayPath);
          toDecode.push({ index, sha256, bytes: size });
        } catch (error) {
          if (error instanceof ReadAborted) break;
          reject(index, error);
        } finally {
          progress('reading', index + 1, scan.candidates.length, candidate);
        }
      }

      // Pass 2, concurrent: decode with sharp and stage the stored copies on disk.
      let decoded = 0;
      const decodeOne = async ({ index, sha256, bytes }: (typeof toDecode)[number]): Promise<void> => {
        const candidate = scan.candidates[index]!;
        try {
          const image = await processImage((await readRegularFile(candidate.absPath, { maxBytes: MAX_FILE_BYTES, signal })).data);
          const normalizedPath = join(staging, `${index}.png`);
          const thumbPath = join(staging, `${index}.webp`);
          await writeFile(normalizedPath, image.normalized);
          await writeFile(thumbPath, image.thumb);
          const { caption, source, note } = captionFor(scan, candidate);
          staged.push({
            index,
            relPath: candidate.displayPath,
            width: image.width,
            height: image.height,
            format: image.format,
            bytes,
            sha256,
            caption,
            captionSource: source,
            repeats: candidate.repeats,
            classTokens: candidate.classTokens,
            normalizedPath,
            thumbPath,
          });
          reports[index]!.status = 'imported';
          if (note) reports[index]!.note = note;
        } catch (error) {
          if (error instanceof ReadAborted) return;
          reject(index, error);
        } finally {
          progress('decoding', ++decoded, toDecode.length, candidate);
        }
      };

      let next = 0;
      const workers = Array.from({ length: Math.min(CONCURRENCY, toDecode.length) }, async () => {
        while (next < toDecode.length) {
          if (signal.aborted) return;
          await decodeOne(toDecode[next++]!);
        }
      });
      await Promise.all(workers);
      if (signal.aborted) throw cancelled('Import cancelled; nothing was added to the library.');

      staged.sort((a, b) => a.index - b.index);
      let datasetId: number | null = input.datasetId ?? null;
      if (staged.length > 0) {
        // One synchronous transaction: no other API call can interleave with it on this connection.
        datasetId = this.db_.transaction(() => {
          const id = datasetId ?? this.repo_.create(naming!.name, naming!.triggerWord, origin);
          if (input.datasetId !== undefined && input.triggerWord) this.repo_.update(id, { triggerWord: input.triggerWord });
          for (const s of staged) {
            const imageId = this.repo_.insertImage(id, { ...s, normalized: readFileSync(s.normalizedPath), thumb: readFileSync(s.thumbPath) });
            reports[s.index]!.imageId = imageId;
          }
          this.repo_.touch(id);
          return id;
        })();
        this.bus_.emit({ type: 'library.changed', what: 'datasets', id: datasetId });
      }
      const imported = staged.length;
      return { importId, datasetId, imported, skipped: reports.length - imported, files: reports, naming: imported > 0 ? naming : null };
    } finally {
      this.active_.delete(importId);
      await rm(staging, { recursive: true, force: true });
    }
  }
}

function isInside(path: string, folder: string): boolean {
  const rel = relative(folder, path);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}
