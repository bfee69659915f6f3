// The worker protocol typed once (src/main/core/worker/protocol.ts): the op names are the worker's own, argument
// names are checked at compile time (the @ts-expect-error lines fail `npm run typecheck` if they ever compile),
// and camelCase arguments reach the worker in its snake_case.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { wireArgs, type ArgsOf, type OpName, type ReplyOf, type WorkerOps } from '../../src/main/core/worker/protocol';
import { WorkerError, WorkerSupervisor } from '../../src/main/core/worker/supervisor';

const ROOT = resolve(__dirname, '../..');
const WORKER = join(ROOT, 'native', 'build', 'shira-worker');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

// Every op of the protocol, once: `satisfies` fails to compile when one is missing here or unknown there.
const OPS = {
  info: true,
  load_model: true,
  unload: true,
  save_model: true,
  train: true,
  cancel: true,
  sample: true,
  apply_mix: true,
  clear_mix: true,
  adapter_inspect: true,
  adapter_export: true,
  adapter_convert: true,
  adapter_overlap: true,
  judge_train: true,
  judge_score: true,
  tokenize: true,
  forward: true,
  bench: true,
  shutdown: true,
} satisfies Record<OpName<WorkerOps>, true>;

describe('worker protocol', () => {
  it('maps camelCase arguments to the worker’s names in one place, leaving values alone', () => {
    expect(wireArgs({ progressEvery: 5, captionKeepWords: ['inkfx'], alphaA: 0.5, heldoutFraction: 0.2, out: 'x' })).toEqual({
      progress_every: 5,
      caption_keep_words: ['inkfx'],
      alpha_a: 0.5,
      heldout_fraction: 0.2,
      out: 'x',
    });
    // Nested objects are data in the worker's own terms (a model config, the mix's {path, alpha}).
    expect(wireArgs({ config: { block_out_channels: [8] }, adapters: [{ path: 'a', alpha: 1 }] })).toEqual({ config: { block_out_channels: [8] }, adapters: [{ path: 'a', alpha: 1 }] });
  });

  it('types arguments and replies by op, so a wrong name does not compile', () => {
    expectTypeOf<ArgsOf<WorkerOps, 'train'>>().toHaveProperty('progressEvery');
    expectTypeOf<ArgsOf<WorkerOps, 'sample'>>().toHaveProperty('negativePrompt');
    expectTypeOf<ReplyOf<WorkerOps, 'apply_mix'>>().toHaveProperty('layers_reblended').toBeNumber();
    expectTypeOf<ReplyOf<WorkerOps, 'judge_train'>>().toHaveProperty('heldout_accuracy').toBeNumber();
    const w = null as unknown as WorkerSupervisor;
    const neverRun = () => [
      // @ts-expect-error the worker's spelling is mapped, not written: progressEvery
      w.request('train', { data: 'd.safetensors', out: 'a.safetensors', progress_every: 5 }),
      // @ts-expect-error no such op
      w.request('trian', {}),
      // @ts-expect-error apply_mix needs its adapters
      w.request('apply_mix', {}),
      // @ts-expect-error a mask the worker does not know
      w.request('train', { data: 'd.safetensors', out: 'a.safetensors', mask: 'random' }),
    ];
    expect(neverRun).toBeTypeOf('function');
  });

  it.runIf(existsSync(WORKER))('tokenizes a prompt with the shipped CLIP merges: ids, the A1111 count and emphasis', async () => {
    const w = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    cleanups.push(() => w.close());
    const tokenizer = join(ROOT, 'resources', 'tokenizers', 'clip', 'merges.txt');
    // "a photo of a cat": 320 1125 539 320 2368 (HF transformers' CLIPTokenizer docs), BOS 49406, EOS 49407 padding.
    const r = await w.request('tokenize', { prompt: 'a photo of a (cat:1.3)', tokenizer });
    expect(r.chunks).toBe(1);
    expect(r.token_count).toBe(5);
    expect(r.ids[0]!.slice(0, 8)).toEqual([49406, 320, 1125, 539, 320, 2368, 49407, 49407]);
    expect(r.ids[0]).toHaveLength(77);
    expect(r.weights[0]![5]).toBeCloseTo(1.3, 6);
    expect(r.weights[0]![4]).toBe(1);
    expect(r.tokens[0]).toEqual(['a</w>', 'photo</w>', 'of</w>', 'a</w>', 'cat</w>']);
    // SD-2's OpenCLIP pads with 0; a long prompt becomes chunks of 75.
    const long = await w.request('tokenize', { prompt: Array(100).fill('cat').join(' '), tokenizer, pad: 'zero' });
    expect(long.chunks).toBe(2);
    expect(long.token_count).toBe(100);
    expect(long.ids[1]!.slice(25, 28)).toEqual([2368, 49407, 0]);
    const bad = (await w.request('tokenize', { prompt: 'x', tokenizer, emphasis: 'strong' as 'none' }).catch((e: unknown) => e)) as WorkerError;
    expect(bad.error.type).toBe('bad_input');
    expect(bad.error.message).toMatch(/emphasis/);
  });

  it.runIf(existsSync(WORKER))('names exactly the ops the worker serves', async () => {
    const w = new WorkerSupervisor({ binary: WORKER, threads: 1 });
    cleanups.push(() => w.close());
    // The unknown-op error lists the worker's op table ("allowed: info, load_model, …").
    const error = (await w.request('nope' as OpName<WorkerOps>, {}).catch((e: unknown) => e)) as WorkerError;
    expect(error).toBeInstanceOf(WorkerError);
    const served = /allowed: ([^)]*)\)/.exec(error.error.message)![1]!.split(', ');
    expect([...served].sort()).toEqual(Object.keys(OPS).sort());
  });
});
