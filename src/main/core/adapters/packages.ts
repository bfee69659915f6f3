// Exported packages: the canonical adapter file with its description beside it (`<name>.safetensors` +
// `<name>.shira.json`: name, trigger words, tags, notes, weight, base model, SHA-256 and AutoV2), and imports of
// packages or bare files (ours, PEFT-layout SHiRA, LoRA), validated whole before one transaction stores them.
import { closeSync, constants, existsSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { AdapterKind, AdapterSummary } from '../../../shared/api';
import { ExpectedError, badInput, conflict } from '../../../shared/errors';
import { ALPHA } from '../../../shared/ranges';
import type { Db } from '../db/database';
import { describeFileKind, describeFsError, formatBytes } from '../files';
import type { AdapterFileCache } from './cache';
import { autoV2, baseWeightShapes, checkAgainstBase, contentHash, fileSha256, readAdapterFile, trainableCount, writeAdapterFile, type AdapterContent } from './format';
import type { AdapterLibrary } from './library';

const MAX_SIDECAR_BYTES = 1024 * 1024;

/** The JSON half of an exported package (`<name>.shira.json` beside `<name>.safetensors`). */
export interface PackageSidecar {
  format: 'shira-studio-package';
  version: 1;
  name: string;
  kind: AdapterKind;
  method: Record<string, unknown>;
  triggerWords: string[];
  tags: string[];
  notes: string;
  preferredWeight: number;
  baseModel: { name: string; weightsHash: string | null };
  fileSha256: string;
  autoV2: string;
  contentHash: string;
  trainable: number;
}

export class AdapterPackages {
  constructor(
    private readonly db: Db,
    private readonly library: AdapterLibrary,
    private readonly cache: AdapterFileCache,
  ) {}

  /** Writes `<dir>/<slug>.safetensors` and `<dir>/<slug>.shira.json`; never overwrites. */
  export(id: number, dir: string): { file: string; sidecar: string; sha256: string; autoV2: string } {
    mkdirSync(dir, { recursive: true });
    const slug = this.stem(id);
    let stem = join(dir, slug);
    for (let n = 2; existsSync(`${stem}.safetensors`) || existsSync(`${stem}.shira.json`); n++) stem = join(dir, `${slug}-${n}`);
    const file = `${stem}.safetensors`;
    const sidecar = `${stem}.shira.json`;
    const content = this.library.content(id);
    writeAdapterFile(file, content);
    const sha256 = fileSha256(file);
    const tmp = `${sidecar}.tmp-${process.pid}`;
    writeFileSync(tmp, packageSidecarText(this.describePackage(id, sha256, content)));
    renameSync(tmp, sidecar);
    return { file, sidecar, sha256, autoV2: autoV2(sha256) };
  }

  /**
   * A package for a download (the studio server hands files to the browser instead of writing
   * them on the server): the canonical file is the cache copy, byte for byte what export writes.
   */
  parts(id: number): { stem: string; file: string; sidecarText: string } {
    const stem = this.stem(id);
    const { path, sha256 } = this.library.cacheFile(id);
    return { stem, file: path, sidecarText: packageSidecarText(this.describePackage(id, sha256, this.library.content(id))) };
  }

  private stem(id: number): string {
    return slugify(this.library.summary(id).name) || `adapter-${id}`;
  }

  private describePackage(id: number, sha256: string, content: AdapterContent): PackageSidecar {
    const s = this.library.summary(id);
    return {
      format: 'shira-studio-package',
      version: 1,
      name: s.name,
      kind: s.kind,
      method: s.method,
      triggerWords: s.triggerWords,
      tags: s.tags,
      notes: s.notes,
      preferredWeight: s.preferredWeight,
      baseModel: { name: s.baseModelName ?? '', weightsHash: s.baseWeightsHash },
      fileSha256: sha256,
      autoV2: autoV2(sha256),
      contentHash: contentHash(content),
      trainable: trainableCount(content),
    };
  }

  /**
   * Validates a package (or a bare adapter file) completely before storing anything: container,
   * every layer against the base model's shapes, the sidecar's hash against the file, then an
   * optional deep check (`verify`, the worker decoding every index), then one transaction.
   */
  async import(path: string, o: { name?: string; baseModelId?: number; convert?: (src: string) => Promise<string>; verify?: (canonicalFile: string) => Promise<void> }): Promise<AdapterSummary> {
    const label = basename(path);
    if (!/\.safetensors$/i.test(path)) throw badInput(`${label}: choose the .safetensors file of the package.`);
    if (!existsSync(path)) throw badInput(`${label}: the file does not exist.`);
    const st = statSync(path);
    if (!st.isFile()) throw badInput(`${label} is ${describeFileKind(st)}, not an adapter file.`);
    const sidecarPath = path.replace(/\.safetensors$/i, '.shira.json');
    const sidecar = readSidecar(sidecarPath);
    if (sidecar && sidecar.fileSha256 !== fileSha256(path)) {
      throw badInput(`${label}: the file does not match ${basename(sidecarPath)} (its SHA-256 differs); the package is damaged or mixed up.`);
    }
    let content: AdapterContent;
    try {
      content = readAdapterFile(path, label);
    } catch (error) {
      // Not our format: a PEFT-layout SHiRA or LoRA file is converted by the worker, then checked the same way.
      if (!o.convert || !/not a Shira Studio adapter/.test((error as Error).message)) throw error;
      content = readAdapterFile(await o.convert(path), label);
    }
    const base = this.pickBase(content, o.baseModelId, label);
    if (base.weights_path && existsSync(base.weights_path)) checkAgainstBase(content, baseWeightShapes(base.weights_path), label, base.name);
    const stamped = { ...content, baseIdentity: base.weights_hash ?? content.baseIdentity };
    const hash = contentHash(stamped);
    const same = this.db.prepare('SELECT name FROM adapters WHERE content_hash = ? LIMIT 1').get(hash) as { name: string } | undefined;
    if (same) throw conflict(`${label} is already in the library as "${same.name}".`);
    if (o.verify) await o.verify(this.cache.write(stamped).path);
    const id = this.library.insert(stamped, {
      name: o.name ?? sidecar?.name ?? label.replace(/\.safetensors$/i, ''),
      baseModelId: base.id,
      triggerWords: sidecar?.triggerWords,
      tags: sidecar?.tags,
      notes: sidecar?.notes,
      preferredWeight: sidecar?.preferredWeight,
    });
    return this.library.summary(id);
  }

  private pickBase(content: AdapterContent, requested: number | undefined, label: string) {
    type Base = { id: number; name: string; weights_path: string | null; weights_hash: string | null };
    if (content.baseIdentity) {
      const b = this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE weights_hash = ?').get(content.baseIdentity) as Base | undefined;
      if (!b) throw badInput(`${label} was trained on a base model this library does not have (weights ${content.baseIdentity.slice(0, 12)}…); add that model first.`);
      if (requested !== undefined && requested !== b.id) throw badInput(`${label} was trained on "${b.name}", not on the base model you chose.`);
      return b;
    }
    const b = (
      requested !== undefined
        ? this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE id = ?').get(requested)
        : this.db.prepare('SELECT id, name, weights_path, weights_hash FROM base_models WHERE is_default = 1').get()
    ) as Base | undefined;
    if (!b) throw badInput(`${label} does not say which base model it belongs to, and ${requested === undefined ? 'there is no default base model' : `base model ${requested} does not exist`}.`);
    return b;
  }
}

function slugify(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/[^\w\s-]/g, '')
    .trim()
    .replace(/[\s_]+/g, '-')
    .slice(0, 80);
}

