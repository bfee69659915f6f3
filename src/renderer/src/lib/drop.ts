// Turning a drop or a file <input> into a flat list of files with relative paths, the way the
// import expects a folder: a single dropped folder contributes its *contents* (so kohya `5_cat/`
// subfolders stay at the top level), several dropped things keep their own names.
import type { PickedFile } from './transport';

export interface Picked {
  files: PickedFile[];
  /** The folder's name when exactly one folder was picked: a good default dataset name. */
  folderName: string | null;
}

/** Finder and Explorer litter folders with these; they are never training images. */
function isJunk(name: string): boolean {
  return name.startsWith('.') || name === 'Thumbs.db' || name === 'desktop.ini';
}

function readAll(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  // readEntries returns at most ~100 entries per call; keep asking until it returns none.
  return new Promise((resolve, reject) => {
    const all: FileSystemEntry[] = [];
    const next = () =>
      reader.readEntries((batch) => {
        if (batch.length === 0) resolve(all);
        else {
          all.push(...batch);
          next();
        }
      }, reject);
    next();
  });
}

function fileOf(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

async function walk(entry: FileSystemEntry, prefix: string, out: PickedFile[]): Promise<void> {
  if (isJunk(entry.name)) return;
  if (entry.isFile) {
    out.push({ file: await fileOf(entry as FileSystemFileEntry), relativePath: prefix + entry.name });
  } else if (entry.isDirectory) {
    const children = await readAll((entry as FileSystemDirectoryEntry).createReader());
    for (const child of children) await walk(child, `${prefix}${entry.name}/`, out);
  }
}

/** Entries must be taken synchronously inside the drop handler; the DataTransfer empties afterwards. */
export function entriesOf(transfer: DataTransfer): { entries: FileSystemEntry[]; files: File[] } {
  const entries: FileSystemEntry[] = [];
  for (const item of transfer.items) {
    const entry = item.kind === 'file' ? item.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
  }
  return { entries, files: [...transfer.files] };
}

export async function pickedFromEntries(entries: FileSystemEntry[]): Promise<Picked> {
  const files: PickedFile[] = [];
  if (entries.length === 1 && entries[0].isDirectory) {
    const children = await readAll((entries[0] as FileSystemDirectoryEntry).createReader());
    for (const child of children) await walk(child, '', files);
    return { files, folderName: entries[0].name };
  }
  for (const entry of entries) await walk(entry, '', files);
  return { files, folderName: null };
}

/** From `<input type="file">` (with or without `webkitdirectory`) or a drop without entries. */
export function pickedFromFiles(list: File[]): Picked {
  const files: PickedFile[] = [];
  let folderName: string | null = null;
  for (const file of list) {
    const rel = file.webkitRelativePath;
    if (rel) {
      // A directory input always reports paths under the one chosen folder: drop that first segment.
      const slash = rel.indexOf('/');
      folderName ??= rel.slice(0, slash);
      const inner = rel.slice(slash + 1);
      if (inner.split('/').some(isJunk)) continue;
      files.push({ file, relativePath: inner });
    } else if (!isJunk(file.name)) {
      files.push({ file, relativePath: file.name });
    }
  }
  return { files, folderName };
}
