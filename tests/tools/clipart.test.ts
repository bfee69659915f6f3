import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { authorAliases, buildClipartDataset, cleanCaption, titleWords } from '../../tools/clipart';
import { readSafetensors } from '../../src/main/core/io/safetensors';
import { tempDir, writeTree } from '../unit/helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('clipart captions', () => {
  it('drops trailing numbers and the truncated author name', () => {
    expect(titleWords('armadillo_architetto_fra_01.png', 'Architetto Francesco Rollandin')).toEqual(['armadillo']);
    expect(titleWords('baby_tux_rory_mccann_01.png', 'Rory McCann')).toEqual(['baby', 'tux']);
    expect(titleWords('horse_1_konstantin_r._01.png', 'Konsatantin Rotkevich')).toEqual(['horse']);
    // No author, or an author the name does not spell: the words stay.
    expect(titleWords('brown_fish_01.png', undefined)).toEqual(['brown', 'fish']);
    expect(titleWords('time1.png', undefined)).toEqual(['time']);
    expect(titleWords('farfalla_butterfly_fra1.png', 'Architetto Francesco Rollandin')).toEqual(['farfalla', 'butterfly']);
    expect(titleWords('red_apple_01.png', 'Someone Else')).toEqual(['red', 'apple']);
    // Never strips the whole name.
    expect(titleWords('rory_01.png', 'Rory McCann')).toEqual(['rory']);
  });

  it('learns user-name signatures from an author’s files', () => {
    const authors = new Map([
      ['owl_ganson', 'Gerald G.'],
      ['teacup_ganson', 'Gerald G.'],
      ['anvil_ganson1', 'Gerald G.'],
      ['red_fish', 'Ann Other'],
    ]);
    const aliases = authorAliases(authors);
    expect([...aliases]).toEqual(['ganson']);
    expect(titleWords('elephant_symbol_ganson.png', undefined, aliases)).toEqual(['elephant', 'symbol']);
  });

  it('cleans captions: no digits, no one-letter words, no repeats', () => {
    expect(cleanCaption([['2', 'dead', 'frogs', 'x', 'fra1'], ['frogs', 'amphibians'], ['animals']])).toBe('dead frogs, amphibians, animals');
  });
});

describe('clipart dataset pipeline', () => {
  it('renders, de-duplicates, captions and splits by category, reproducibly', async () => {
    const root = tempDir('shira-clipart-');
    const out = tempDir('shira-clipart-out-');
    cleanups.push(root.cleanup, out.cleanup);
    const shape = (w: number, h: number, colour: { r: number; g: number; b: number }) =>
      sharp({ create: { width: 200, height: 200, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
        .composite([{ input: { create: { width: w, height: h, channels: 4, background: { ...colour, alpha: 1 } } }, top: 20, left: 30 }])
        .png()
        .toBuffer();
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 10; i++) files[`animals/cat_${i}_bob_smith_01.png`] = await shape(20 + i * 15, 150 - i * 10, { r: 25 * i, g: 100, b: 50 });
    for (let i = 0; i < 5; i++) files[`food/apple_pie_${i}.png`] = await shape(150, 30 + i * 25, { r: 200, g: 20 * i, b: 0 });
    files['food/apple_pie_again.png'] = files['food/apple_pie_0.png']!; // an exact re-export
    files['food/broken.png'] = Buffer.from('not a png');
    writeTree(root.path, files);
    const authorsFile = join(out.path, 'authors.tsv');
    writeTree(out.path, {
      'authors.tsv':
        '# header\n' +
        Object.keys(files)
          .filter((f) => f.startsWith('animals'))
          .map((f) => `${f.split('/')[1]!.replace('.png', '')}\tBob Smith`)
          .join('\n'),
    });
    const summary = await buildClipartDataset({ root: root.path, authorsFile, resolution: 32, outDir: join(out.path, 'ds') });
    expect(summary).toMatchObject({ files: 17, unreadable: 1, duplicates: 1, kept: 15 });
    const manifest = JSON.parse(readFileSync(join(out.path, 'ds', 'manifest.json'), 'utf8')) as { items: { path: string; caption: string; split: string; category: string }[] };
    expect(manifest.items.find((i) => i.path.endsWith('cat_3_bob_smith_01.png'))!.caption).toBe('cat, animals');
    expect(manifest.items.find((i) => i.path.endsWith('apple_pie_2.png'))!.caption).toBe('apple pie, food');
    // ≥ 1 held out per category, ~6 %.
    const held = manifest.items.filter((i) => i.split === 'heldout');
    expect(new Set(held.map((i) => i.category))).toEqual(new Set(['animals', 'food']));
    const train = readSafetensors(join(out.path, 'ds', 'train.safetensors'));
    expect(train.tensors.get('images')!.shape).toEqual([15 - held.length, 32, 32, 3]);
    expect(JSON.parse(train.metadata.captions!)).toHaveLength(15 - held.length);
    // Corners are the white margin.
    expect([...train.tensors.get('images')!.data.slice(0, 3)]).toEqual([255, 255, 255]);
    // Same input → same split and bytes.
    await buildClipartDataset({ root: root.path, authorsFile, resolution: 32, outDir: join(out.path, 'ds2') });
    expect(readFileSync(join(out.path, 'ds2', 'train.safetensors')).equals(readFileSync(join(out.path, 'ds', 'train.safetensors')))).toBe(true);
  });
});
