// Finding the files of an import: a recursive folder walk (or an explicit list), kohya folder
// conventions, caption sidecars. Nothing here decodes images; it only decides what to try.
import { lstat, readdir } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { homedir } from 'node:os';
import { MAX_CAPTION_CHARS } from '../../../shared/api';
import { badInput, notFound } from '../../../shared/errors';
import { FileRefused, ReadAborted, describeFileKind, describeFsError, formatBytes, readRegularFile, withDeadline } from '../files';

export const CAPTION_EXTENSIONS = ['.txt', '.caption'] as const;
export const MAX_IMPORT_FILES = 10_000;
const MAX_DEPTH = 32;
/** A caption is one line of tags; reading more than this of a sidecar can only be a mistake. */
const MAX_SIDECAR_READ_BYTES = 64 * 1024;

export interface Candidate {
  /** Absolute path of the file as found (never followed through a symlink). */
  absPath: string;
  /** Shown in reports: relative to the chosen folder, or the path as given for a file list. */
  displayPath: string;
  repeats: number;
  classTokens: string | null;
  /** Pre-judged rejection (symlink, escaping path); the file is reported but never opened. */
  rejected?: string;
}

export interface ScanResult {
  root: string | null;
  /** The chosen folder's name as the user knows it (an upload's staging folder is named by a random id). */
  rootName: string | null;
  candidates: Candidate[];
  /** Sidecar captions keyed by the image path without extension. */
  captions: Map<string, string>;
  /** What was done to a sidecar's text (cut to the caption limit), by the same key. */
  captionNotes: Map<string, string>;
}

/** kohya_ss: a folder named `N_name` means N repeats per epoch with class tokens "name". */
export function parseKohyaFolder(name: string): { repeats: number; classTokens: string } | null {
  const m = /^(\d+)_(.+)$/.exec(name);
  if (!m) return null;
  const repeats = Number(m[1]);
  const classTokens = m[2]!.replace(/_/g, ' ').trim();
  if (!Number.isSafeInteger(repeats) || repeats < 1 || repeats > 10_000 || !classTokens) return null;
  return { repeats, classTokens };
}

export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/') || path.startsWith(`~${sep}`)) return join(homedir(), path.slice(2));
  return path;
}

function captionKey(absPath: string): string {
  return join(dirname(absPath), basename(absPath, extname(absPath)));
}

function isHidden(name: string): boolean {
  return name.startsWith('.');
}

type Sidecar = { text: string; note?: string } | { refused: string } | null;

/**
 * A caption sidecar: a regular file only (never through a symlink, never a FIFO or device), read
 * within a byte cap and a time limit, and cut to the caption limit. null when there is none.
 */
async function readCaption(path: string, signal?: AbortSignal): Promise<Sidecar> {
  let read;
  try {
    read = await readRegularFile(path, { maxBytes: MAX_SIDECAR_READ_BYTES, truncate: true, signal });
  } catch (error) {
    if (error instanceof ReadAborted) throw error;
    const reason = error instanceof FileRefused ? error.message : describeFsError(error);
    return reason === 'not found' ? null : { refused: `caption sidecar not read: ${reason}` };
  }
  // Sidecars are often written by taggers with trailing newlines or CRLF; one line is meant.
  const text = read.data
    .toString('utf8')
    .replace(/\r\n?/g, '\n')
    .trim()
    .replace(/\s*\n\s*/g, ', ');
  if (text.length <= MAX_CAPTION_CHARS && !read.truncated) return { text };
  return { text: cutCaption(text), note: `caption cut to the ${MAX_CAPTION_CHARS}-character limit (the sidecar has ${formatBytes(read.size)})` };
}

/** The caption limit, at the last tag boundary when there is one in the second half, never inside a surrogate pair. */
function cutCaption(text: string): string {
  let cut = text.slice(0, MAX_CAPTION_CHARS);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  const comma = cut.lastIndexOf(',');
  return (comma > MAX_CAPTION_CHARS / 2 ? cut.slice(0, comma) : cut).trim();
}

