import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { packImages, withTrigger } from '../../src/main/core/worker/pack';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import type { WorkerEvent } from '../../src/main/core/worker/protocol';
import { WorkerError, WorkerExitError, WorkerSupervisor } from '../../src/main/core/worker/supervisor';
import { makeCore, tempDir } from './helpers';

const FAKE = resolve(__dirname, '../fixtures/fake-worker.mjs');
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The ops tests/fixtures/fake-worker.mjs serves. */
type FakeOps = {
  echo: { args: Record<string, unknown>; reply: Record<string, unknown> };
  steps: { args: { n: number }; reply: { done: number }; event: { event: 'progress'; step: number; total: number } };
  fail: { args: Record<string, never>; reply: never };
  crash: { args: Record<string, never>; reply: never };
  hang: { args: Record<string, never>; reply: never };
};

function supervisor(extra: Partial<ConstructorParameters<typeof WorkerSupervisor>[0]> = {}) {
  const dir = tempDir('shira-worker-');
  const logFile = join(dir.path, 'worker.log');
  const w = new WorkerSupervisor<FakeOps>({ binary: process.execPath, args: [FAKE], logFile, threads: 2, ...extra });
  cleanups.push(dir.cleanup, () => w.close());
  return { w, logFile };
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('worker supervisor', () => {
  it('waits for the readiness line, passes OMP_NUM_THREADS, logs stray output', async () => {
    const { w, logFile } = supervisor();
    const info = await w.start();
    expect(info).toMatchObject({ version: 'fake-1', device: 'cpu', threads: '2' });
    expect(w.state).toBe('ready');
    await w.request('echo', {});
    expect(readFileSync(logFile, 'utf8')).toMatch(/stdout: booting/);
  });

  it('routes replies and progress events by request id, concurrently', async () => {
    const { w } = supervisor();
    const events: WorkerEvent[] = [];
    const [a, b] = await Promise.all([w.request('steps', { n: 3 }, (e) => events.push(e)), w.request('echo', { x: 1, progressEvery: 2 })]);
    expect(a).toEqual({ done: 3 });
    // The worker sees its own argument names.
    expect(b).toEqual({ x: 1, progress_every: 2 });
    expect(events.map((e) => e.step)).toEqual([1, 2, 3]);
  });

  it('turns error replies into tagged WorkerErrors', async () => {
    const { w } = supervisor();
    const error = await w.request('fail', {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerError);
    expect((error as WorkerError).error).toEqual({ type: 'bad_input', message: 'fail was asked for', details: undefined });
  });

  it('fails requests in flight when the worker crashes, then restarts it', async () => {
    const { w } = supervisor();
    await w.start();
    const firstPid = w.pid;
    const crashed = await w.request('crash', {}).catch((e: unknown) => e);
    // A death is its own error type (the training queue resumes on it), still an internal WorkerError.
    expect(crashed).toBeInstanceOf(WorkerExitError);
    expect((crashed as WorkerExitError).why).toBe('code 3');
    expect((crashed as WorkerError).error).toMatchObject({ type: 'internal', message: expect.stringMatching(/stopped \(code 3\)/) });
    await until(() => w.state === 'ready' && w.pid !== firstPid);
    expect(await w.request('echo', { again: true })).toEqual({ again: true });
  });

  it('gives up after too many crashes in a row', async () => {
    const { w } = supervisor({ maxRestarts: 1 });
    await w.request('crash', {}).catch(() => {});
    await until(() => w.state === 'ready');
    await w.request('crash', {}).catch(() => {});
    await until(() => w.state === 'failed');
  });

  it('says clearly when the binary is missing or never becomes ready', async () => {
    const missing = supervisor({ binary: '/nonexistent/shira-worker', args: [] });
    await expect(missing.w.start()).rejects.toMatchObject({ type: 'unsupported', message: expect.stringMatching(/could not be started/) });
    const silent = supervisor({ env: { FAKE_WORKER_NO_READY: '1' }, readyTimeoutMs: 300 });
    await expect(silent.w.start()).rejects.toMatchObject({ message: expect.stringMatching(/did not start in time/) });
  });

  it('kills the worker on close and fails what was pending', async () => {
    const { w } = supervisor();
    await w.start();
    const pid = w.pid!;
    const hanging = w.request('hang', {}).catch((e: unknown) => e);
    await w.close();
    expect(((await hanging) as WorkerError).error.type).toBe('cancelled');
    expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('safetensors and packed datasets', () => {
  it('round-trips tensors and metadata, 8-byte aligned, written atomically', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const file = join(dir.path, 'x.safetensors');
    const f32 = new Float32Array([1.5, -2, 3.25, 0]);
    writeSafetensors(
      file,
      [
        ['w', { dtype: 'F32', shape: [2, 2], data: new Uint8Array(f32.buffer) }],
        ['idx', { dtype: 'I32', shape: [1], data: new Uint8Array(new Int32Array([7]).buffer) }],
      ],
      { a: 'b' },
    );
    const raw = readFileSync(file);
    expect(Number(raw.readBigUInt64LE()) % 8).toBe(0);
    const back = readSafetensors(file);
    expect(back.metadata).toEqual({ a: 'b' });
    expect([...new Float32Array(back.tensors.get('w')!.data.slice().buffer)]).toEqual([...f32]);
    expect(back.tensors.get('idx')!.shape).toEqual([1]);
    expect(() => writeSafetensors(file, [['bad', { dtype: 'F32', shape: [3], data: new Uint8Array(4) }]])).toThrow(/needs 12/);
    expect(existsSync(`${file}.tmp`)).toBe(false);
  });

  it('refuses files that are not safetensors', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const file = join(dir.path, 'junk.safetensors');
    writeSafetensors(file, []);
    writeFileSync(file, Buffer.from('\xff\xff\xff\xff\xff\xff\xff\x7fjunk', 'latin1'));
    expect(() => readSafetensors(file)).toThrow(/not a safetensors file/);
  });

  it('packs images as U8 [N,H,W,3] with captions (trigger word first) and repeats', async () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const file = join(dir.path, 'packed.safetensors');
    const wide = await sharp({ create: { width: 40, height: 20, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 1 } } })
      .png()
      .toBuffer();
    const clear = await sharp({ create: { width: 16, height: 16, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .png()
      .toBuffer();
    const result = await packImages(
      [
        { caption: 'a red bar', repeats: 3, image: wide },
        { caption: 'inkfx, nothing', repeats: 1, image: clear },
      ],
      file,
      { resolution: 8, fit: 'contain', triggerWord: 'inkfx' },
    );
    expect(result).toEqual({ count: 2, bytes: 2 * 8 * 8 * 3 });
    const back = readSafetensors(file);
    const images = back.tensors.get('images')!;
    expect(images).toMatchObject({ dtype: 'U8', shape: [2, 8, 8, 3] });
    // contain pads the 2:1 red bar with white rows above and below; the centre is red.
    const px = (n: number, y: number, x: number) => [...images.data.slice(((n * 8 + y) * 8 + x) * 3, ((n * 8 + y) * 8 + x) * 3 + 3)];
    expect(px(0, 0, 4)).toEqual([255, 255, 255]);
    expect(px(0, 4, 4)).toEqual([255, 0, 0]);
    expect(px(1, 4, 4)).toEqual([255, 255, 255]);
    expect(JSON.parse(back.metadata.captions!)).toEqual(['inkfx, a red bar', 'inkfx, nothing']);
    expect(JSON.parse(back.metadata.repeats!)).toEqual([3, 1]);
    expect(withTrigger('', 'x')).toBe('x');
    await expect(packImages([], file, { resolution: 8 })).rejects.toMatchObject({ type: 'bad_input' });
  });
});

describe('core ↔ worker', () => {
  it('reports a missing engine with what to do, without failing', async () => {
    const { call, cleanup } = makeCore({ worker: { binary: '/nonexistent/native/build/shira-worker' } });
    cleanups.push(cleanup);
    expect(await call('worker.status', { start: true })).toMatchObject({ available: false, state: 'stopped', reason: expect.stringMatching(/not built.*npm start/) });
  });

  it('starts the engine on request and reports its device', async () => {
    const { call, core, cleanup } = makeCore({ worker: { binary: process.execPath, args: [FAKE] } });
    cleanups.push(cleanup);
    expect(await call('worker.status', {})).toMatchObject({ available: true, state: 'stopped' });
    expect(await call('worker.status', { start: true })).toMatchObject({ available: true, state: 'ready', version: 'fake-1', device: 'cpu' });
    const pid = core.worker!.pid!;
    await cleanup();
    cleanups.pop();
    expect(() => process.kill(pid, 0)).toThrow();
  });
});
