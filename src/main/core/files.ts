// Reading files a user (or a client of the studio server) pointed at. A shared folder can hold
// anything: a FIFO blocks open() forever, a device never ends, a symlink leads elsewhere, a
// "caption" can be 50 MB, and a stalled network drive never answers. So every read here
//   - opens with O_NONBLOCK (a FIFO opens at once instead of waiting for a writer) and, unless
//     told otherwise, O_NOFOLLOW (a final symlink fails with ELOOP instead of being followed);
//   - checks fstat on the opened descriptor (no gap between the check and the read) and accepts
//     regular files only;
//   - reads at most a byte cap, in chunks, each step racing a deadline and an abort signal.
// A step that loses the race leaves its libuv thread waiting on the OS, but the caller moves on:
// an import ends when cancelled, and the handle is closed if the step ever completes.
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Per step (open, stat, one chunk, one folder listing): a local disk answers in milliseconds. */
export const READ_TIMEOUT_MS = 30_000;
const CHUNK_BYTES = 1 << 20;

/** The file is not read; the message says why, for a person (e.g. "a named pipe (FIFO)"). */
export class FileRefused extends Error {}
/** The caller's signal aborted the read. */
export class ReadAborted extends Error {}

export interface ReadLimits {
  /** Bytes at most; a larger file is refused, or cut to this when `truncate`. */
  maxBytes: number;
  truncate?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Follow a final symlink (only for a file the user chose by name, never for one found in a folder). */
  followSymlink?: boolean;
  /** Receives the bytes chunk by chunk instead of collecting them (hashing a large file). */
  onChunk?: (chunk: Buffer) => void;
}

type KindOf = Pick<Stats, 'isDirectory' | 'isFIFO' | 'isSocket' | 'isCharacterDevice' | 'isBlockDevice' | 'isSymbolicLink'>;

/** What a non-regular file is, from its Stats or Dirent. */
export function describeFileKind(st: KindOf): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/** A person's words for an fs error code. */
export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOENT') return 'not found';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ELOOP') return 'a symbolic link — not followed';
  if (code === 'ENAMETOOLONG') return 'the path is too long';
  if (code === 'ENOTDIR') return 'a part of the path is not a folder';
  return `could not be read (${code ?? (error instanceof Error ? error.message : String(error))})`;
}

/**
 * Settles with `work`, or rejects with FileRefused after `timeoutMs` / ReadAborted when `signal`
 * aborts, whichever comes first. A result that arrives too late is handed to `release`.
 */
export function withDeadline<T>(work: Promise<T>, what: string, o: { timeoutMs?: number; signal?: AbortSignal; release?: (late: T) => void } = {}): Promise<T> {
  const timeoutMs = o.timeoutMs ?? READ_TIMEOUT_MS;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      if (settled) return;
      finish();
      reject(new ReadAborted(`${what}: cancelled`));
    };
    const timer = setTimeout(() => {
      if (settled) return;
      finish();
      reject(new FileRefused(`${what} took longer than ${Math.round(timeoutMs / 1000)} s (a stalled network drive?)`));
    }, timeoutMs);
    if (o.signal?.aborted) return onAbort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        if (settled) return o.release?.(value);
        finish();
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        finish();
        reject(error);
      },
    );
  });
}

const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

/**
 * Reads a regular file within the limits. Throws FileRefused (with the reason) for anything else
 * — missing, a link, a FIFO/device/socket/folder, too large, too slow — and ReadAborted on abort.
 */
export async function readRegularFile(path: string, limits: ReadLimits): Promise<{ data: Buffer; size: number; truncated: boolean }> {
  const flags = OPEN_FLAGS | (limits.followSymlink ? 0 : (constants.O_NOFOLLOW ?? 0));
  const step = <T>(work: Promise<T>, what: string, release?: (late: T) => void) => withDeadline(work, what, { timeoutMs: limits.timeoutMs, signal: limits.signal, release });
  let fh: FileHandle;
  try {
    fh = await step(open(path, flags), 'opening the file', (late) => void late.close().catch(() => {}));
  } catch (error) {
    if (error instanceof FileRefused || error instanceof ReadAborted) throw error;
    throw new FileRefused(describeFsError(error));
  }
  try {
    let st: Stats;
    try {
      st = await step(fh.stat(), 'reading the file’s size');
    } catch (error) {
      if (error instanceof FileRefused || error instanceof ReadAborted) throw error;
      throw new FileRefused(describeFsError(error));
    }
    if (!st.isFile()) throw new FileRefused(describeFileKind(st));
    if (st.size > limits.maxBytes && !limits.truncate) throw new FileRefused(`too large (${formatBytes(st.size)}; the limit is ${formatBytes(limits.maxBytes)})`);
    const want = Math.min(st.size, limits.maxBytes);
    const chunks: Buffer[] = [];
    let done = 0;
    while (done < want) {
      const buffer = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, want - done));
      let bytesRead: number;
      try {
        ({ bytesRead } = await step(fh.read(buffer, 0, buffer.length, done), 'reading the file'));
      } catch (error) {
        if (error instanceof FileRefused || error instanceof ReadAborted) throw error;
        throw new FileRefused(describeFsError(error));
      }
      if (bytesRead === 0) break; // shrank while we read: what is there is what we have
      const chunk = bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
      if (limits.onChunk) limits.onChunk(chunk);
      else chunks.push(chunk);
      done += bytesRead;
    }
    return { data: limits.onChunk ? Buffer.alloc(0) : Buffer.concat(chunks, done), size: st.size, truncated: st.size > done };
  } finally {
    void fh.close().catch(() => {});
  }
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} bytes`;
}
