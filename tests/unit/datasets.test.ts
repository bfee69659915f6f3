import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import type { CoreEvent, ImportReport } from '../../src/shared/api';
import { ApiCallError } from '../../src/shared/errors';
import { DatasetRepo } from '../../src/main/core/datasets/repo';
import { parseKohyaFolder } from '../../src/main/core/datasets/scan';
import { makeCore, pngClaiming, solidImage, tempDir, writeTree } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function setup() {
  const env = makeCore();
  const folder = tempDir('shira-images-');
  cleanups.push(env.cleanup, folder.cleanup);
  return { ...env, folder: folder.path };
}

function byPath(report: ImportReport) {
  return Object.fromEntries(report.files.map((f) => [f.path, f]));
}

function count(core: ReturnType<typeof makeCore>['core'], table: string): number {
  return (core.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
}

describe('dataset import', () => {
  it('imports every supported format and reports each bad file with its reason', async () => {
    const { call, core, folder } = setup();
    writeTree(folder, {
      'a.png': await solidImage(40, 30, 'png'),
      'b.jpg': await solidImage(40, 30, 'jpeg', { r: 10, g: 200, b: 10 }),
      'c.webp': await solidImage(40, 30, 'webp', { r: 10, g: 10, b: 200 }),
      'd.gif': await solidImage(40, 30, 'gif', { r: 250, g: 250, b: 0 }),
      'e.tiff': await solidImage(40, 30, 'tiff', { r: 0, g: 250, b: 250 }),
      'f.avif': await solidImage(40, 30, 'avif', { r: 120, g: 120, b: 120 }),
      'broken.png': Buffer.concat([(await solidImage(40, 30, 'png', { r: 1, g: 2, b: 3 })).subarray(0, 40)]),
      'empty.jpg': Buffer.alloc(0),
      'notes.md': '# not an image',
      'bomb.png': pngClaiming(20_000, 20_000),
    });
    const report = await call('datasets.import', { source: { kind: 'folder', path: folder }, name: 'formats' });
    const files = byPath(report);
    expect(report.imported).toBe(6);
    expect(report.skipped).toBe(4);
    for (const ok of ['a.png', 'b.jpg', 'c.webp', 'd.gif', 'e.tiff', 'f.avif']) expect(files[ok]).toMatchObject({ status: 'imported' });
    expect(files['empty.jpg']).toMatchObject({ status: 'skipped', reason: 'empty file (0 bytes)' });
    expect(files['broken.png']?.reason).toMatch(/corrupt|truncated|readable/);
    expect(files['notes.md']?.reason).toMatch(/not an image/);
    expect(files['bomb.png']?.reason).toMatch(/too large/);
    const dataset = await call('datasets.get', { id: report.datasetId! });
    expect(dataset.images.map((i) => i.format).sort()).toEqual(['gif', 'heif', 'jpeg', 'png', 'tiff', 'webp']);
    expect(count(core, 'dataset_image_data')).toBe(6);
  });

  it('stores a normalised copy (EXIF orientation applied, alpha on white) and a 256-px WebP thumbnail', async () => {
    const { call, core, folder } = setup();
    // 60×20 landscape pixels tagged "rotate 90° CW" (EXIF 6): the upright image is 20×60.
    const rotated = await sharp({ create: { width: 60, height: 20, channels: 3, background: { r: 0, g: 0, b: 255 } } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const transparent = await sharp({ create: { width: 600, height: 300, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .png()
      .toBuffer();
    writeTree(folder, { 'rotated.jpg': rotated, 'clear.png': transparent });
    const report = await call('datasets.import', { source: { kind: 'folder', path: folder } });
    const dataset = await call('datasets.get', { id: report.datasetId! });
    const rot = dataset.images.find((i) => i.relPath === 'rotated.jpg')!;
    expect([rot.width, rot.height]).toEqual([20, 60]);
    const clear = dataset.images.find((i) => i.relPath === 'clear.png')!;
    const normalized = core.media('image', clear.id)!;
    expect(normalized.mime).toBe('image/png');
    const { data, info } = await sharp(normalized.bytes).raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(3);
    expect([data[0], data[1], data[2]]).toEqual([255, 255, 255]);
    const thumb = core.media('thumb', clear.id)!;
    const meta = await sharp(thumb.bytes).metadata();
    expect(meta.format).toBe('webp');
    expect(Math.max(meta.width!, meta.height!)).toBe(256);
    expect(core.media('thumb', 987654)).toBeNull();
  });

  it('understands kohya folders and caption sidecars', async () => {
    const { call, folder } = setup();
    writeTree(folder, {
      '10_ink style/one.png': await solidImage(16, 16, 'png', { r: 1, g: 1, b: 1 }),
      '10_ink style/one.txt': 'ink style, a fox\r\n',
      '10_ink style/two.png': await solidImage(16, 16, 'png', { r: 2, g: 2, b: 2 }),
      '10_ink style/two.caption': 'from caption file',
      'plain/three.png': await solidImage(16, 16, 'png', { r: 3, g: 3, b: 3 }),
    });
    const report = await call('datasets.import', { source: { kind: 'folder', path: folder }, triggerWord: 'inkfx' });
    expect(report.files.map((f) => f.path).sort()).toEqual(['10_ink style/one.png', '10_ink style/two.png', 'plain/three.png']);
    const dataset = await call('datasets.get', { id: report.datasetId! });
    expect(dataset.triggerWord).toBe('inkfx');
    const img = Object.fromEntries(dataset.images.map((i) => [i.relPath, i]));
    expect(img['10_ink style/one.png']).toMatchObject({ caption: 'ink style, a fox', captionSource: 'sidecar', repeats: 10, classTokens: 'ink style' });
    expect(img['10_ink style/two.png']).toMatchObject({ caption: 'from caption file', captionSource: 'sidecar' });
    expect(img['plain/three.png']).toMatchObject({ caption: '', captionSource: 'none', repeats: 1, classTokens: null });
    expect(dataset.weightedCount).toBe(21);
    expect(parseKohyaFolder('3_my_style')).toEqual({ repeats: 3, classTokens: 'my style' });
    expect(parseKohyaFolder('style')).toBeNull();
    expect(parseKohyaFolder('0_none')).toBeNull();
  });

  it('does not follow symlinks out of the chosen folder', async () => {
    const { call, folder } = setup();
    const outside = tempDir('shira-outside-');
    cleanups.push(outside.cleanup);
    writeFileSync(join(outside.path, 'secret.png'), await solidImage(8, 8, 'png'));
    writeTree(folder, { 'ok.png': await solidImage(8, 8, 'png', { r: 9, g: 9, b: 9 }) });
    symlinkSync(join(outside.path, 'secret.png'), join(folder, 'link.png'));
    symlinkSync(outside.path, join(folder, 'linked-dir'));
    const report = await call('datasets.import', { source: { kind: 'folder', path: folder } });
    const files = byPath(report);
    expect(report.imported).toBe(1);
    expect(files['link.png']?.reason).toMatch(/symbolic link/);
    expect(files['linked-dir']?.reason).toMatch(/symbolic link/);
  });

  it('skips duplicates by content, within an import and when appending', async () => {
    const { call, folder } = setup();
    const same = await solidImage(12, 12, 'png');
    writeTree(folder, { 'x.png': same, 'y/x-copy.png': same });
    const first = await call('datasets.import', { source: { kind: 'folder', path: folder } });
    expect(byPath(first)['y/x-copy.png']).toMatchObject({ status: 'skipped', reason: 'duplicate of x.png' });
    const again = await call('datasets.import', { source: { kind: 'files', paths: [join(folder, 'x.png')] }, datasetId: first.datasetId! });
    expect(again).toMatchObject({ imported: 0, skipped: 1, datasetId: first.datasetId });
    expect(again.files[0]!.reason).toBe('duplicate of x.png');
  });

  it('imports a list of files, rejecting relative paths, folders and missing files by name', async () => {
    const { call, folder } = setup();
    writeTree(folder, { 'one.png': await solidImage(8, 8, 'png'), 'one.txt': 'sidecar travels too' });
    mkdirSync(join(folder, 'sub'));
    const report = await call('datasets.import', {
      source: { kind: 'files', paths: [join(folder, 'one.png'), 'relative.png', join(folder, 'sub'), join(folder, 'missing.png')] },
    });
    const files = byPath(report);
    expect(report.imported).toBe(1);
    expect(files['relative.png']?.reason).toBe('path is not absolute');
    expect(files[join(folder, 'sub')]?.reason).toMatch(/is a folder/);
    expect(files[join(folder, 'missing.png')]?.reason).toBe('file not found');
    const dataset = await call('datasets.get', { id: report.datasetId! });
    expect(dataset.images[0]!.caption).toBe('sidecar travels too');
  });

  it('rejects a bad folder with a clear, tagged error and creates nothing', async () => {
    const { call, core, folder } = setup();
    await expect(call('datasets.import', { source: { kind: 'folder', path: join(folder, 'nope') } })).rejects.toMatchObject({ type: 'not_found' });
    await expect(call('datasets.import', { source: { kind: 'folder', path: 'relative/dir' } })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(/absolute/) });
    writeFileSync(join(folder, 'file.png'), 'x');
    await expect(call('datasets.import', { source: { kind: 'folder', path: join(folder, 'file.png') } })).rejects.toMatchObject({ message: expect.stringMatching(/not a folder/) });
    expect(count(core, 'datasets')).toBe(0);
  });

  it('creates no dataset when every file is rejected', async () => {
    const { call, core, folder } = setup();
    writeTree(folder, { 'empty.png': Buffer.alloc(0) });
    const report = await call('datasets.import', { source: { kind: 'folder', path: folder } });
    expect(report).toMatchObject({ datasetId: null, imported: 0, skipped: 1 });
    expect(count(core, 'datasets')).toBe(0);
  });

  it('is all-or-nothing: a failure while committing leaves the library untouched', async () => {
    const { call, core, folder } = setup();
    writeTree(folder, { 'a.png': await solidImage(8, 8, 'png'), 'b.png': await solidImage(8, 8, 'png', { r: 1, g: 2, b: 3 }) });
    const existing = await call('datasets.import', { source: { kind: 'files', paths: [join(folder, 'a.png')] }, name: 'keep me' });
    const original = DatasetRepo.prototype.insertImage;
    let calls = 0;
    DatasetRepo.prototype.insertImage = function (this: DatasetRepo, ...args) {
      if (++calls === 2) throw new Error('disk full (simulated)');
      return original.apply(this, args);
    };
    try {
      const failed = await core.registry.dispatch('datasets.import', { source: { kind: 'folder', path: folder } }, { client: 't' });
      expect(failed).toMatchObject({ ok: false, error: { type: 'internal' } });
    } finally {
      DatasetRepo.prototype.insertImage = original;
    }
    expect(count(core, 'datasets')).toBe(1);
    expect(count(core, 'dataset_images')).toBe(1);
    expect((await call('datasets.get', { id: existing.datasetId! })).name).toBe('keep me');
    // Staging files are gone too.
    expect(readdirSync(join(core.dataDir, 'tmp'))).toEqual([]);
  });

  it('reports progress and can be cancelled, writing nothing', async () => {
    const { call, core, folder } = setup();
    const tree: Record<string, Buffer> = {};
    for (let i = 0; i < 12; i++) tree[`img${String(i).padStart(2, '0')}.png`] = await solidImage(64, 64, 'png', { r: i * 20, g: 0, b: 0 });
    writeTree(folder, tree);
    const events: CoreEvent[] = [];
    core.events.subscribe((e) => {
      events.push(e);
      if (e.type === 'import.progress' && e.importId === 'cancel-me' && e.phase === 'decoding' && e.done === 3) void call('datasets.cancelImport', { importId: 'cancel-me' });
    });
    const error = await call('datasets.import', { source: { kind: 'folder', path: folder }, importId: 'cancel-me' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiCallError);
    expect((error as ApiCallError).type).toBe('cancelled');
    expect(count(core, 'datasets')).toBe(0);
    const progress = events.filter((e) => e.type === 'import.progress');
    // Every file is read first (phase "reading"), then decoding stops soon after the cancel.
    expect(progress.filter((e) => e.phase === 'reading')).toHaveLength(12);
    expect(progress[0]).toMatchObject({ phase: 'reading', done: 1, total: 12 });
    const decoding = progress.filter((e) => e.phase === 'decoding');
    expect(decoding.length).toBeGreaterThanOrEqual(3);
    expect(decoding.length).toBeLessThan(12);
    expect(await call('datasets.cancelImport', { importId: 'cancel-me' })).toEqual({ cancelled: false });
  });

  it('edits captions, trigger words and names, removes images and deletes whole datasets', async () => {
    const { call, core, folder } = setup();
    writeTree(folder, { 'a.png': await solidImage(8, 8, 'png'), 'b.png': await solidImage(8, 8, 'png', { r: 0, g: 0, b: 0 }) });
    const { datasetId } = await call('datasets.import', { source: { kind: 'folder', path: folder } });
    const dataset = await call('datasets.get', { id: datasetId! });
    const edited = await call('datasets.setCaption', { imageId: dataset.images[0]!.id, caption: '  a red square  ' });
    expect(edited).toMatchObject({ caption: 'a red square', captionSource: 'user' });
    const renamed = await call('datasets.update', { id: datasetId!, name: 'Squares', triggerWord: 'sqr' });
    expect(renamed).toMatchObject({ name: 'Squares', triggerWord: 'sqr', imageCount: 2 });
    expect((await call('datasets.update', { id: datasetId!, triggerWord: null })).triggerWord).toBeNull();
    await call('datasets.removeImage', { imageId: dataset.images[1]!.id });
    expect((await call('datasets.list', {}))[0]).toMatchObject({ imageCount: 1 });
    await expect(call('datasets.setCaption', { imageId: 99999, caption: 'x' })).rejects.toMatchObject({ type: 'not_found' });
    await call('datasets.delete', { id: datasetId! });
    expect(await call('datasets.list', {})).toEqual([]);
    expect(count(core, 'dataset_image_data')).toBe(0);
    await expect(call('datasets.get', { id: datasetId! })).rejects.toMatchObject({ type: 'not_found' });
  });
});
