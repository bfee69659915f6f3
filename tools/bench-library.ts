// `tools bench-library`: switching measured through the app's own path on the built-in model —
// SQLite rows → content-addressed cache file → worker decode (LRU) → fused blend — as JSON rows.
// The worker-only rows (SD-1.5 scale, file → decode → apply) come from `shira-worker bench --kind switch`;
// `npm run bench:switch` prints both.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { MixEntry, MixResult } from '../src/shared/api';
import { Core } from '../src/main/core/core';

export interface BenchLibraryOptions {
  worker: string;
  resourcesDir: string;
  threads: number;
  reps: number;
  /** Adapters per kind for the blend-vs-N rows (1, 2, 4 … up to this). */
  maxN: number;
  emit: (row: Record<string, unknown>) => void;
  log: (line: string) => void;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchLibrary(o: BenchLibraryOptions): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'shira-bench-'));
  const core = new Core({ dataDir, host: 'test', resourcesDir: o.resourcesDir, worker: { binary: o.worker, threads: o.threads } });
  const call = async <T>(method: string, input: unknown): Promise<T> => {
    const r = await core.registry.dispatch(method as never, input as never, { client: 'bench' });
    if (!r.ok) throw new Error(`${method}: ${r.error.message}`);
    return r.value as T;
  };
  try {
    // A throwaway style set: the values trained do not matter for timing, only sizes and masks do.
    const folder = join(dataDir, 'style');
    const files: string[] = [];
    mkdirSync(folder, { recursive: true });
    for (let i = 0; i < 4; i++) {
      const path = join(folder, `img_${i}.png`);
      await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 60 * i, g: 255 - 50 * i, b: 128 } } })
        .png()
        .toFile(path);
      files.push(path);
    }
    const ds = await call<{ datasetId: number }>('datasets.import', { source: { kind: 'files', paths: files }, name: 'bench' });
    const masks = ['struct', 'rand', 'wm', 'snip', 'grad'] as const;
    const shira: number[] = [];
    const lora: number[] = [];
    const model = (await call<{ name: string }[]>('models.list', {}))[0]!.name;
    for (let i = 0; i < o.maxN; i++) {
      const mask = masks[i % masks.length]!;
      for (const req of [
        { method: 'shira', mask, density: 0.02, seed: i },
        { method: 'lora', matchDensity: 0.02, seed: i },
      ]) {
        const job = await call<{ id: number }>('training.start', { datasetId: ds.datasetId, steps: 1, batch: 1, checkpointEvery: 1000, ...req });
        await core.training.idle();
        const done = core.training.get(job.id);
        if (done.status !== 'completed') throw new Error(`bench adapter training failed: ${done.error}`);
        (req.method === 'shira' ? shira : lora).push(done.adapterId!);
      }
      o.log(`trained adapter pair ${i + 1}/${o.maxN}`);
    }
    const device = String(core.worker?.info?.device ?? 'cpu');
    const apply = (entries: MixEntry[]) => call<MixResult>('mix.apply', { entries });

    // (3) bytes per trained value, as stored in the library (real trained adapters).
    for (const id of [...shira.slice(0, masks.length), lora[0]!]) {
      const a = core.adapters.summary(id);
      o.emit({
        name: 'library_bytes_per_value',
        device,
        model,
        kind: a.kind,
        mask: a.method.mask ?? null,
        trainable: a.trainable,
        bytes: a.sizeBytes,
        bytes_per_value: a.bytesPerValue,
        peft_bytes_per_value: a.kind === 'shira' ? 12 : null,
      });
    }

    // (1) warm whole-model switch between two single-adapter mixes, SHiRA vs LoRA.
    const warm = async (ids: number[]) => {
      await apply([{ adapterId: ids[0]!, alpha: 1 }]);
      await apply([{ adapterId: ids[1]!, alpha: 1 }]);
      const ms: number[] = [];
      for (let r = 0; r < o.reps; r++) ms.push((await apply([{ adapterId: ids[r % 2]!, alpha: 1 }])).switchMs);
      return median(ms);
    };
    const ws = await warm(shira);
    const wl = await warm(lora);
    o.emit({ name: 'library_warm_switch', device, model, shira_switch_ms: ws, lora_switch_ms: wl, ratio: wl / ws });

    // α change of one adapter in a two-adapter mix (incremental re-blend).
    const alpha = async (ids: number[]) => {
      const ms: number[] = [];
      for (let r = 0; r < o.reps; r++)
        ms.push(
          (
            await apply([
              { adapterId: ids[0]!, alpha: 1 },
              { adapterId: ids[1]!, alpha: 0.5 + 0.1 * r },
            ])
          ).switchMs,
        );
      return median(ms);
    };
    const as = await alpha(shira);
    const al = await alpha(lora);
    o.emit({ name: 'library_alpha_change', device, model, shira_switch_ms: as, lora_switch_ms: al, ratio: al / as });

    // (2) cold switch from SQLite: rows → file → worker decode → blend, nothing cached anywhere.
    const cold = async (id: number) => {
      const ms: number[] = [];
      let last: MixResult | null = null;
      for (let r = 0; r < o.reps; r++) {
        await apply([]);
        core.adapters.evictCache(id);
        // A rewritten cache file has a new mtime, so the worker's LRU misses too.
        last = await apply([{ adapterId: id, alpha: 1 }]);
        if (last.cacheMisses !== 1) throw new Error('cold switch hit a cache');
        ms.push(last.totalMs);
      }
      return { total: median(ms), decode: last!.loadMs, blend: last!.switchMs };
    };
    const cs = await cold(shira[0]!);
    const cl = await cold(lora[0]!);
    o.emit({
      name: 'library_cold_switch',
      device,
      model,
      shira_switch_ms: cs.total,
      lora_switch_ms: cl.total,
      ratio: cl.total / cs.total,
      shira_decode_ms: cs.decode,
      lora_decode_ms: cl.decode,
      shira_blend_ms: cs.blend,
      lora_blend_ms: cl.blend,
    });

    // (4) blend time against the number of adapters, from W0.
    for (let n = 1; n <= o.maxN; n *= 2) {
      const blend = async (ids: number[]) => {
        const ms: number[] = [];
        for (let r = 0; r < o.reps; r++) {
          await apply([]);
          ms.push((await apply(ids.slice(0, n).map((adapterId) => ({ adapterId, alpha: 1 / n })))).switchMs);
        }
        return median(ms);
      };
      const bs = await blend(shira);
      const bl = await blend(lora);
      const nnz = shira.slice(0, n).reduce((a, id) => a + core.adapters.summary(id).trainable, 0);
      o.emit({ name: 'library_blend_n', device, model, n, nnz_total: nnz, shira_switch_ms: bs, lora_switch_ms: bl, ratio: bl / bs });
    }
  } finally {
    await core.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
