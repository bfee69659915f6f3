// Issue 3's end-to-end check, through the same supervisor and protocol the app uses:
//   folder of styled PNGs + captions → pack (as the app's import does) → train SHiRA with each mask
//   and a parameter-matched LoRA on the built-in model → sample base vs every adapter at the same
//   seeds → one PNG grid and a JSON summary (train time, loss, trainable values, a style number).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { readSafetensors, writeSafetensors } from '../src/main/core/io/safetensors';
import type { ArgsOf, WorkerOps } from '../src/main/core/worker/protocol';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';
import { packImages } from '../src/main/core/worker/pack';
import { imagesToGrid } from './base-model';

export interface AdapterMethod {
  name: string;
  /** The method's own train arguments (mask and density, or LoRA's rank or matched density). */
  args: Omit<ArgsOf<WorkerOps, 'train'>, 'data' | 'out'>;
}

export const DEMO_METHODS: AdapterMethod[] = [
  ...(['struct', 'rand', 'wm', 'grad', 'snip'] as const).map((mask) => ({ name: `shira-${mask}`, args: { method: 'shira' as const, mask, density: 0.02 } })),
  { name: 'lora-matched', args: { method: 'lora', matchDensity: 0.02 } },
];

/** Writes a packed style set out as a kohya-style folder: PNG files with .txt caption sidecars. */
export async function unpackToFolder(pack: string, folder: string): Promise<number> {
  const file = readSafetensors(pack);
  const t = file.tensors.get('images')!;
  const [n, h, w] = t.shape as [number, number, number];
  const captions = JSON.parse(file.metadata.captions ?? '[]') as string[];
  mkdirSync(folder, { recursive: true });
  for (let i = 0; i < n; i++) {
    const name = `img_${String(i).padStart(3, '0')}`;
    await sharp(Buffer.from(t.data.subarray(i * h * w * 3, (i + 1) * h * w * 3)), { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toFile(join(folder, `${name}.png`));
    writeFileSync(join(folder, `${name}.txt`), captions[i] ?? '');
  }
  return n;
}

/** Mean luminance (0–255) of U8 [B,H,W,3] images: the simplest number that tells neon from paper. */
export function meanLuminance(data: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < data.length; i += 3) s += 0.2126 * data[i]! + 0.7152 * data[i + 1]! + 0.0722 * data[i + 2]!;
  return s / (data.length / 3);
}

export interface DemoOptions {
  worker: string;
  threads: number;
  model: string;
  styleFolder: string;
  trigger: string;
  workDir: string;
  steps: number;
  lr: number;
  batch: number;
  prompts: string[];
  seed: number;
  outPng: string;
  methods?: AdapterMethod[];
  log: (line: string) => void;
}

export async function runAdapterDemo(o: DemoOptions): Promise<Record<string, unknown>> {
  mkdirSync(o.workDir, { recursive: true });
  const styleImages: Buffer[] = [];
  const sources = [];
  const { scanFolder, captionFor } = await import('../src/main/core/datasets/scan');
  const { processImage } = await import('../src/main/core/datasets/images');
  const { readFile } = await import('node:fs/promises');
  const scan = await scanFolder(o.styleFolder);
  for (const c of scan.candidates) {
    const bytes = await readFile(c.absPath);
    styleImages.push(bytes);
    sources.push({ caption: captionFor(scan, c).caption, repeats: c.repeats, image: (await processImage(bytes)).normalized });
  }
  const packed = join(o.workDir, 'style.safetensors');
  const resolution = (JSON.parse(readSafetensors(o.model).metadata.config ?? '{}') as { unet?: { sample_size?: number } }).unet?.sample_size ?? 64;
  await packImages(sources, packed, { resolution, fit: 'contain', triggerWord: o.trigger });
  const styleLuma = meanLuminance(readSafetensors(packed).tensors.get('images')!.data);

  const worker = new WorkerSupervisor({ binary: o.worker, threads: o.threads });
  const rows: Record<string, unknown>[] = [];
  const grids: Uint8Array[] = [];
  let shape: number[] = [];
  try {
    await worker.start();
    await worker.request('load_model', { path: o.model });
    const sample = async (label: string) => {
      const out = join(o.workDir, `sample-${label}.safetensors`);
      await worker.request('sample', { prompt: o.prompts, batch: o.prompts.length, seed: o.seed, steps: 30, guidance: 4, out });
      const t = readSafetensors(out).tensors.get('images')!;
      shape = t.shape;
      grids.push(t.data);
      return meanLuminance(t.data);
    };
    const baseLuma = await sample('base');
    rows.push({ name: 'base', mean_luminance: baseLuma });
    for (const m of o.methods ?? DEMO_METHODS) {
      const adapter = join(o.workDir, `${m.name}.safetensors`);
      const t0 = Date.now();
      const result = await worker.request('train', { ...m.args, data: packed, out: adapter, steps: o.steps, lr: o.lr, batch: o.batch, seed: o.seed, progressEvery: 50 }, (e) => {
        if (e.event === 'progress') o.log(`${m.name} step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)}`);
      });
      const seconds = (Date.now() - t0) / 1000;
      const mix = await worker.request('apply_mix', { adapters: [{ path: adapter, alpha: 1 }] });
      const luma = await sample(m.name);
      await worker.request('clear_mix', {});
      rows.push({ name: m.name, seconds, first_loss: result.first_loss, final_loss: result.final_loss, trainable: result.trainable, apply_ms: mix.ms, mean_luminance: luma });
      o.log(
        `${m.name}: ${seconds.toFixed(0)} s, loss ${result.first_loss.toFixed(3)} → ${result.final_loss.toFixed(3)}, mean luminance ${luma.toFixed(1)} (base ${baseLuma.toFixed(1)}, style ${styleLuma.toFixed(1)})`,
      );
    }
  } finally {
    await worker.close();
  }
  const [n, h, w] = shape as [number, number, number];
  const all = join(o.workDir, 'grid.safetensors');
  writeSafetensors(all, [['images', { dtype: 'U8', shape: [n * grids.length, h, w, 3], data: Buffer.concat(grids) }]]);
  mkdirSync(dirname(o.outPng), { recursive: true });
  await imagesToGrid(all, n, o.outPng, 2);
  rmSync(all, { force: true });
  return { style_mean_luminance: styleLuma, images: styleImages.length, steps: o.steps, lr: o.lr, batch: o.batch, prompts: o.prompts, rows };
}
