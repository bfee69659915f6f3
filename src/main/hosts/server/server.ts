// The studio server: the core behind HTTP + WebSocket on loopback, so the same renderer runs in
// any browser and a studio can run headless. Security model:
//   - a random token (printed once in the URL) is required on every request: as ?token= on the
//     first page load (answered with an HttpOnly SameSite=Strict cookie and a redirect that drops
//     it from the address bar), as that cookie, or as `Authorization: Bearer` for scripts;
//   - tokens are compared in constant time;
//   - the Host header must name this server (DNS-rebinding), and any Origin must be this server's
//     own origin (cross-site pages cannot drive the API even with the cookie).
// Robustness model: nothing a client sends may end or wedge the process. Every request and upgrade
// is handled inside one try (URL, cookies, headers, bodies, frames); malformed input gets a 400/413
// that names the problem; every stream has an error handler; exports leave as downloads, never as
// files written where a client says (docs/security.md).
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { WebSocketServer, type WebSocket } from 'ws';
import { MEDIA_KINDS, type MediaKind } from '../../../shared/api';
import { SERVER_PATHS } from '../../../shared/bridge';
import { ExpectedError } from '../../../shared/errors';
import { connect } from '../../core/connection';
import type { Core } from '../../core/core';
import { formatBytes } from '../../core/files';
import { uploadsDir } from '../../core/paths';

export const TOKEN_COOKIE = 'shira_token';
export const MAX_UPLOAD_BYTES = 256 * 1024 * 1024;
export const MAX_CALL_BODY = 1024 * 1024;
/** One path segment of an upload (most file systems' NAME_MAX is 255 bytes), the whole path, and its depth. */
const MAX_UPLOAD_NAME_BYTES = 255;
const MAX_UPLOAD_PATH_BYTES = 1024;
const MAX_UPLOAD_DEPTH = 32;
const MAX_WS_MESSAGE_BYTES = 16 * 1024 * 1024;

/** A request the server refuses with `status` and a sentence naming the problem. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
};

export interface StudioServerOptions {
  core: Core;
  rendererDir: string;
  host?: string;
  port?: number;
  token?: string;
  /** Largest upload (default MAX_UPLOAD_BYTES); tests use a small one. */
  maxUploadBytes?: number;
}

export interface StudioServer {
  url: string;
  token: string;
  port: number;
  close(): Promise<void>;
}

export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

/** Constant-time comparison; hashing first makes the lengths equal so length leaks nothing either. */
export function tokensMatch(given: string | undefined | null, expected: string): boolean {
  if (typeof given !== 'string') return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * The values of every cookie called `name`. A browser sends every cookie set for 127.0.0.1 by
 * whichever app set it, on any port, so there may be several of one name, and a malformed
 * percent-escape in someone else's cookie is kept raw, never thrown.
 */
export function cookieValues(header: string | undefined, name: string): string[] {
  const out: string[] = [];
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || part.slice(0, eq).trim() !== name) continue;
    const raw = part.slice(eq + 1).trim();
    try {
      out.push(decodeURIComponent(raw));
    } catch {
      out.push(raw);
    }
  }
  return out;
}

/**
 * The request target as a URL on a placeholder origin. Only origin-form targets (`/path?query`)
 * are accepted; `//`, `*`, absolute-form and anything the URL parser refuses are a 400. Runs of
 * leading slashes are one slash, so `//evil.example/` can never become a redirect off-site.
 */
export function parseTarget(target: string | undefined): URL {
  if (!target || !target.startsWith('/')) throw new Refusal(400, 'The request target must be a path starting with "/".');
  try {
    return new URL(`http://placeholder/${target.replace(/^\/+/, '')}`);
  } catch {
    throw new Refusal(400, 'The request target is not a valid path.');
  }
}

/**
 * A browser upload's relative path, checked before anything touches the disk: `/`- or
 * `\`-separated segments, none empty, `.` or `..`, none with NUL or control characters, each at
 * most 255 bytes, at most 32 deep and 1024 bytes in all. Returns the segments.
 */