/** `rootName`: the folder's real name when `folder` is a staging copy of it (browser uploads). */
export async function scanFolder(folder: string, signal?: AbortSignal, rootName?: string): Promise<ScanResult> {
  const root = resolve(expandHome(folder));
  if (!isAbsolute(expandHome(folder))) {
    throw badInput(`The folder path must be absolute (for example /home/me/art or ~/art); got "${folder}".`);
  }
  let rootStat;
  try {
    rootStat = await withDeadline(lstat(root), 'looking at the folder', { signal });
  } catch (error) {
    if (error instanceof ReadAborted) throw error;
    if (error instanceof FileRefused) throw badInput(`"${root}": ${error.message}`);
    throw notFound(`Folder not found: ${root}`);
  }
  if (rootStat.isSymbolicLink()) throw badInput(`"${root}" is a symbolic link; choose the folder it points to instead.`);
  if (!rootStat.isDirectory()) throw badInput(`"${root}" is not a folder.`);

  const name = rootName ?? basename(root);
  const scan = emptyScan(root, name);
  const { candidates } = scan;
  const rootKohya = parseKohyaFolder(name);

  async function walk(dir: string, depth: number, kohya: { repeats: number; classTokens: string } | null): Promise<void> {
    const relDir = relative(root, dir);
    if (depth > MAX_DEPTH) {
      candidates.push({ absPath: dir, displayPath: `${relDir}${sep}`, repeats: 1, classTokens: null, rejected: `folder nested deeper than ${MAX_DEPTH} levels — skipped` });
      return;
    }
    let entries;
    try {
      entries = await withDeadline(readdir(dir, { withFileTypes: true }), 'listing the folder', { signal });
    } catch (error) {
      if (error instanceof ReadAborted) throw error;
      // The chosen folder itself must be readable; a subfolder that is not is skipped, with its reason.
      const reason = error instanceof FileRefused ? error.message : describeFsError(error);
      if (depth === 0) throw badInput(`Cannot read the folder "${root}": ${reason}.`);
      candidates.push({ absPath: dir, displayPath: `${relDir}${sep}`, repeats: 1, classTokens: null, rejected: `folder not read (${reason}) — skipped with everything in it` });
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (isHidden(entry.name)) continue;
      const abs = join(dir, entry.name);
      const rel = relative(root, abs);
      if (rel.startsWith('..') || isAbsolute(rel)) continue;
      if (entry.isSymbolicLink()) {
        candidates.push({ absPath: abs, displayPath: rel, repeats: 1, classTokens: null, rejected: 'symbolic link — not followed, it could point outside the chosen folder' });
        continue;
      }
      if (entry.isDirectory()) {
        await walk(abs, depth + 1, parseKohyaFolder(entry.name) ?? kohya);
        continue;
      }
      if (!entry.isFile()) {
        candidates.push({ absPath: abs, displayPath: rel, repeats: 1, classTokens: null, rejected: `${describeFileKind(entry)}, not a regular file — not read` });
        continue;
      }
      const ext = extname(entry.name).toLowerCase();
      if ((CAPTION_EXTENSIONS as readonly string[]).includes(ext)) {
        // .txt wins over .caption when both exist (the more common kohya/OneTrainer choice).
        if (ext === '.txt' || !scan.captions.has(captionKey(abs))) await takeSidecar(scan, abs, rel, signal);
        continue;
      }
      candidates.push({ absPath: abs, displayPath: rel, repeats: kohya?.repeats ?? 1, classTokens: kohya?.classTokens ?? null });
      if (candidates.length > MAX_IMPORT_FILES) {
        throw badInput(`The folder has more than ${MAX_IMPORT_FILES} files; import a smaller folder.`);
      }
    }
  }
  await walk(root, 0, rootKohya);
  return scan;
}

function emptyScan(root: string | null, rootName: string | null = null): ScanResult {
  return { root, rootName, candidates: [], captions: new Map(), captionNotes: new Map() };
}

/** Reads one sidecar into the scan; one that cannot be read is reported as a skipped file. */
async function takeSidecar(scan: ScanResult, path: string, displayPath: string, signal?: AbortSignal): Promise<void> {
  const sidecar = await readCaption(path, signal);
  if (sidecar === null) return;
  if ('refused' in sidecar) {
    scan.candidates.push({ absPath: path, displayPath, repeats: 1, classTokens: null, rejected: sidecar.refused });
    return;
  }
  const key = captionKey(path);
  scan.captions.set(key, sidecar.text);
  if (sidecar.note) scan.captionNotes.set(key, sidecar.note);
  else scan.captionNotes.delete(key);
}

