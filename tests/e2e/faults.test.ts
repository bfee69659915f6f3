// Fault injection: the studio server process (with its native workers) is killed with SIGKILL in the
// middle of an adapter import, a mix apply and a generation, then started again on the same data
// folder. Each round checks that nothing was lost (the trained adapter, the dataset, the saved mix,
// every earlier generation, bit for bit where it has a hash), nothing is half-written (an adapter or
// a generation is there whole or not at all), no staging or temp file is left, and no worker is
// left running. Kill moments: seeded fractions of the call's measured duration, plus one at the
// worst moment of each call — when its first file appears on disk (cache file, generated image).
// Needs `npx electron-vite build` and native/build/shira-worker.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AdapterDetail, AdapterSummary, Generation, GenerationPage, HealthReport } from '../../src/shared/api';
import type { CallOutcome } from '../../src/shared/bridge';
import { solidImage, writeTree } from '../unit/helpers';
import { FUZZ_SEED, rng } from '../unit/seeded';
import { ROOT, spawnServer, waitGone, type ServerProcess } from './server-process';

const WORKER = join(ROOT, 'native', 'build', 'shira-worker');
const runnable = existsSync(WORKER) || process.env.CI === 'true';
/** Kills per operation at seeded moments, plus one when the operation's first file appears. */
const TIMED_KILLS = 2;

