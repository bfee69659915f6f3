// The renderer's only way to the core. Chosen once at start: the Electron preload bridge when the
// page runs inside the desktop app, otherwise a WebSocket to the studio server that served the page.
// Everything above this file sees one typed client and never asks which host it is on, except for
// the file-picking differences collected in `HostFiles`.
import type { CoreEvent, InputOf, MediaKind, MethodName, ResultOf } from '../../../shared/api';
import type { CallOutcome, ShiraBridge } from '../../../shared/bridge';
import { SERVER_PATHS } from '../../../shared/bridge';
import { ApiCallError, type ApiError } from '../../../shared/errors';
import type { CallMessage, ServerMessage } from '../../../shared/protocol';
import { mediaPath } from '../../../shared/protocol';

export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting';
export type HostFlavour = 'electron' | 'browser';
export type ImportSource = InputOf<'datasets.import'>['source'];

/** A file the user picked or dropped, with its path relative to what they picked (a folder, or nothing). */
export interface PickedFile {
  file: File;
  relativePath: string;
}

export interface HostFiles {
  /** Electron can open a native folder dialog; a browser can only upload what the user hands it. */
  readonly canPickFolder: boolean;
  pickFolder(): Promise<string | null>;
  /** Where a dropped folder lives on disk, when the host can tell (Electron can, a browser cannot). */
  folderPath(folder: File): string | null;
  /**
   * Turns picked or dropped files into something `datasets.import` can read. In Electron that is the
   * files' own paths; in a browser the bytes have to be uploaded into a server staging folder first.
   */
  sourceFor(files: PickedFile[], onProgress: (done: number, total: number) => void, signal: AbortSignal): Promise<ImportSource>;
  /**
   * Where exports go: into a folder the user picks (Electron), or to the browser's downloads — the
   * studio server never writes files where a page tells it to.
   */
  readonly exportsTo: 'folder' | 'download';
  /** Starts a browser download of a studio-server path (`SERVER_PATHS.download…`); nothing in Electron. */
  download(path: string): void;
}

interface Transport {
  readonly flavour: HostFlavour;
  readonly files: HostFiles;
  call(method: string, input: unknown): Promise<CallOutcome>;
  onEvent(listener: (event: CoreEvent) => void): () => void;
  onStatus(listener: (status: ConnectionStatus) => void): () => void;
  mediaUrl(kind: MediaKind, id: number): string;
}

const lostConnection: ApiError = {
  type: 'internal',
  message: 'The connection to the studio server dropped before it answered. It may or may not have finished; check, then try again.',
};