export function checkUploadPath(raw: string | null): string[] {
  const shownPath = raw === null ? '' : JSON.stringify(raw.length > 80 ? `${raw.slice(0, 80)}…` : raw);
  const bad = (why: string) => new Refusal(400, `Upload path ${shownPath} ${why}.`);
  if (raw === null || raw === '') throw new Refusal(400, 'Upload path missing: add ?path=<the file’s relative path>.');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this refuses
  if (/[\x00-\x1f\x7f]/.test(raw)) throw bad('contains NUL or control characters');
  if (Buffer.byteLength(raw) > MAX_UPLOAD_PATH_BYTES) throw bad(`is longer than ${MAX_UPLOAD_PATH_BYTES} bytes`);
  if (/^[/\\]/.test(raw) || /^[A-Za-z]:/.test(raw)) throw bad('is absolute; send the path relative to the folder you picked');
  const segments = raw.split(/[/\\]/);
  if (segments.length > MAX_UPLOAD_DEPTH) throw bad(`is nested deeper than ${MAX_UPLOAD_DEPTH} folders`);
  for (const segment of segments) {
    if (segment === '' || segment === '.' || segment === '..') throw bad('is not a plain relative path (it has an empty, "." or ".." part)');
    if (Buffer.byteLength(segment) > MAX_UPLOAD_NAME_BYTES) throw bad(`has a name longer than ${MAX_UPLOAD_NAME_BYTES} bytes`);
  }
  return segments;
}

export function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === 'localhost' || host === '::1' || host.startsWith('127.');
}

