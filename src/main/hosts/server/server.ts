// The studio server: the core behind HTTP + WebSocket on loopback, so the same renderer runs in
// any browser and a studio can run headless. Security model:
//   - a random token (printed once in the URL) is required on every request: as ?token= on the
//     first page load (answered with an HttpOnly SameSite=Strict cookie and a redirect that drops
//     it from the address bar), as that cookie, or as `Authorization: Bearer` for scripts;
//   - tokens are compared in constant time;
//   - the Host header must name this server (DNS-rebinding), and any Origin must be this server's
//     own origin (cross-site pages cannot drive the API even with the cookie).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { WebSocketServer, type WebSocket } from 'ws';
import { MEDIA_KINDS, type MediaKind } from '../../../shared/api';
import { connect } from '../../core/connection';
import { uploadsDir, type Core } from '../../core/core';

export const TOKEN_COOKIE = 'shira_token';
const MAX_UPLOAD_BYTES = 256 * 1024 * 1024;
const MAX_CALL_BODY = 1024 * 1024;

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

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = decodeURIComponent(part.slice(eq + 1).trim());
  }
  return out;
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
    const given = bearer ?? parseCookies(req.headers.cookie)[TOKEN_COOKIE] ?? url.searchParams.get('token');
    if (!tokensMatch(given, token)) return [401, 'Missing or wrong access token. Open the URL the studio server printed (it contains ?token=…).'];
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

  async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) throw new Error(`body larger than ${limit} bytes`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  function serveStatic(res: ServerResponse, pathname: string) {
    const rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname).replace(/^\/+/, '');
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
    createReadStream(target).pipe(res);
  }

  async function handleUpload(req: IncomingMessage, res: ServerResponse, uploadId: string, url: URL) {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(uploadId)) return sendJson(res, 400, { type: 'bad_input', message: 'Upload id must be 1–64 letters, digits or dashes.' });
    const relRaw = url.searchParams.get('path') ?? '';
    const rel = normalize(relRaw).replace(/^([/\\])+/, '');
    if (!relRaw || rel.startsWith('..') || rel.split(/[/\\]/).some((p) => p === '..' || p === '') || resolve('/', rel) !== join('/', rel)) {
      return sendJson(res, 400, { type: 'bad_input', message: `Upload path "${relRaw}" is not a plain relative path.` });
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_UPLOAD_BYTES) return sendJson(res, 413, { type: 'bad_input', message: `File larger than ${MAX_UPLOAD_BYTES / 2 ** 20} MiB.` });
    const folder = join(uploads, uploadId);
    const target = join(folder, rel);
    await mkdir(dirname(target), { recursive: true });
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_UPLOAD_BYTES) req.destroy(new Error('upload too large'));
    });
    await pipeline(req, createWriteStream(target));
    sendJson(res, 200, { folder });
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://placeholder');
    const refusal = refuse(req, url);
    if (refusal) return send(res, refusal[0], refusal[1]);
    const handle = async () => {
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
      if (pathname.startsWith('/upload/') && req.method === 'POST') return handleUpload(req, res, pathname.slice('/upload/'.length), url);
      if (pathname === '/api/call' && req.method === 'POST') {
        let body: { method?: unknown; input?: unknown };
        try {
          body = JSON.parse((await readBody(req, MAX_CALL_BODY)).toString('utf8')) as typeof body;
        } catch {
          return sendJson(res, 400, { ok: false, error: { type: 'bad_input', message: 'Body must be JSON: { "method": …, "input": … }.' } });
        }
        const outcome = await core.registry.dispatch(String(body?.method), body?.input, { client: 'http' });
        return sendJson(res, 200, outcome);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method not allowed');
      return serveStatic(res, pathname);
    };
    handle().catch((error: unknown) => {
      core.log.error(`studio server: ${req.method} ${url.pathname} failed`, error);
      if (!res.headersSent) send(res, 500, 'Internal error; see the log.');
      else res.destroy();
    });
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });
  let clients = 0;
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://placeholder');
    const refusal = url.pathname === '/ws' ? refuse(req, url) : ([404, 'Not found'] as [number, string]);
    if (refusal) {
      socket.end(`HTTP/1.1 ${refusal[0]} ${refusal[0] === 401 ? 'Unauthorized' : refusal[0] === 403 ? 'Forbidden' : 'Not Found'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const connection = connect(core, `ws#${++clients}`, (message) => ws.send(JSON.stringify(message)));
      ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.toString());
        } catch {
          ws.send(JSON.stringify({ kind: 'event', event: { type: 'log', level: 'warn', message: 'Ignored a message that is not JSON.', time: new Date().toISOString() } }));
          return;
        }
        connection.receive(parsed);
      });
      ws.on('close', () => connection.close());
      ws.on('error', () => connection.close());
    });
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
