import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { baseModelConfig, buildVocab, exportFp16, f32ToF16, imagesToGrid, trainBase, warmStart } from '../../tools/base-model';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import { tempDir } from '../unit/helpers';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('built-in model tooling', () => {
  it('converts fp32 to fp16 exactly where representable, rounding to nearest even', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // largest half
      [65520, 0x7c00], // rounds up to +inf
      [1e-8, 0x0000], // underflows
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -14, 0x0400], // smallest normal
      [1 + 2 ** -11, 0x3c00], // a tie: to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // a tie: to even (up)
      [0.1, 0x2e66],
      [Infinity, 0x7c00],
    ];
    const out = f32ToF16(new Float32Array(cases.map(([x]) => x)));
    expect([...out].map((h) => h.toString(16))).toEqual(cases.map(([, h]) => h.toString(16)));
    expect(f32ToF16(new Float32Array([NaN]))[0]! & 0x7c00).toBe(0x7c00);
  });

  it('exports F32 tensors as F16, keeping other dtypes and the metadata', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const src = join(dir.path, 'a.safetensors');
    writeSafetensors(
      src,
      [
        ['w', { dtype: 'F32', shape: [2], data: new Uint8Array(new Float32Array([0.5, -3]).buffer) }],
        ['i', { dtype: 'I32', shape: [1], data: new Uint8Array(4) }],
      ],
      { config: '{}' },
    );
    const dst = join(dir.path, 'b.safetensors');
    exportFp16(src, dst);
    const back = readSafetensors(dst);
    expect(back.metadata).toEqual({ config: '{}' });
    expect(back.tensors.get('w')).toMatchObject({ dtype: 'F16', shape: [2] });
    expect([...new Uint16Array(back.tensors.get('w')!.data.slice().buffer)]).toEqual([0x3800, 0xc200]);
    expect(back.tensors.get('i')!.dtype).toBe('I32');
  });

  it('builds the vocabulary from words seen at least twice, most frequent first', () => {
    expect(buildVocab(['Red apple, food', 'green apple, food', "bird's nest, animals"])).toEqual(['apple', 'food']);
    const config = baseModelConfig('m', 64, ['a']) as { unet: { sample_size: number; patch_size: number }; text_encoder: { vocab: string[] } };
    expect(config.unet).toMatchObject({ sample_size: 64, patch_size: 4 });
    expect(config.text_encoder.vocab).toEqual(['a']);
  });

  it('lays out sample images as a grid PNG', async () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const file = join(dir.path, 's.safetensors');
    const data = new Uint8Array(3 * 2 * 2 * 3);
    data.fill(255, 12, 24); // image 1 white
    writeSafetensors(file, [['images', { dtype: 'U8', shape: [3, 2, 2, 3], data }]]);
    await imagesToGrid(file, 2, join(dir.path, 'g.png'), 1);
    const { data: px, info } = await sharp(join(dir.path, 'g.png')).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([4, 4]);
    expect(px[(0 * 4 + 2) * 3]).toBe(255); // image 1 at column 1
    expect(px[(0 * 4 + 0) * 3]).toBe(0); // image 0
    expect(px[(2 * 4 + 2) * 3]).toBe(255); // empty cell stays white
  });

  it('warm-starts a model from another one: token rows follow the words, new rows and spare rows are fresh', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const w = 2;
    // From: vocab [a, b] + 2 spare rows; row r holds [r, r].
    const rows = 4 + 2 + 2;
    const emb = new Float32Array(rows * w).map((_, i) => Math.floor(i / w));
    const src = join(dir.path, 'from.safetensors');
    writeSafetensors(
      src,
      [
        ['text_encoder.embeddings.token_embedding.weight', { dtype: 'F16', shape: [rows, w], data: new Uint8Array(f32ToF16(emb).buffer) }],
        ['unet.conv_in.bias', { dtype: 'F16', shape: [1], data: new Uint8Array(f32ToF16(new Float32Array([0.5])).buffer) }],
      ],
      { config: JSON.stringify({ text_encoder: { vocab: ['a', 'b'], width: w, spare_buckets: 2 } }) },
    );
    const config = { name: 'next', text_encoder: { vocab: ['b', 'c'], width: w, spare_buckets: 3 } };
    const out = join(dir.path, 'to.safetensors');
    expect(warmStart(src, config, out)).toEqual({ tensors: 2, copiedRows: 5, newRows: 4 });
    const back = readSafetensors(out);
    expect(JSON.parse(back.metadata.config!)).toEqual(config);
    const t = back.tensors.get('text_encoder.embeddings.token_embedding.weight')!;
    expect(t).toMatchObject({ dtype: 'F32', shape: [4 + 2 + 3, w] });
    const got = new Float32Array(t.data.slice().buffer);
    expect([...got.subarray(0, 4 * w)]).toEqual([0, 0, 1, 1, 2, 2, 3, 3]); // specials
    expect([...got.subarray(4 * w, 5 * w)]).toEqual([5, 5]); // "b" was row 5
    expect([...got.subarray(5 * w)].every((x) => Number.isFinite(x) && !Number.isInteger(x))).toBe(true); // drawn N(0, 1)
    expect([...new Float32Array(back.tensors.get('unet.conv_in.bias')!.data.slice().buffer)]).toEqual([0.5]);
    // A second phase of the same recipe keeps the whole table, spare rows included.
    const again = join(dir.path, 'again.safetensors');
    expect(warmStart(out, config, again)).toEqual({ tensors: 2, copiedRows: 9, newRows: 0 });
    expect(Buffer.from(readSafetensors(again).tensors.get('text_encoder.embeddings.token_embedding.weight')!.data).equals(Buffer.from(t.data))).toBe(true);
    writeSafetensors(src, [], {});
    expect(() => warmStart(src, config, out)).toThrow(/no vocabulary/);
  });

  it('exports a run its worker finished after the tool stopped (--export-only), and refuses one without a result', async () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const runDir = join(dir.path, 'run');
    const dataDir = join(dir.path, 'data');
    const outDir = join(dir.path, 'models', 'next');
    mkdirSync(runDir);
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'train.safetensors'), '');
    writeFileSync(join(runDir, 'config.json'), JSON.stringify({ name: 'next', text_encoder: { vocab: ['a', 'b'] } }));
    writeSafetensors(join(runDir, 'final.safetensors'), [['w', { dtype: 'F32', shape: [1], data: new Uint8Array(new Float32Array([0.5]).buffer) }]]);
    const journal = join(runDir, 'journal.jsonl');
    const lines = (...rows: object[]) => rows.map((r) => `${JSON.stringify(r)}\n`).join('');
    // The tool stopped mid-run: a start, no end.
    writeFileSync(journal, lines({ event: 'session_start' }, { event: 'progress', step: 25 }));
    const options = {
      worker: '/nonexistent/shira-worker',
      name: 'next',
      previous: 'prev',
      device: 'cpu',
      resolution: 64,
      steps: 50,
      batch: 2,
      lr: 1e-3,
      ema: 0.9,
      patchSize: 4,
      tagDropout: 0.5,
      categoryBalance: 0.5,
      threads: 1,
      resume: true,
      exportOnly: true,
      runDir,
      outDir,
      dataDir,
      log: () => {},
    };
    await expect(trainBase(options)).rejects.toThrow(/last session has no result/);
    expect(existsSync(join(outDir, 'model.safetensors'))).toBe(false);
    // Its end written by hand from the worker's own result line, and a resumed session that finished.
    writeFileSync(
      journal,
      lines(
        { event: 'session_start' },
        { event: 'session_end', seconds: 100, result: null },
        { event: 'session_start' },
        { event: 'session_end', seconds: 20.4, result: { steps: 50, final_loss: 1 } },
      ),
    );
    const summary = await trainBase(options);
    expect(summary).toMatchObject({ name: 'next', wall_seconds: 120, sessions: 2, result: { steps: 50 } });
    expect(readSafetensors(join(outDir, 'model.safetensors')).tensors.get('w')!.dtype).toBe('F16');
    expect(JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'))).toMatchObject({ supersedes: 'prev' });
  });
});
