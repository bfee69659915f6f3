import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startStudioServer, tokensMatch, type StudioServer } from '../../src/main/hosts/server/server';
import { makeCore, solidImage, tempDir } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(): Promise<StudioServer & { base: string; dataDir: string }> {
  const env = makeCore();
  const renderer = tempDir('shira-renderer-');
  mkdirSync(join(renderer.path, 'assets'));
  writeFileSync(join(renderer.path, 'index.html'), '<!doctype html><title>Shira Studio</title>');
  writeFileSync(join(renderer.path, 'assets', 'app.js'), 'console.log(1)');
  const server = await startStudioServer({ core: env.core, rendererDir: renderer.path, port: 0 });
  cleanups.push(env.cleanup, renderer.cleanup, () => server.close());
  return { ...server, base: `http://127.0.0.1:${server.port}`, dataDir: env.dataDir };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(url: string, options: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function wsOpen(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket } | { status: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => resolve({ ws }));
    ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode! }));
    ws.on('error', () => {});
  });
}

describe('studio server', () => {
  it('prints a tokenised loopback URL', async () => {
    const server = await start();
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]{32}$/);
  });

  it('answers 401 without the token, and with a wrong one', async () => {
    const { base } = await start();
    expect((await http(`${base}/`)).status).toBe(401);
    expect((await http(`${base}/?token=wrong`)).status).toBe(401);
    expect((await http(`${base}/media/thumb/1`)).status).toBe(401);
    expect((await http(`${base}/api/call`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect(await wsOpen(`ws://127.0.0.1:${new URL(base).port}/ws`)).toEqual({ status: 401 });
  });

  it('trades the URL token for an HttpOnly cookie and drops it from the address', async () => {
    const { base, token } = await start();
    const first = await http(`${base}/?token=${token}`);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/');
    const cookie = String(first.headers['set-cookie']);
    expect(cookie).toMatch(/shira_token=.+; HttpOnly; SameSite=Strict/);
    const page = await http(`${base}/`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(page.status).toBe(200);
    expect(page.body).toContain('Shira Studio');
    expect(page.headers['content-security-policy']).toMatch(/default-src 'self'/);
    expect(page.headers['x-content-type-options']).toBe('nosniff');
  });

  it('refuses foreign Origins and unexpected Host headers even with the token', async () => {
    const { base, token, port } = await start();
    const auth = { authorization: `Bearer ${token}` };
    expect((await http(`${base}/api/call`, { method: 'POST', headers: { ...auth, origin: 'http://evil.example' }, body: '{"method":"app.info"}' })).status).toBe(403);
    expect((await http(`${base}/`, { headers: { ...auth, host: 'evil.example' } })).status).toBe(403);
    expect(await wsOpen(`ws://127.0.0.1:${port}/ws`, { ...auth, origin: 'http://evil.example' })).toEqual({ status: 403 });
    // The page's own origin is fine.
    const own = await wsOpen(`ws://127.0.0.1:${port}/ws`, { ...auth, origin: `http://127.0.0.1:${port}` });
    expect('ws' in own).toBe(true);
    if ('ws' in own) own.ws.close();
  });

  it('serves the API over WebSocket and HTTP with tagged errors, and survives garbage', async () => {
    const { base, token, port } = await start();
    const auth = { authorization: `Bearer ${token}` };
    const opened = await wsOpen(`ws://127.0.0.1:${port}/ws`, auth);
    if (!('ws' in opened)) throw new Error(`ws refused: ${opened.status}`);
    const ws = opened.ws;
    const replies: unknown[] = [];
    const got = new Promise<void>((resolve) =>
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as { kind: string };
        if (m.kind === 'result') replies.push(m);
        if (replies.length === 3) resolve();
      }),
    );
    ws.send('this is not json');
    ws.send(JSON.stringify({ kind: 'call', id: 1, method: 'app.info', input: {} }));
    ws.send(JSON.stringify({ kind: 'call', id: 2, method: 'no.such.method', input: {} }));
    ws.send(JSON.stringify({ kind: 'call', id: 3, method: 'datasets.get', input: { id: -1 } }));
    await got;
    ws.close();
    const byId = Object.fromEntries((replies as { id: number }[]).map((r) => [r.id, r]));
    expect(byId[1]).toMatchObject({ ok: true, value: { name: 'Shira Studio', host: 'test' } });
    expect(byId[2]).toMatchObject({ ok: false, error: { type: 'bad_input', message: expect.stringMatching(/Unknown API method/) } });
    expect(byId[3]).toMatchObject({ ok: false, error: { type: 'bad_input' } });
    const viaHttp = await http(`${base}/api/call`, { method: 'POST', headers: auth, body: JSON.stringify({ method: 'datasets.list', input: {} }) });
    expect(JSON.parse(viaHttp.body)).toEqual({ ok: true, value: [] });
    const badJson = await http(`${base}/api/call`, { method: 'POST', headers: auth, body: '{' });
    expect(badJson.status).toBe(400);
  });

  it('stages uploads inside the data folder only, and serves media by id', async () => {
    const { base, token, dataDir } = await start();
    const auth = { authorization: `Bearer ${token}` };
    const escape = await http(`${base}/upload/abc?path=${encodeURIComponent('../../evil.png')}`, { method: 'POST', headers: auth, body: 'x' });
    expect(escape.status).toBe(400);
    const png = await solidImage(32, 32, 'png');
    const ok = await http(`${base}/upload/abc?path=${encodeURIComponent('sub/a.png')}`, { method: 'POST', headers: auth, body: png });
    expect(ok.status).toBe(200);
    const { folder } = JSON.parse(ok.body) as { folder: string };
    expect(folder).toBe(join(dataDir, 'uploads', 'abc'));
    const imported = await http(`${base}/api/call`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ method: 'datasets.import', input: { source: { kind: 'folder', path: folder } } }),
    });
    const report = JSON.parse(imported.body) as { value: { datasetId: number; files: { imageId: number }[] } };
    const imageId = report.value.files[0]!.imageId;
    // The staging folder is not a place the dataset can be said to come from.
    const dataset = await http(`${base}/api/call`, { method: 'POST', headers: auth, body: JSON.stringify({ method: 'datasets.get', input: { id: report.value.datasetId } }) });
    expect(JSON.parse(dataset.body).value.sourcePath).toBeNull();
    const thumb = await http(`${base}/media/thumb/${imageId}`, { headers: auth });
    expect(thumb.status).toBe(200);
    expect(thumb.headers['content-type']).toBe('image/webp');
    expect((await http(`${base}/media/thumb/999999`, { headers: auth })).status).toBe(404);
    expect((await http(`${base}/media/secrets/1`, { headers: auth })).status).toBe(404);
  });

  it('compares tokens by value only', () => {
    expect(tokensMatch('abc', 'abc')).toBe(true);
    expect(tokensMatch('abd', 'abc')).toBe(false);
    expect(tokensMatch('', 'abc')).toBe(false);
    expect(tokensMatch(undefined, 'abc')).toBe(false);
  });
});