const packageSidecarText = (meta: PackageSidecar) => `${JSON.stringify(meta, null, 2)}\n`;

/** The package's description beside the file, or null when there is none. */
function readSidecar(path: string): PackageSidecar | null {
  const label = basename(path);
  let text: string;
  try {
    // A regular file only, never through a symlink, and small: a FIFO here would block the core's thread forever.
    const fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOFOLLOW ?? 0));
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw badInput(`${label} is ${describeFileKind(st)}, not a package description; remove it or put the real one there.`);
      if (st.size > MAX_SIDECAR_BYTES) throw badInput(`${label} is ${formatBytes(st.size)}; a package description is a few KiB (limit ${formatBytes(MAX_SIDECAR_BYTES)}).`);
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if (error instanceof ExpectedError) throw error;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw badInput(`${label}: ${describeFsError(error)}.`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw badInput(`${label} is not valid JSON.`);
  }
  const s = raw as Partial<PackageSidecar>;
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string' && x.length <= 200) && v.length <= 100;
  if (
    typeof raw !== 'object' ||
    raw === null ||
    s.format !== 'shira-studio-package' ||
    typeof s.name !== 'string' ||
    s.name.trim().length === 0 ||
    s.name.length > 200 ||
    typeof s.fileSha256 !== 'string' ||
    !/^[0-9a-f]{64}$/.test(s.fileSha256) ||
    (s.triggerWords !== undefined && !strings(s.triggerWords)) ||
    (s.tags !== undefined && !strings(s.tags)) ||
    (s.notes !== undefined && (typeof s.notes !== 'string' || s.notes.length > 20_000)) ||
    (s.preferredWeight !== undefined && (typeof s.preferredWeight !== 'number' || !(s.preferredWeight >= ALPHA.min && s.preferredWeight <= ALPHA.max)))
  ) {
    throw badInput(`${label} is not a Shira Studio package description (format, name, fileSha256, tags, trigger words or weight are missing or wrong).`);
  }
  return s as PackageSidecar;
}
