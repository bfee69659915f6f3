// Finding the files of an import: a recursive folder walk (or an explicit list), kohya folder
// conventions, caption sidecars. Nothing here decodes images; it only decides what to try.
import { lstat, readdir, readFile } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { homedir } from 'node:os';
import { badInput, notFound } from '../../../shared/errors';

export const CAPTION_EXTENSIONS = ['.txt', '.caption'] as const;
export const MAX_IMPORT_FILES = 10_000;
const MAX_DEPTH = 32;

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

async function readCaption(path: string): Promise<string | null> {
  try {
    const text = await readFile(path, 'utf8');
    // Sidecars are often written by taggers with trailing newlines or CRLF; one line is meant.
    return text.replace(/\r\n?/g, '\n').trim().replace(/\s*\n\s*/g, ', ');
  } catch {
    return null;
  }
}

/** `rootName`: the folder's real name when `folder` is a staging copy of it (browser uploads). */
export async function scanFolder(folder: string, rootName?: string): Promise<ScanResult> {
  const root = resolve(expandHome(folder));
  if (!isAbsolute(expandHome(folder))) {
    throw badInput(`The folder path must be absolute (for example /home/me/art or ~/art); got "${folder}".`);
  }
  let rootStat;
  try {
    rootStat = await lstat(root);
  } catch {
    throw notFound(`Folder not found: ${root}`);
  }
  if (rootStat.isSymbolicLink()) throw badInput(`"${root}" is a symbolic link; choose the folder it points to instead.`);
  if (!rootStat.isDirectory()) throw badInput(`"${root}" is not a folder.`);

  const candidates: Candidate[] = [];
  const captions = new Map<string, string>();
  const name = rootName ?? basename(root);
  const rootKohya = parseKohyaFolder(name);

  async function walk(dir: string, depth: number, kohya: { repeats: number; classTokens: string } | null): Promise<void> {
    if (depth > MAX_DEPTH) return;
    const entries = await readdir(dir, { withFileTypes: true });
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
        candidates.push({ absPath: abs, displayPath: rel, repeats: 1, classTokens: null, rejected: 'not a regular file' });
        continue;
      }
      const ext = extname(entry.name).toLowerCase();
      if ((CAPTION_EXTENSIONS as readonly string[]).includes(ext)) {
        const key = captionKey(abs);
        // .txt wins over .caption when both exist (the more common kohya/OneTrainer choice).
        if (ext === '.txt' || !captions.has(key)) {
          const text = await readCaption(abs);
          if (text !== null) captions.set(key, text);
        }
        continue;
      }
      candidates.push({ absPath: abs, displayPath: rel, repeats: kohya?.repeats ?? 1, classTokens: kohya?.classTokens ?? null });
      if (candidates.length > MAX_IMPORT_FILES) {
        throw badInput(`The folder has more than ${MAX_IMPORT_FILES} files; import a smaller folder.`);
      }
    }
  }
  await walk(root, 0, rootKohya);
  return { root, rootName: name, candidates, captions };
}

export async function scanFiles(paths: readonly string[]): Promise<ScanResult> {
  const candidates: Candidate[] = [];
  const captions = new Map<string, string>();
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
      st = await lstat(abs);
    } catch {
      candidates.push({ absPath: abs, displayPath: given, repeats: 1, classTokens: null, rejected: 'file not found' });
      continue;
    }
    if (st.isSymbolicLink()) {
      candidates.push({ absPath: abs, displayPath: given, repeats: 1, classTokens: null, rejected: 'symbolic link — not followed' });
      continue;
    }
    if (!st.isFile()) {
      candidates.push({ absPath: abs, displayPath: given, repeats: 1, classTokens: null, rejected: st.isDirectory() ? 'is a folder — import folders with the folder option' : 'not a regular file' });
      continue;
    }
    const ext = extname(abs).toLowerCase();
    if ((CAPTION_EXTENSIONS as readonly string[]).includes(ext)) continue;
    const kohya = parseKohyaFolder(basename(dirname(abs)));
    candidates.push({ absPath: abs, displayPath: given, repeats: kohya?.repeats ?? 1, classTokens: kohya?.classTokens ?? null });
    // A dropped image brings its sidecar along when it sits next to it.
    for (const capExt of [...CAPTION_EXTENSIONS].reverse()) {
      const text = await readCaption(captionKey(abs) + capExt);
      if (text !== null) captions.set(captionKey(abs), text);
    }
  }
  return { root: null, rootName: null, candidates, captions };
}

export function captionFor(scan: ScanResult, candidate: Candidate): { caption: string; source: 'sidecar' | 'folder' | 'none' } {
  const sidecar = scan.captions.get(captionKey(candidate.absPath));
  if (sidecar !== undefined) return { caption: sidecar, source: 'sidecar' };
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
