// The import hazard corpus: what a studio's shared folders and a hostile client hand the app.
// Every case is answered with its own reason and leaves the library as it was (app.health ok,
// counts unchanged): FIFOs and symlinks as caption sidecars, a 50 MB sidecar, an unreadable
// subfolder, a stalled folder that only a cancel can end, leftovers of a killed import, upload
// names that are not names, uploads that are too large or cut off, and malformed adapter files.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { request } from 'node:http';
import { join, resolve, sep } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiCallError } from '../../src/shared/errors';
import { MAX_CAPTION_CHARS } from '../../src/shared/api';
import { baseWeightShapes, writeAdapterFile, type AdapterContent } from '../../src/main/core/adapters/format';
import { FileRefused, ReadAborted, withDeadline } from '../../src/main/core/files';
import { startStudioServer } from '../../src/main/hosts/server/server';
import { Core } from '../../src/main/core/core';
import { makeCore, solidImage, tempDir, writeTree, type Caller } from './helpers';

// Permission bits do not stop root, and a stalled network drive cannot be made on demand: a folder
// named `locked` answers EACCES to root as it would to anyone else, and one named `stalled` never answers.
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const readdir = ((path: Parameters<typeof actual.readdir>[0], ...rest: unknown[]) => {
    const p = String(path);
    if (p.endsWith(`${sep}stalled`)) return new Promise(() => {});
    if (p.endsWith(`${sep}locked`) && process.getuid?.() === 0) return Promise.reject(Object.assign(new Error(`EACCES: permission denied, scandir '${p}'`), { code: 'EACCES' }));
    return (actual.readdir as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
  }) as typeof actual.readdir;
  return { ...actual, readdir, default: { ...actual, readdir } };
});

const RESOURCES = resolve('resources');
const WEIGHTS = join(RESOURCES, 'models', 'clipart-64', 'model.safetensors');
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function core(options: Parameters<typeof makeCore>[0] = {}) {
  const env = makeCore(options);
  cleanups.push(env.cleanup);
  return env;
}

function dir(): string {
  const d = tempDir('shira-hazard-');
  cleanups.push(d.cleanup);
  return d.path;
}

function mkfifo(path: string): void {
  execFileSync('mkfifo', [path]);
}

async function failure(p: Promise<unknown>): Promise<ApiCallError> {
  try {
    await p;
  } catch (error) {
    if (error instanceof ApiCallError) return error;
    throw error;
  }
  throw new Error('expected the call to fail');
}

function imageCount(c: Core): number {
  return (c.db.prepare('SELECT count(*) AS n FROM dataset_images').get() as { n: number }).n;
}

async function healthy(call: Caller): Promise<void> {
  expect(await call('app.health', { full: true })).toMatchObject({ ok: true, check: 'full', integrity: ['ok'], foreignKeyViolations: 0 });
}