export async function scanFiles(paths: readonly string[], signal?: AbortSignal): Promise<ScanResult> {
  const scan = emptyScan(null);
  const { candidates } = scan;
  const seen = new Set<string>();
  for (const given of paths) {
    const expanded = expandHome(given);
    if (!isAbsolute(expanded)) {
      candidates.push({ absPath: expanded, displayPath: given, repeats: 1, classTokens: null, rejected: 'path is not absolute' });
      continue;
    }
    const abs = resolve(expanded);
    if (seen.has(abs)) continue;
    seen.add(abs);
    let st;
    try {
      st = await withDeadline(lstat(abs), 'looking at the file', { signal });
    } catch (error) {
      if (error instanceof ReadAborted) throw error;
      candidates.push({ absPath: abs, displayPath: given, repeats: 1, classTokens: null, rejected: error instanceof FileRefused ? error.message : 'file not found' });
      continue;
    }
    if (st.isSymbolicLink()) {
      candidates.push({ absPath: abs, displayPath: given, repeats: 1, classTokens: null, rejected: 'symbolic link — not followed' });
      continue;
    }
    if (!st.isFile()) {
      candidates.push({
        absPath: abs,
        displayPath: given,
        repeats: 1,
        classTokens: null,
        rejected: st.isDirectory() ? 'is a folder — import folders with the folder option' : `${describeFileKind(st)}, not a regular file — not read`,
      });
      continue;
    }
    const ext = extname(abs).toLowerCase();
    if ((CAPTION_EXTENSIONS as readonly string[]).includes(ext)) continue;
    const kohya = parseKohyaFolder(basename(dirname(abs)));
    candidates.push({ absPath: abs, displayPath: given, repeats: kohya?.repeats ?? 1, classTokens: kohya?.classTokens ?? null });
    // A dropped image brings its sidecar along when it sits next to it (.txt wins over .caption),
    // under the same rules as in a folder: a regular file, never followed through a link.
    for (const capExt of [...CAPTION_EXTENSIONS].reverse()) {
      const sidecarPath = captionKey(abs) + capExt;
      await takeSidecar(scan, sidecarPath, join(dirname(given), basename(sidecarPath)), signal);
    }
  }
  return scan;
}

export function captionFor(scan: ScanResult, candidate: Candidate): { caption: string; source: 'sidecar' | 'folder' | 'none'; note?: string } {
  const key = captionKey(candidate.absPath);
  const sidecar = scan.captions.get(key);
  const note = scan.captionNotes.get(key);
  if (sidecar !== undefined) return note ? { caption: sidecar, source: 'sidecar', note } : { caption: sidecar, source: 'sidecar' };
  if (candidate.classTokens) return { caption: candidate.classTokens, source: 'folder' };
  return { caption: '', source: 'none' };
}

export interface DatasetNaming {
  name: string;
  triggerWord: string | null;
  /** The kohya folder the name and trigger came from, when they did. */
  kohyaFolder: string | null;
}

/**
 * A new dataset's name and trigger word. What the user typed wins. Otherwise, when every image sits in one kohya
 * `N_<class words>` folder, the class words name the dataset (the repeat count is a training setting, not part of
 * the name) and are the suggested trigger word, as kohya's class tokens are; else the folder's own name.
 */
export function datasetNaming(scan: ScanResult, given: { name?: string; triggerWord?: string }, folderName: string | null): DatasetNaming {
  const found = scan.candidates.filter((c) => !c.rejected).map((c) => kohyaFolderOf(scan, c));
  const folders = [...new Set(found)];
  const kohyaFolder = found.length > 0 && folders.length === 1 ? folders[0]! : null;
  const classWords = kohyaFolder !== null ? parseKohyaFolder(kohyaFolder)!.classTokens : null;
  return {
    name: given.name || classWords || folderName || `Imported images ${new Date().toISOString().slice(0, 10)}`,
    triggerWord: given.triggerWord || classWords,
    kohyaFolder: given.name && given.triggerWord ? null : kohyaFolder,
  };
}

/** The nearest enclosing `N_name` folder that gave a candidate its class words (null: none did). */
function kohyaFolderOf(scan: ScanResult, c: Candidate): string | null {
  if (!c.classTokens) return null;
  for (let dir = dirname(c.absPath); ; dir = dirname(dir)) {
    if (dir === scan.root) return scan.rootName !== null && parseKohyaFolder(scan.rootName) ? scan.rootName : null;
    if (parseKohyaFolder(basename(dir))) return basename(dir);
    if (dirname(dir) === dir) return null;
  }
}