export async function startStudioServer(options: StudioServerOptions): Promise<StudioServer> {
  const { core } = options;
  const bindHost = options.host ?? '127.0.0.1';
  const token = options.token ?? generateToken();
  const rendererDir = resolve(options.rendererDir);
  const uploads = uploadsDir(core.dataDir);
  const maxUploadBytes = options.maxUploadBytes ?? MAX_UPLOAD_BYTES;
  // Uploads are staging copies for one import; a fresh server start owns none of them.
  await rm(uploads, { recursive: true, force: true });

  let port = 0;
  const allowedHosts = () => {
    const hosts = new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`]);
    if (!isLoopback(bindHost)) hosts.add(`${bindHost.includes(':') ? `[${bindHost}]` : bindHost}:${port}`);
    return hosts;
  };

  /** null when allowed; otherwise the status and reason to refuse with. */
  function refuse(req: IncomingMessage, url: URL): [number, string] | null {
    const hostHeader = req.headers.host ?? '';
    // With --host 0.0.0.0 the page may be reached under any address of this machine.
    if (bindHost !== '0.0.0.0' && bindHost !== '::' && !allowedHosts().has(hostHeader)) return [403, 'Unexpected Host header.'];
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${hostHeader}`) return [403, 'Cross-origin requests are refused.'];
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const query = url.searchParams.get('token');
    const given = bearer !== undefined ? [bearer] : [...cookieValues(req.headers.cookie, TOKEN_COOKIE), ...(query === null ? [] : [query])];
    if (!given.some((g) => tokensMatch(g, token))) return [401, 'Missing or wrong access token. Open the URL the studio server printed (it contains ?token=…).'];
    return null;
  }

  function send(res: ServerResponse, status: number, body: string | Buffer, type = 'text/plain; charset=utf-8', extra: Record<string, string> = {}) {
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Length': Buffer.byteLength(body),
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
      ...extra,
    });
    res.end(body);
  }
  const sendJson = (res: ServerResponse, status: number, value: unknown) => send(res, status, JSON.stringify(value), 'application/json');

  /** The whole body, up to `limit` bytes (declared or, for chunked bodies, counted): 413 beyond. */
  async function readBody(req: IncomingMessage, limit: number, what: string): Promise<Buffer> {
    const tooLarge = () => new Refusal(413, `${what} is larger than ${formatBytes(limit)}.`);
    if (Number(req.headers['content-length'] ?? 0) > limit) throw tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  async function serveStatic(res: ServerResponse, pathname: string) {
    let rel: string;
    try {
      rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname).replace(/^\/+/, '');
    } catch {
      throw new Refusal(400, 'The path has a malformed percent-escape.');
    }
    if (rel.includes('\0')) throw new Refusal(400, 'The path contains a NUL character.');
    const file = normalize(join(rendererDir, rel));
    if (file !== rendererDir && !file.startsWith(rendererDir + sep)) return send(res, 404, 'Not found');
    const target = existsSync(file) && statSync(file).isFile() ? file : join(rendererDir, 'index.html');
    if (!existsSync(target)) return send(res, 500, 'The renderer is not built. Run `npm run build` first.');
    const headers = {
      'Content-Type': MIME[extname(target)] ?? 'application/octet-stream',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'Content-Security-Policy': CONTENT_SECURITY_POLICY,
      'Cache-Control': target.includes(`${sep}assets${sep}`) ? 'private, max-age=31536000, immutable' : 'no-store',
    };
    res.writeHead(200, headers);
    await pipeline(createReadStream(target), res);
  }

  /**
   * One browser upload into `<data>/uploads/<id>/<path>`: written to a `.part` file and renamed
   * only when complete, so an aborted, oversized or failed upload leaves nothing behind.
   */
  async function handleUpload(req: IncomingMessage, res: ServerResponse, uploadId: string, url: URL) {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(uploadId)) throw new Refusal(400, 'Upload id must be 1–64 letters, digits or dashes.');
    const segments = checkUploadPath(url.searchParams.get('path'));
    const tooLarge = () => new Refusal(413, `File larger than ${formatBytes(maxUploadBytes)}; the studio imports files up to that size.`);
    if (Number(req.headers['content-length'] ?? 0) > maxUploadBytes) throw tooLarge();
    const folder = join(uploads, uploadId);
    const target = join(folder, ...segments);
    const part = join(folder, `.part-${randomUUID()}`);
    const clash = () => new Refusal(409, `Upload path "${segments.join('/')}" clashes with a file or folder uploaded earlier under the same name.`);
    try {
      await mkdir(dirname(target), { recursive: true });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR' || code === 'EEXIST') throw clash();
      throw error;
    }
    let size = 0;
    try {
      // Counted as it arrives: a chunked body declares no length.
      await pipeline(
        req,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            size += chunk.length;
            if (size > maxUploadBytes) throw tooLarge();
            yield chunk;
          }
        },
        createWriteStream(part, { flags: 'wx' }),
      );
      await rename(part, target);
    } catch (error) {
      await rm(part, { force: true });
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') throw clash();
      throw error;
    }
    sendJson(res, 200, { folder });
  }

  /** `/download/adapter/<id>.safetensors` and `<id>.shira.json`: an export, as the browser's download. */
  async function handleDownload(res: ServerResponse, pathname: string) {
    const m = /^\/download\/adapter\/(\d{1,15})\.(safetensors|shira\.json)$/.exec(pathname);
    if (!m) return send(res, 404, 'Not found');
    let parts;
    try {
      parts = core.packages.parts(Number(m[1]));
    } catch (error) {
      if (error instanceof ExpectedError && error.type === 'not_found') return send(res, 404, error.message);
      throw error;
    }
    // The stem is a slug of [A-Za-z0-9_-]: safe inside the quoted filename.
    const disposition = (name: string) => ({ 'Content-Disposition': `attachment; filename="${name}"` });
    if (m[2] === 'shira.json') return send(res, 200, parts.sidecarText, 'application/json', disposition(`${parts.stem}.shira.json`));
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': statSync(parts.file).size,
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
      ...disposition(`${parts.stem}.safetensors`),
    });
    await pipeline(createReadStream(parts.file), res);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = parseTarget(req.url);
    const refusal = refuse(req, url);
    if (refusal) return send(res, refusal[0], refusal[1]);
    const { pathname } = url;
    if (url.searchParams.has('token') && req.method === 'GET') {
      url.searchParams.delete('token');
      const location = url.pathname + (url.search || '');
      return send(res, 303, '', 'text/plain', {
        Location: location,
        'Set-Cookie': `${TOKEN_COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`,
      });
    }
    if (pathname.startsWith('/media/') && req.method === 'GET') {
      const [, , kind, idText] = pathname.split('/');
      const id = Number(idText);
      if (!MEDIA_KINDS.includes(kind as MediaKind) || !Number.isSafeInteger(id) || id < 1) return send(res, 404, 'Not found');
      const media = core.media(kind as MediaKind, id);
      if (!media) return send(res, 404, 'Not found');
      return send(res, 200, media.bytes, media.mime, { 'Cache-Control': 'private, max-age=3600' });
    }
    if (pathname.startsWith(SERVER_PATHS.download) && req.method === 'GET') return handleDownload(res, pathname);
    if (pathname.startsWith(SERVER_PATHS.upload) && req.method === 'POST') return handleUpload(req, res, pathname.slice(SERVER_PATHS.upload.length), url);
    if (pathname === SERVER_PATHS.call && req.method === 'POST') {
      const body = await readBody(req, MAX_CALL_BODY, 'An API call');
      let call: unknown;
      try {
        call = JSON.parse(body.toString('utf8'));
      } catch {
        throw new Refusal(400, 'Body must be JSON: { "method": …, "input": … }.');
      }
      const { method, input } = typeof call === 'object' && call !== null ? (call as { method?: unknown; input?: unknown }) : {};
      const outcome = await core.registry.dispatch(typeof method === 'string' ? method : '', input, { client: 'http' });
      return sendJson(res, 200, outcome);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method not allowed');
    return serveStatic(res, pathname);
  }

  function answerFailure(req: IncomingMessage, res: ServerResponse, error: unknown) {
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    if (error instanceof Refusal) {
      // The API route answers in its own envelope; the others with a tagged error body.
      const body = req.url?.startsWith(SERVER_PATHS.call) ? { ok: false, error: { type: 'bad_input', message: error.message } } : { type: 'bad_input', message: error.message };
      // Past a refused body the connection cannot be reused: close it rather than read the rest.
      return send(res, error.status, JSON.stringify(body), 'application/json', error.status === 413 ? { Connection: 'close' } : {});
    }
    core.log.error(`studio server: ${String(req.method).slice(0, 16)} ${String(req.url).slice(0, 200)} failed`, error);
    send(res, 500, 'Internal error; see the log.');
  }

  const server: Server = createServer((req, res) => {
    // A client that hangs up mid-request is not an error of ours.
    req.on('error', () => {});
    res.on('error', () => {});
    handle(req, res).catch((error: unknown) => {
      try {
        answerFailure(req, res, error);
      } catch {
        res.destroy();
      }
    });
  });
  // Malformed HTTP (bad header bytes, oversized headers): answer 400 and drop the socket, quietly.
  server.on('clientError', (_error, socket: Duplex) => {
    if ((socket as Socket).writable && !(socket as Socket).destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE_BYTES });
  let clients = 0;
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    let refusal: [number, string] | null;
    try {
      const url = parseTarget(req.url);
      refusal = url.pathname === SERVER_PATHS.ws ? refuse(req, url) : [404, 'Not found'];
    } catch (error) {
      refusal = error instanceof Refusal ? [error.status, error.message] : [400, 'Bad request'];
    }
    if (refusal) {
      const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found' }[refusal[0]] ?? 'Error';
      socket.end(`HTTP/1.1 ${refusal[0]} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const connection = connect(core, `ws#${++clients}`, (message) => ws.send(JSON.stringify(message)));
      ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        try {
          let parsed: unknown;
          try {
            parsed = JSON.parse(data.toString());
          } catch {
            ws.send(JSON.stringify({ kind: 'event', event: { type: 'log', level: 'warn', message: 'Ignored a message that is not JSON.', time: new Date().toISOString() } }));
            return;
          }
          connection.receive(parsed);
        } catch (error) {
          core.log.error('studio server: a WebSocket message could not be handled', error);
        }
      });
      ws.on('close', () => connection.close());
      ws.on('error', () => connection.close());
    });
  };
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Node hands the raw socket over without its own error listener: an RST before we answer would
    // otherwise be an uncaught exception.
    socket.on('error', () => socket.destroy());
    try {
      upgrade(req, socket, head);
    } catch (error) {
      core.log.error('studio server: upgrade failed', error);
      socket.destroy();
    }
  });

  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, bindHost, () => resolvePromise());
  });
  port = (server.address() as AddressInfo).port;
  const shownHost = isLoopback(bindHost) || bindHost === '0.0.0.0' || bindHost === '::' ? '127.0.0.1' : bindHost;
  return {
    url: `http://${shownHost}:${port}/?token=${token}`,
    token,
    port,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