describe('import hazards', () => {
  it('never opens a FIFO: as a sidecar or an image, in a file list or a folder, each is skipped with its reason', async () => {
    const { call, core: c } = core();
    const d = dir();
    writeTree(d, { 'a.png': await solidImage(16, 16, 'png'), 'folder/c.png': await solidImage(16, 16, 'png', { r: 1, g: 2, b: 3 }) });
    mkfifo(join(d, 'a.txt'));
    mkfifo(join(d, 'b.png'));
    mkfifo(join(d, 'folder', 'c.txt'));
    // Without O_NONBLOCK each of these opens would wait for a writer forever.
    const list = await call('datasets.import', { source: { kind: 'files', paths: [join(d, 'a.png'), join(d, 'b.png')] } });
    const byPath = Object.fromEntries(list.files.map((f) => [f.path, f]));
    expect(list.imported).toBe(1);
    expect(byPath[join(d, 'a.txt')]).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/caption sidecar not read: a named pipe \(FIFO\)/) });
    expect(byPath[join(d, 'b.png')]).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/named pipe \(FIFO\), not a regular file/) });
    const folder = await call('datasets.import', { source: { kind: 'folder', path: join(d, 'folder') } });
    expect(folder.imported).toBe(1);
    expect(folder.files.find((f) => f.path === 'c.txt')).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/named pipe \(FIFO\)/) });
    expect(imageCount(c)).toBe(2);
    await healthy(call);
  });

  it('does not follow a symlinked sidecar in a file-list import (as folder imports never did)', async () => {
    const { call } = core();
    const d = dir();
    const secrets = dir();
    writeFileSync(join(secrets, 'secret.txt'), 'SECRET-API-KEY-123');
    writeTree(d, { 'a.png': await solidImage(16, 16, 'png') });
    symlinkSync(join(secrets, 'secret.txt'), join(d, 'a.txt'));
    const report = await call('datasets.import', { source: { kind: 'files', paths: [join(d, 'a.png')] } });
    expect(report.files.find((f) => f.path.endsWith('a.txt'))).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/symbolic link — not followed/) });
    const dataset = await call('datasets.get', { id: report.datasetId! });
    expect(dataset.images[0]!.caption).not.toContain('SECRET');
    expect(dataset.images[0]!.captionSource).toBe('none');
  });

  it('cuts a 50 MB sidecar to the caption limit (reading 64 KiB of it), with a note on the image', async () => {
    const { call } = core();
    const d = dir();
    writeTree(d, { 'a.png': await solidImage(16, 16, 'png'), 'a.txt': Buffer.alloc(50 * 2 ** 20, 'neon, glow, ') });
    for (const source of [
      { kind: 'files' as const, paths: [join(d, 'a.png')] },
      { kind: 'folder' as const, path: d },
    ]) {
      const report = await call('datasets.import', { source });
      const file = report.files.find((f) => f.status === 'imported')!;
      expect(file.note).toMatch(/caption cut to the 2000-character limit \(the sidecar has 50\.0 MiB\)/);
      const caption = (await call('datasets.get', { id: report.datasetId! })).images[0]!.caption;
      expect(caption.length).toBeLessThanOrEqual(MAX_CAPTION_CHARS);
      expect(caption.length).toBeGreaterThan(MAX_CAPTION_CHARS - 20);
      expect(caption).toMatch(/^neon, glow, (neon, glow, )*(neon|neon, glow)$/); // cut at a tag boundary
    }
  });

  it('skips an unreadable subfolder with its reason and imports the rest', async () => {
    const { call, core: c } = core();
    const d = dir();
    writeTree(d, { 'good.png': await solidImage(16, 16, 'png'), 'locked/hidden.png': await solidImage(16, 16, 'png', { r: 9, g: 9, b: 9 }) });
    chmodSync(join(d, 'locked'), 0o000);
    cleanups.push(() => chmodSync(join(d, 'locked'), 0o755));
    const report = await call('datasets.import', { source: { kind: 'folder', path: d } });
    expect(report.imported).toBe(1);
    expect(report.files.find((f) => f.path === `locked${sep}`)).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/folder not read \(permission denied\)/) });
    expect(imageCount(c)).toBe(1);
    // The chosen folder itself unreadable is the caller's mistake, not an internal error.
    const locked = await failure(call('datasets.import', { source: { kind: 'folder', path: join(d, 'locked') } }));
    expect(locked.type).toBe('bad_input');
    expect(locked.message).toMatch(/Cannot read the folder .*permission denied/);
  });

  it('ends an import stuck on a stalled folder when it is cancelled, adding nothing and leaving no staging', async () => {
    const { call, core: c, dataDir } = core();
    const d = dir();
    writeTree(d, { 'a.png': await solidImage(16, 16, 'png') });
    mkdirSync(join(d, 'stalled'));
    const pending = call('datasets.import', { source: { kind: 'folder', path: d }, importId: 'stuck' });
    await new Promise((r) => setTimeout(r, 200));
    expect(await call('datasets.cancelImport', { importId: 'stuck' })).toEqual({ cancelled: true });
    const started = Date.now();
    const error = await failure(pending);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(error.type).toBe('cancelled');
    expect(imageCount(c)).toBe(0);
    expect(readdirSync(join(dataDir, 'tmp'))).toEqual([]);
    await healthy(call);
  });

  it('bounds every read in time: a step that never answers is refused after its deadline, or ended by abort', async () => {
    const never = new Promise<never>(() => {});
    await expect(withDeadline(never, 'reading the file', { timeoutMs: 50 })).rejects.toThrow(FileRefused);
    await expect(withDeadline(never, 'reading the file', { timeoutMs: 50 })).rejects.toThrow(/took longer than 0 s \(a stalled network drive\?\)/);
    const controller = new AbortController();
    const aborted = withDeadline(never, 'reading the file', { signal: controller.signal });
    controller.abort();
    await expect(aborted).rejects.toThrow(ReadAborted);
    // A handle that arrives after the deadline is released, not leaked.
    const released: number[] = [];
    await expect(withDeadline(new Promise<number>((r) => setTimeout(() => r(7), 80)), 'opening', { timeoutMs: 10, release: (v) => released.push(v) })).rejects.toThrow(FileRefused);
    await new Promise((r) => setTimeout(r, 120));
    expect(released).toEqual([7]);
  });

  it('removes the leftovers of a killed import at start, and leaves a live process’s alone', async () => {
    const dataDir = dir();
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout);
    writeTree(dataDir, {
      [`tmp/import-${deadPid}-AbC123/0.png`]: Buffer.alloc(1024),
      [`tmp/convert-${deadPid}-1700000000000.safetensors`]: 'x',
      [`tmp/import-${process.pid}-live/0.png`]: 'x',
      'tmp/notes.txt': 'not ours to judge',
      [`cache/adapters/incoming-${deadPid}-1-abc.safetensors`]: 'x',
      [`cache/adapters/${'ab'.repeat(32)}.safetensors`]: 'an unreferenced cache file',
      [`exports/style.shira.json.tmp-${deadPid}`]: '{',
    });
    const c = new Core({ dataDir, host: 'test' });
    cleanups.push(() => c.close());
    expect(readdirSync(join(dataDir, 'tmp')).sort()).toEqual([`import-${process.pid}-live`, 'notes.txt']);
    expect(readdirSync(join(dataDir, 'cache', 'adapters'))).toEqual([]);
    expect(readdirSync(join(dataDir, 'exports'))).toEqual([]);
  });
});

