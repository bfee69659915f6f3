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

    // Every timed row reports the worker's blend time (`*_switch_ms`, what the worker rows time; `ratio` on it) and
    // the whole `mix.apply` call the Mix view shows (`*_total_ms`: library, IPC, JSON; `total_ratio` on it).
    const timed = async (entries: () => MixEntry[], before?: () => Promise<unknown>) => {
      const sw: number[] = [];
      const tot: number[] = [];
      for (let r = 0; r < o.reps; r++) {
        if (before) await before();
        const res = await apply(entries());
        sw.push(res.switchMs);
        tot.push(res.totalMs);
      }
      return { switch: median(sw), total: median(tot) };
    };
    const row = (name: string, s: { switch: number; total: number }, l: { switch: number; total: number }, extra: Record<string, unknown> = {}) =>
      o.emit({
        name,
        device,
        model,
        threads: o.threads,
        ...extra,
        shira_switch_ms: s.switch,
        lora_switch_ms: l.switch,
        ratio: l.switch / s.switch,
        shira_total_ms: s.total,
        lora_total_ms: l.total,
        total_ratio: l.total / s.total,
      });

    // (1) warm whole-model switch between two single-adapter mixes, SHiRA vs LoRA.
    const warm = async (ids: number[]) => {
      await apply([{ adapterId: ids[0]!, alpha: 1 }]);
      await apply([{ adapterId: ids[1]!, alpha: 1 }]);
      let r = 0;
      return timed(() => [{ adapterId: ids[r++ % 2]!, alpha: 1 }]);
    };
    row('library_warm_switch', await warm(shira), await warm(lora), { ratio_target: 4 });

    // α change of one adapter in a two-adapter mix (incremental re-blend).
    const alpha = async (ids: number[]) => {
      await apply([
        { adapterId: ids[0]!, alpha: 1 },
        { adapterId: ids[1]!, alpha: 0.4 },
      ]);
      let r = 0;
      return timed(() => [
        { adapterId: ids[0]!, alpha: 1 },
        { adapterId: ids[1]!, alpha: 0.5 + 0.1 * r++ },
      ]);
    };
    row('library_alpha_change', await alpha(shira), await alpha(lora));

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
      threads: o.threads,
      shira_switch_ms: cs.total,
      lora_switch_ms: cl.total,
      ratio: cl.total / cs.total,
      shira_decode_ms: cs.decode,
      lora_decode_ms: cl.decode,
      shira_blend_ms: cs.blend,
      lora_blend_ms: cl.blend,
    });

    // (4) blend time against the number of adapters, from W0 (the adapter list's merged union is cached after the
    // first rep, as it is when an artist returns to a mix).
    for (let n = 1; n <= o.maxN; n *= 2) {
      const blend = (ids: number[]) =>
        timed(
          () => ids.slice(0, n).map((adapterId) => ({ adapterId, alpha: 1 / n })),
          () => apply([]),
        );
      const nnz = shira.slice(0, n).reduce((a, id) => a + core.adapters.summary(id).trainable, 0);
      row('library_blend_n', await blend(shira), await blend(lora), { n, nnz_total: nnz });
    }
  } finally {
    await core.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