const dirs: string[] = [];
let server: ServerProcess | undefined;
afterAll(async () => {
  await server?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function value<T>(p: Promise<CallOutcome>): Promise<T> {
  const outcome = await p;
  if (!outcome.ok) throw new Error(`${outcome.error.type}: ${outcome.error.message}`);
  return outcome.value as T;
}

async function trainOne(s: ServerProcess, datasetId: number, name: string): Promise<AdapterSummary> {
  const job = await value<{ id: number }>(s.call('training.start', { datasetId, method: 'shira', steps: 3, batch: 1, name }));
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    const j = await value<{ status: string; adapterId: number | null; error: string | null }>(s.call('training.get', { id: job.id }));
    if (j.status === 'completed') return value<AdapterSummary>(s.call('adapters.get', { id: j.adapterId! }));
    if (j.status === 'failed' || j.status === 'cancelled') throw new Error(`training failed: ${j.error}`);
  }
}

/** What must survive every round, and how to tell a whole record from a half-written one. */
interface Reference {
  adapter: AdapterDetail;
  imported: AdapterDetail | null;
  datasetImages: number;
  mixNames: string[];
  generations: Generation[];
}

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

describe.runIf(runnable)('fault injection (kill -9 of the studio server mid-operation)', () => {
  it('loses nothing, half-writes nothing and leaves no staging after kills during adapter import, mix apply and generation', { timeout: 600_000 }, async () => {
    const r = rng(FUZZ_SEED);
    const dataDir = await mkdtemp(join(tmpdir(), 'shira-faults-data-'));
    const images = await mkdtemp(join(tmpdir(), 'shira-faults-images-'));
    dirs.push(dataDir, images);
    writeTree(images, {
      'a.png': await solidImage(64, 64, 'png', { r: 250, g: 30, b: 200 }),
      'b.png': await solidImage(64, 64, 'png', { r: 20, g: 240, b: 230 }),
    });

    // ---- Setup: a dataset, two trained adapters (one kept, one exported and removed), a saved mix, a generation ----
    server = await spawnServer(dataDir);
    const s0 = server;
    const datasetId = (await value<{ datasetId: number }>(s0.call('datasets.import', { source: { kind: 'folder', path: images } }))).datasetId;
    const kept = await trainOne(s0, datasetId, 'kept');
    const moved = await trainOne(s0, datasetId, 'moved');
    const exported = await value<{ file: string }>(s0.call('adapters.export', { id: moved.id }));
    const movedDetail = await value<AdapterDetail>(s0.call('adapters.get', { id: moved.id }));
    await value(s0.call('adapters.delete', { id: moved.id }));
    await value(s0.call('mixes.save', { name: 'kept at 0.8', entries: [{ adapterId: kept.id, alpha: 0.8 }] }));
    const mix = [{ adapterId: kept.id, alpha: 0.8 }];
    const genRequest = { prompt: 'a glowing ring', steps: 6, seed: 7, engine: 'worker', mix };
    await value(s0.call('generate', genRequest));
    const ref: Reference = {
      adapter: await value<AdapterDetail>(s0.call('adapters.get', { id: kept.id })),
      imported: null,
      datasetImages: (await value<{ images: unknown[] }>(s0.call('datasets.get', { id: datasetId }))).images.length,
      mixNames: (await value<{ name: string }[]>(s0.call('mixes.list', {}))).map((m) => m.name),
      generations: (await value<GenerationPage>(s0.call('generations.list', {}))).items,
    };
    await s0.stop();

    /** The checks after every restart. */
    async function verify(s: ServerProcess, round: string, killedPid: number): Promise<void> {
      const health = await value<HealthReport>(s.call('app.health', { full: true }));
      expect({ round, ok: health.ok, integrity: health.integrity }).toEqual({ round, ok: true, integrity: ['ok'] });
      const adapters = await value<AdapterSummary[]>(s.call('adapters.list', {}));
      // The kept adapter, bit for bit (its content hash covers every tensor's values and indices).
      const kept2 = await value<AdapterDetail>(s.call('adapters.get', { id: ref.adapter.id }));
      expect({ round, hash: kept2.contentHash, tensors: kept2.tensors.length }).toEqual({ round, hash: ref.adapter.contentHash, tensors: ref.adapter.tensors.length });
      // An imported adapter is whole or absent.
      const others = adapters.filter((a) => a.id !== ref.adapter.id);
      expect({ round, others: others.length <= 1 }).toEqual({ round, others: true });
      for (const a of others) {
        const d = await value<AdapterDetail>(s.call('adapters.get', { id: a.id }));
        expect({ round, hash: d.contentHash, tensors: d.tensors.length, bytes: d.sizeBytes }).toEqual({
          round,
          hash: movedDetail.contentHash,
          tensors: movedDetail.tensors.length,
          bytes: movedDetail.sizeBytes,
        });
      }
      expect((await value<{ images: unknown[] }>(s.call('datasets.get', { id: datasetId }))).images.length).toBe(ref.datasetImages);
      expect((await value<{ name: string }[]>(s.call('mixes.list', {}))).map((m) => m.name)).toEqual(ref.mixNames);
      // Every generation is whole: its row and a PNG that loads.
      const gens = (await value<GenerationPage>(s.call('generations.list', {}))).items;
      for (const g of ref.generations) expect(gens.some((x) => x.id === g.id && x.seed === g.seed)).toBe(true);
      for (const g of gens) {
        const res = await fetch(`http://127.0.0.1:${s.port}/media/generation/${g.id}`, { headers: { authorization: `Bearer ${s.token}` } });
        const png = Buffer.from(await res.arrayBuffer());
        expect({ round, id: g.id, status: res.status, png: png.subarray(1, 4).toString() }).toEqual({ round, id: g.id, status: 200, png: 'PNG' });
      }
      // No staging or temp file of the killed process, no uncommitted cache file.
      const dead = String(killedPid);
      expect({ round, tmp: files(join(dataDir, 'tmp')).filter((f) => f.includes(`-${dead}-`) || f.includes(`-${dead}.`)) }).toEqual({ round, tmp: [] });
      const referenced = new Set(adapters.map((a) => `${a.fileSha256}.safetensors`));
      expect({ round, cache: files(join(dataDir, 'cache', 'adapters')).filter((f) => !referenced.has(f)) }).toEqual({ round, cache: [] });
    }

    /** Undoes what a round's operation may have committed before the kill, so the next round starts alike. */
    async function reset(s: ServerProcess): Promise<void> {
      for (const a of await value<AdapterSummary[]>(s.call('adapters.list', {}))) if (a.id !== ref.adapter.id) await value(s.call('adapters.delete', { id: a.id }));
      for (const g of (await value<GenerationPage>(s.call('generations.list', {}))).items) {
        if (!ref.generations.some((x) => x.id === g.id)) await value(s.call('generations.delete', { id: g.id }));
      }
    }

    /** Starts the server, runs `op` and kills the process `atMs` later or when `trigger` sees its file; then restarts, verifies and resets. */
    async function kill(round: string, op: (s: ServerProcess) => Promise<CallOutcome>, when: { atMs?: number; trigger?: () => boolean }): Promise<{ inFlight: boolean }> {
      const s = await spawnServer(dataDir);
      server = s;
      let settled = false;
      const call = op(s).then(
        () => (settled = true),
        () => undefined,
      );
      await new Promise<void>((resolveKill) => {
        const started = Date.now();
        const poll = setInterval(() => {
          if (settled || (when.trigger?.() ?? false) || (when.atMs !== undefined && Date.now() - started >= when.atMs)) {
            clearInterval(poll);
            resolveKill();
          }
        }, 2);
      });
      const inFlight = !settled;
      const workers = s.children();
      await s.kill9();
      await call;
      // The workers see their stdin close and exit: nothing keeps running after the app is gone.
      for (const pid of workers) expect({ round, worker: pid, gone: await waitGone(pid) }).toEqual({ round, worker: pid, gone: true });
      const again = await spawnServer(dataDir);
      server = again;
      await verify(again, round, s.pid);
      await reset(again);
      await again.stop();
      return { inFlight };
    }

    /** Measures an operation once (uninterrupted, on a fresh process, as the kill rounds run it). */
    async function measure(op: (s: ServerProcess) => Promise<CallOutcome>): Promise<number> {
      const s = await spawnServer(dataDir);
      server = s;
      const t0 = Date.now();
      const outcome = await op(s);
      const ms = Date.now() - t0;
      if (!outcome.ok) throw new Error(`${outcome.error.type}: ${outcome.error.message}`);
      await reset(s);
      await s.stop();
      return ms;
    }

    const cacheDir = join(dataDir, 'cache', 'adapters');
    const tmp = join(dataDir, 'tmp');
    const operations: { name: string; op: (s: ServerProcess) => Promise<CallOutcome>; before?: () => void; trigger: () => boolean }[] = [
      {
        name: 'adapter import',
        op: (s) => s.call('adapters.import', { path: exported.file }),
        // The canonical file is written to the cache before the worker checks it and the row commits.
        trigger: () => files(cacheDir).some((f) => f.startsWith('incoming-') || f === `${movedDetail.fileSha256}.safetensors`),
      },
      {
        name: 'mix apply',
        op: (s) => s.call('mix.apply', { entries: mix }),
        // Without its cache file the apply rebuilds it from the rows first: a write the kill can cut.
        before: () => rmSync(join(cacheDir, `${ref.adapter.fileSha256}.safetensors`), { force: true }),
        trigger: () => files(cacheDir).some((f) => f.startsWith('incoming-') || f === `${ref.adapter.fileSha256}.safetensors`),
      },
      {
        name: 'generation',
        op: (s) => s.call('generate', genRequest),
        trigger: () => files(tmp).some((f) => f.startsWith('generate-')),
      },
    ];

    const report: string[] = [];
    let faults = 0;
    let inFlight = 0;
    for (const o of operations) {
      o.before?.();
      const ms = await measure(o.op);
      const moments: { label: string; atMs?: number; trigger?: () => boolean }[] = [
        ...Array.from({ length: TIMED_KILLS }, (_, i) => {
          const atMs = Math.round(ms * ((i + 0.2 + 0.6 * r.next()) / TIMED_KILLS));
          return { label: `at ${atMs} ms`, atMs };
        }),
        { label: 'at its first file', trigger: o.trigger, atMs: ms * 3 },
      ];
      for (const m of moments) {
        o.before?.();
        const result = await kill(`${o.name} ${m.label}`, o.op, m);
        faults++;
        if (result.inFlight) inFlight++;
        report.push(`${o.name} (${ms} ms uninterrupted) killed ${m.label}${result.inFlight ? '' : ' (had already answered)'}`);
      }
    }
    console.log(`fault injection: seed ${FUZZ_SEED}, ${faults} kills (SIGKILL) injected, ${inFlight} with the call in flight, ${faults} survived:\n  ${report.join('\n  ')}`);
    expect(inFlight).toBeGreaterThanOrEqual(operations.length);
  });
});