interface Reply {
  status: number;
  body: string;
}

function post(url: string, headers: Record<string, string>, body?: Buffer | string, chunked = false): Promise<Reply> {
  return new Promise((resolvePromise, reject) => {
    const req = request(url, { method: 'POST', headers: chunked ? { ...headers, 'transfer-encoding': 'chunked' } : headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolvePromise({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (chunked && body) {
      // Many small chunks: the size is only known by counting.
      const bytes = Buffer.from(body);
      for (let at = 0; at < bytes.length; at += 64 * 1024) req.write(bytes.subarray(at, at + 64 * 1024));
      req.end();
    } else req.end(body);
  });
}

describe('upload hazards (studio server)', () => {
  async function server() {
    const env = core();
    const renderer = dir();
    writeFileSync(join(renderer, 'index.html'), '<!doctype html>');
    const s = await startStudioServer({ core: env.core, rendererDir: renderer, port: 0, maxUploadBytes: 2 ** 20 });
    cleanups.push(() => s.close());
    const base = `http://127.0.0.1:${s.port}`;
    const auth = { authorization: `Bearer ${s.token}` };
    const upload = (id: string, path: string, body: Buffer | string, chunked = false) => post(`${base}/upload/${id}?path=${encodeURIComponent(path)}`, auth, body, chunked);
    return { ...env, base, auth, upload, uploads: join(env.dataDir, 'uploads') };
  }

  /** Every file under `dir`, relative. */
  function tree(root: string): string[] {
    if (!existsSync(root)) return [];
    return readdirSync(root, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
      .sort();
  }

  it('refuses names that are not names, each with a 400 that says why, and later uploads still work', async () => {
    const { upload, uploads } = await server();
    const cases: [string, RegExp][] = [
      ['.', /has an empty, "\." or "\.\." part/],
      ['..', /has an empty, "\." or "\.\." part/],
      ['a/./b.png', /has an empty, "\." or "\.\." part/],
      ['a//b.png', /has an empty/],
      ['../../evil.png', /"\.\." part/],
      ['/etc/passwd', /is absolute/],
      ['C:\\evil.png', /is absolute/],
      ['a\0b.png', /NUL or control characters/],
      ['line\nbreak.png', /NUL or control characters/],
      [`${'n'.repeat(300)}.png`, /name longer than 255 bytes/],
      [`${'é'.repeat(130)}.png`, /name longer than 255 bytes/], // 260 bytes in UTF-8
      [Array.from({ length: 40 }, () => 'd').join('/'), /deeper than 32 folders/],
      ['', /Upload path missing/],
    ];
    for (const [path, reason] of cases) {
      const reply = await upload('u1', path, 'x');
      expect({ path, status: reply.status }).toEqual({ path, status: 400 });
      expect(JSON.parse(reply.body)).toMatchObject({ type: 'bad_input', message: expect.stringMatching(reason) });
    }
    // A file where a folder is wanted (and back) is a clash, not a 500, and breaks nothing after it.
    expect((await upload('u1', 'a.png', await solidImage(8, 8, 'png'))).status).toBe(200);
    const clash = await upload('u1', 'a.png/b.png', 'x');
    expect(clash.status).toBe(409);
    expect(JSON.parse(clash.body).message).toMatch(/clashes with a file or folder uploaded earlier/);
    expect((await upload('u1', 'sub/c.png', 'x')).status).toBe(200);
    expect((await upload('u1', 'sub', 'x')).status).toBe(409);
    expect((await upload('u1', 'sub/d.png', 'y')).status).toBe(200);
    expect(tree(join(uploads, 'u1'))).toEqual(['a.png', `sub${sep}c.png`, `sub${sep}d.png`]);
  });

  it('enforces the size limit on chunked bodies too, says so, and keeps no partial file', async () => {
    const { upload, uploads, base, auth } = await server();
    const big = Buffer.alloc(2 * 2 ** 20, 1);
    for (const chunked of [false, true]) {
      const reply = await upload('u2', 'big.png', big, chunked);
      expect(reply.status).toBe(413);
      expect(JSON.parse(reply.body).message).toMatch(/File larger than 1\.0 MiB/);
    }
    expect(tree(join(uploads, 'u2'))).toEqual([]);
    // An API call that is too large is too large, not "not JSON".
    const call = await post(`${base}/api/call`, auth, Buffer.alloc(2 * 2 ** 20, 0x20), true);
    expect(call.status).toBe(413);
    expect(JSON.parse(call.body)).toMatchObject({ ok: false, error: { type: 'bad_input', message: 'An API call is larger than 1.0 MiB.' } });
  });

  it('removes an upload the client aborted half-way', async () => {
    const { base, auth, uploads, upload } = await server();
    await new Promise<void>((resolvePromise) => {
      const req = request(`${base}/upload/u3?path=cut.png`, { method: 'POST', headers: { ...auth, 'content-length': '100000' } });
      req.on('error', () => resolvePromise());
      req.write(Buffer.alloc(5000, 2), () => setTimeout(() => req.destroy(), 100));
    });
    // The server notices the hang-up, ends the pipeline, and removes the part file.
    for (let i = 0; i < 50 && tree(join(uploads, 'u3')).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(tree(join(uploads, 'u3'))).toEqual([]);
    expect((await upload('u3', 'cut.png', 'x')).status).toBe(200);
  });
});

// ---- Malformed adapter files ----

/** A safetensors file from parts, so that any part can be wrong. */
function rawSafetensors(header: unknown, data: Buffer, headerLength?: bigint): Buffer {
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), data]);
}

function f16(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, i * 2));
  return b;
}

/** One real layer of the built-in model, adapted by a SHiRA with k values. */
function shira(values: Buffer, k = 8): AdapterContent {
  const [name, shape] = [...baseWeightShapes(WEIGHTS)].find(([n]) => /attn1\.to_q\.weight$/.test(n))!;
  return {
    kind: 'shira',
    baseIdentity: '',
    methodJson: JSON.stringify({ method: 'shira', mask: 'struct', density: 0.02 }),
    tensors: [{ name: name.slice(0, -'.weight'.length), shape, maskKind: 'struct', encoding: 'f16+struct', meta: { k, checksum: '0123456789abcdef' }, values, index: null }],
  };
}

describe('malformed adapter files', () => {
  it('answers each with bad_input naming the problem, quotes nothing of a file that is not what it claims, and changes nothing', async () => {
    const { call, core: c, dataDir } = core({ resourcesDir: RESOURCES });
    const d = dir();
    const counts = () => c.db.prepare('SELECT (SELECT count(*) FROM adapters) AS a, (SELECT count(*) FROM adapter_tensors) AS t').get();
    const before = counts();
    const file = (name: string, bytes: Buffer | string) => {
      const path = join(d, name);
      writeFileSync(path, bytes);
      return path;
    };
    const native = (name: string, values: Buffer) => {
      const path = join(d, name);
      writeAdapterFile(path, shira(values));
      return path;
    };
    const ONE = 0x3c00;
    const finite = f16(Array.from({ length: 8 }, () => ONE));
    const t = (begin: number, end: number) => ({ dtype: 'F16', shape: [(end - begin) / 2], data_offsets: [begin, end] });
    const cases: [string, string, RegExp][] = [
      ['nan', native('nan.safetensors', f16([ONE, ONE, 0x7e00, ONE, ONE, ONE, ONE, ONE])), /tensor "unet\..*\.values" holds NaN or infinite values \(the first at element 2\)/],
      ['inf', native('inf.safetensors', f16([0xfc00, ONE, ONE, ONE, ONE, ONE, ONE, ONE])), /holds NaN or infinite values \(the first at element 0\)/],
      ['overlap', file('overlap.safetensors', rawSafetensors({ 'a.weight': t(0, 16), 'b.weight': t(8, 24) }, Buffer.alloc(24))), /tensor "b\.weight" overlaps tensor "a\.weight"/],
      ['out of order', file('order.safetensors', rawSafetensors({ 'a.weight': { dtype: 'F16', shape: [4], data_offsets: [8, 0] } }, Buffer.alloc(8))), /out-of-order data_offsets/],
      ['gap', file('gap.safetensors', rawSafetensors({ 'a.weight': t(0, 8), 'b.weight': t(16, 24) }, Buffer.alloc(24))), /8 bytes before tensor "b\.weight" belong to no tensor/],
      ['tail', file('tail.safetensors', rawSafetensors({ 'a.weight': t(0, 8) }, Buffer.alloc(64))), /56 bytes after the last tensor/],
      ['short', file('short.safetensors', rawSafetensors({ 'a.weight': t(0, 64) }, Buffer.alloc(8))), /truncated/],
      ['path name', file('path.safetensors', rawSafetensors({ '../../etc/passwd.weight': t(0, 16) }, finite)), /tensor #1 has a name that is not a dotted module path \(it contains "\/"\)/],
      ['space name', file('space.safetensors', rawSafetensors({ 'unet.a b.weight': t(0, 16) }, finite)), /not a dotted module path \(it contains a control, space or non-ASCII character\)/],
      ['dtype', file('dtype.safetensors', rawSafetensors({ 'a.weight': { dtype: 'constructor', shape: [8], data_offsets: [0, 16] } }, finite)), /tensor "a\.weight" has an unknown dtype/],
      ['metadata', file('meta.safetensors', rawSafetensors({ __metadata__: { format: 7 }, 'a.weight': t(0, 16) }, finite)), /__metadata__ is not a map of strings/],
      ['array header', file('array.safetensors', rawSafetensors([1, 2], Buffer.alloc(0))), /header is not a JSON object/],
      ['shape', file('shape.safetensors', rawSafetensors({ 'a.weight': { dtype: 'F16', shape: [3], data_offsets: [0, 16] } }, finite)), /size does not match its shape/],
      ['not ours', file('peft.safetensors', rawSafetensors({ __metadata__: { format: 'pt' }, 'a.weight': t(0, 16) }, finite)), /not a Shira Studio adapter \(its metadata has another format "pt"\)/],
      ['text', file('notes.safetensors', 'password=hunter2\nAPI_KEY=sk-live-0123456789\n'.repeat(4)), /not a safetensors file \(its first 8 bytes are not a plausible header length\)/],
      ['json text', file('json.safetensors', rawSafetensors('{"secret": "hunter2"}', Buffer.alloc(0)).subarray(0, 20)), /not a safetensors file/],
    ];
    mkfifo(join(d, 'pipe.safetensors'));
    cases.push(['fifo', join(d, 'pipe.safetensors'), /pipe\.safetensors is a named pipe \(FIFO\), not an adapter file/]);
    const good = native('good.safetensors', finite);
    const sidecarCases: [string, () => void, RegExp][] = [
      ['fifo sidecar', () => mkfifo(join(d, 'good.shira.json')), /good\.shira\.json is a named pipe \(FIFO\), not a package description/],
      ['symlinked sidecar', () => symlinkSync('/etc/hostname', join(d, 'good.shira.json')), /good\.shira\.json: a symbolic link — not followed/],
      ['huge sidecar', () => writeFileSync(join(d, 'good.shira.json'), Buffer.alloc(2 * 2 ** 20, 0x20)), /good\.shira\.json is 2\.0 MiB; a package description is a few KiB/],
    ];
    let n = 0;
    for (const [what, path, expected] of cases) {
      const error = await failure(call('adapters.import', { path }));
      expect({ what, type: error.type }).toEqual({ what, type: 'bad_input' });
      expect(error.message).toMatch(expected);
      expect(error.message).not.toMatch(/hunter2|sk-live|passw|etc\/passwd/);
      n++;
    }
    for (const [what, make, expected] of sidecarCases) {
      make();
      const error = await failure(call('adapters.import', { path: good }));
      expect({ what, type: error.type }).toEqual({ what, type: 'bad_input' });
      expect(error.message).toMatch(expected);
      execFileSync('rm', ['-f', join(d, 'good.shira.json')]);
      n++;
    }
    expect(n).toBe(cases.length + sidecarCases.length);
    expect(counts()).toEqual(before);
    expect(existsSync(join(dataDir, 'cache', 'adapters')) ? readdirSync(join(dataDir, 'cache', 'adapters')) : []).toEqual([]);
    await healthy(call);
    // The same file, with nothing wrong beside it, is imported: the checks refuse only what is wrong.
    expect((await call('adapters.import', { path: good })).kind).toBe('shira');
  });
});

const WORKER = join(resolve('native'), 'build', 'shira-worker');

describe.runIf(existsSync(WORKER) || process.env.CI === 'true')('malformed adapter files the worker finds (real worker)', () => {
  it('turns what the worker finds wrong with a file into bad_input, and leaves no converted temp file', { timeout: 120_000 }, async () => {
    const { call, core: c, dataDir } = core({ resourcesDir: RESOURCES, worker: { binary: WORKER, threads: 1 } });
    const d = dir();
    const before = c.db.prepare('SELECT count(*) AS n FROM adapters').get();
    // Our format, a valid container, but its index checksum does not match the mask it names.
    const wrongChecksum = join(d, 'checksum.safetensors');
    writeAdapterFile(wrongChecksum, shira(f16(Array.from({ length: 8 }, () => 0x3c00))));
    // A PEFT-layout LoRA for a layer the base model does not have.
    const peft = join(d, 'peft.safetensors');
    const a = f16(Array.from({ length: 2 * 4 }, () => 0x3c00));
    writeFileSync(
      peft,
      rawSafetensors(
        {
          'base_model.model.nowhere.lora_A.weight': { dtype: 'F16', shape: [2, 4], data_offsets: [0, 16] },
          'base_model.model.nowhere.lora_B.weight': { dtype: 'F16', shape: [4, 2], data_offsets: [16, 32] },
        },
        Buffer.concat([a, a]),
      ),
    );
    for (const [path, expected] of [
      [wrongChecksum, /^checksum\.safetensors: layer 'unet\..*to_q': the Struct indices no longer regenerate .*\(checksum mismatch\)$/],
      [peft, /^peft\.safetensors: PEFT module 'nowhere' is not a layer of the loaded model$/],
    ] as const) {
      const error = await failure(call('adapters.import', { path }));
      expect({ path, type: error.type }).toEqual({ path, type: 'bad_input' });
      expect(error.message).toMatch(expected);
    }
    expect(c.db.prepare('SELECT count(*) AS n FROM adapters').get()).toEqual(before);
    expect(readdirSync(join(dataDir, 'tmp')).filter((f) => f.startsWith('convert-'))).toEqual([]);
    await healthy(call);
  });
});