function internal(message: string): ApiError {
  return { type: 'internal', message };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---- Electron: the preload bridge ----

class BridgeTransport implements Transport {
  readonly flavour = 'electron' as const;
  readonly files: HostFiles;
  readonly #bridge: ShiraBridge;

  constructor(bridge: ShiraBridge) {
    this.#bridge = bridge;
    this.files = {
      canPickFolder: true,
      pickFolder: () => bridge.pickFolder(),
      folderPath: (folder) => bridge.pathsForFiles([folder])[0] || null,
      sourceFor: async (files) => {
        const paths = bridge.pathsForFiles(files.map((f) => f.file)).filter((p) => p !== '');
        if (paths.length === 0) throw new ApiCallError({ type: 'bad_input', message: 'Those files have no location on disk, so they cannot be imported.' });
        return { kind: 'files', paths };
      },
      exportsTo: 'folder',
      download: () => {},
    };
  }

  async call(method: string, input: unknown): Promise<CallOutcome> {
    try {
      return await this.#bridge.call(method, input);
    } catch (error) {
      // The bridge itself failed (the core process died, say): still answer as tagged data.
      return { ok: false, error: internal(errorText(error)) };
    }
  }

  onEvent(listener: (event: CoreEvent) => void): () => void {
    return this.#bridge.onEvent(listener);
  }

  onStatus(listener: (status: ConnectionStatus) => void): () => void {
    listener('open');
    return () => {};
  }

  mediaUrl(kind: MediaKind, id: number): string {
    return this.#bridge.mediaUrl(kind, id);
  }
}

// ---- Browser: WebSocket to the studio server ----

const RECONNECT_MIN_MS = 400;
const RECONNECT_MAX_MS = 8_000;

class SocketTransport implements Transport {
  readonly flavour = 'browser' as const;
  readonly files: HostFiles = {
    canPickFolder: false,
    pickFolder: async () => null,
    folderPath: () => null,
    sourceFor: (files, onProgress, signal) => uploadToServer(files, onProgress, signal),
    exportsTo: 'download',
    download: (path) => {
      const link = document.createElement('a');
      link.href = path;
      link.download = ''; // the server's Content-Disposition names the file
      document.body.append(link);
      link.click();
      link.remove();
    },
  };

  readonly #url: string;
  #socket: WebSocket | null = null;
  #nextId = 1;
  #status: ConnectionStatus = 'connecting';
  #failures = 0;
  /** Calls sent and not yet answered. */
  readonly #pending = new Map<number, (outcome: CallOutcome) => void>();
  /** Calls made while the socket was down; sent as soon as it opens. */
  #queued: CallMessage[] = [];
  readonly #eventListeners = new Set<(event: CoreEvent) => void>();
  readonly #statusListeners = new Set<(status: ConnectionStatus) => void>();

  constructor(url: string) {
    this.#url = url;
    this.#connect();
  }

  call(method: string, input: unknown): Promise<CallOutcome> {
    const message: CallMessage = { kind: 'call', id: this.#nextId++, method, input };
    return new Promise((resolve) => {
      this.#pending.set(message.id, resolve);
      if (this.#status === 'open' && this.#socket) this.#socket.send(JSON.stringify(message));
      else this.#queued.push(message);
    });
  }

  onEvent(listener: (event: CoreEvent) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  onStatus(listener: (status: ConnectionStatus) => void): () => void {
    this.#statusListeners.add(listener);
    listener(this.#status);
    return () => this.#statusListeners.delete(listener);
  }

  mediaUrl(kind: MediaKind, id: number): string {
    return SERVER_PATHS.media + mediaPath(kind, id);
  }

  /** Repeats 'reconnecting' once per failed attempt, so the UI can tell a blip from an outage. */
  #setStatus(status: ConnectionStatus): void {
    if (status === this.#status && status !== 'reconnecting') return;
    this.#status = status;
    for (const listener of this.#statusListeners) listener(status);
  }

  #connect(): void {
    const socket = new WebSocket(this.#url);
    this.#socket = socket;
    socket.onopen = () => {
      this.#failures = 0;
      this.#setStatus('open');
      const queued = this.#queued;
      this.#queued = [];
      for (const message of queued) socket.send(JSON.stringify(message));
    };
    socket.onmessage = (event) => {
      if (typeof event.data === 'string') this.#receive(event.data);
    };
    // `error` is always followed by `close`, which is where recovery happens.
    socket.onclose = () => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      // An answer to an in-flight call may never come; its caller must not wait forever.
      const pending = [...this.#pending.entries()].filter(([id]) => !this.#queued.some((m) => m.id === id));
      for (const [id, resolve] of pending) {
        this.#pending.delete(id);
        resolve({ ok: false, error: lostConnection });
      }
      this.#setStatus('reconnecting');
      const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.#failures);
      this.#failures++;
      // Jitter keeps several open tabs from hammering a restarting server in lockstep.
      setTimeout(() => this.#connect(), backoff * (0.75 + Math.random() * 0.5));
    };
  }

  #receive(text: string): void {
    let message: ServerMessage;
    try {
      message = JSON.parse(text) as ServerMessage;
    } catch {
      return;
    }
    if (message.kind === 'event') {
      for (const listener of this.#eventListeners) listener(message.event);
    } else if (message.kind === 'result') {
      const resolve = this.#pending.get(message.id);
      if (!resolve) return;
      this.#pending.delete(message.id);
      resolve(message.ok ? { ok: true, value: message.value } : { ok: false, error: message.error });
    }
  }
}

/** Uploads files one by one into a fresh server staging folder and returns that folder as the source. */
async function uploadToServer(files: PickedFile[], onProgress: (done: number, total: number) => void, signal: AbortSignal): Promise<ImportSource> {
  const uploadId = newId();
  let folder: string | null = null;
  onProgress(0, files.length);
  for (const [index, { file, relativePath }] of files.entries()) {
    const url = `${SERVER_PATHS.upload}${encodeURIComponent(uploadId)}?path=${encodeURIComponent(relativePath)}`;
    let response: Response;
    try {
      response = await fetch(url, { method: 'POST', body: file, signal, credentials: 'same-origin' });
    } catch (error) {
      if (signal.aborted) throw new ApiCallError({ type: 'cancelled', message: 'Upload cancelled.' });
      throw new ApiCallError(internal(`Could not upload ${relativePath}: ${errorText(error)}`));
    }
    if (!response.ok) throw new ApiCallError(await uploadError(response, relativePath));
    const reply = (await response.json()) as { folder?: unknown };
    if (typeof reply.folder === 'string') folder = reply.folder;
    onProgress(index + 1, files.length);
  }
  if (folder === null) throw new ApiCallError(internal('The studio server accepted the upload but did not say where it put the files.'));
  return { kind: 'folder', path: folder };
}

async function uploadError(response: Response, relativePath: string): Promise<ApiError> {
  // The server may answer with a tagged ApiError body; anything else becomes a plain sentence.
  try {
    const body = (await response.json()) as { error?: ApiError } & Partial<ApiError>;
    const error = body.error ?? body;
    if (typeof error.message === 'string' && typeof error.type === 'string') return { type: error.type, message: error.message };
  } catch {
    // not JSON
  }
  if (response.status === 401 || response.status === 403) {
    return { type: 'unauthorized', message: 'The studio server refused the upload. Open the link it printed (with ?token=…) again to sign in.' };
  }
  return internal(`Uploading ${relativePath} failed (HTTP ${response.status}).`);
}

/** crypto.randomUUID exists only in secure contexts; a studio server reached over plain http on a LAN is not one. */
export function newId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- The typed client ----

export class ApiClient {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  get flavour(): HostFlavour {
    return this.#transport.flavour;
  }

  get files(): HostFiles {
    return this.#transport.files;
  }

  /** Resolves with the method's result, or throws ApiCallError carrying the core's tagged error type. */
  async call<M extends MethodName>(method: M, input: InputOf<M>): Promise<ResultOf<M>> {
    const outcome = await this.#transport.call(method, input);
    if (!outcome.ok) throw new ApiCallError(outcome.error);
    return outcome.value as ResultOf<M>;
  }

  on(listener: (event: CoreEvent) => void): () => void {
    return this.#transport.onEvent(listener);
  }

  onStatus(listener: (status: ConnectionStatus) => void): () => void {
    return this.#transport.onStatus(listener);
  }

  mediaUrl(kind: MediaKind, id: number): string {
    return this.#transport.mediaUrl(kind, id);
  }
}

export function createApi(): ApiClient {
  if (window.shira) return new ApiClient(new BridgeTransport(window.shira));
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return new ApiClient(new SocketTransport(`${scheme}://${location.host}${SERVER_PATHS.ws}`));
}
