// What a process killed mid-work leaves in the data folder: an import's staging folder (hundreds of
// MB), a converted or generated temp file, a cache file written but never committed to a row. Every
// such name carries its writer's pid (`import-<pid>-…`, `incoming-<pid>-…`, `<file>.tmp-<pid>-…`), so
// a starting core removes exactly those whose writer is gone, and leaves a live process's alone
// (the desktop app and the studio server may share one data folder).
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** `import-123-x`, `convert-123-…`, `engine-probe-123.safetensors`: the first number after a dash. */
const TEMP_NAME = /^[a-z][a-z-]*?-(\d+)(?=[-.]|$)/;
/** A writeSafetensors / sidecar temp beside its final name: `<name>.tmp-<pid>[-…]`. */
const TMP_SUFFIX = /\.tmp-(\d+)(?=-|$)/;
const INCOMING = /^incoming-(\d+)-/;
const CACHE_FILE = /^([0-9a-f]{64})\.safetensors$/;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export interface LeftoverFolders {
  /** `<data>/tmp`: staging and temp files named with their pid. */
  tmp: string;
  /** `<data>/cache/adapters`: content-addressed files, and their temps. */
  adapterCache: string;
  /** `<data>/exports`: only temps are touched. */
  exports: string;
}

/**
 * Removes the leftovers of dead processes; returns what it removed (paths) for the log.
 * `isCacheFileReferenced(sha256)` keeps a complete cache file some adapter row points at.
 */
export function removeLeftovers(folders: LeftoverFolders, isCacheFileReferenced: (sha256: string) => boolean): string[] {
  const removed: string[] = [];
  const remove = (path: string) => {
    try {
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Best effort: a file we cannot remove now is tried again at the next start.
    }
  };
  const deadWriter = (name: string, pattern: RegExp) => {
    const m = pattern.exec(name);
    return m !== null && !alive(Number(m[1]));
  };
  for (const name of list(folders.tmp)) if (deadWriter(name, TEMP_NAME) || deadWriter(name, TMP_SUFFIX)) remove(join(folders.tmp, name));
  for (const name of list(folders.adapterCache)) {
    const cached = CACHE_FILE.exec(name);
    // A cache file with no row is what a kill between writing it and committing the row leaves;
    // the cache is rebuilt from the rows whenever one is missing, so removing it loses nothing.
    if (cached ? !isCacheFileReferenced(cached[1]!) : deadWriter(name, INCOMING) || deadWriter(name, TMP_SUFFIX)) remove(join(folders.adapterCache, name));
  }
  for (const name of list(folders.exports)) if (deadWriter(name, TMP_SUFFIX)) remove(join(folders.exports, name));
  return removed;
}
