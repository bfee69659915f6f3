// onnxruntime-node in a worker_thread: InferenceSession.run blocks the JS thread it is called on, so the core's
// event loop (API calls, the UI's sliders) must not be that thread.
//
// The thread owns the sessions and the weight Float32Arrays that are fed as graph inputs. Those arrays live only
// there (SharedArrayBuffer inputs are rejected by the binding) and ORT's CPU provider reads them without a copy, so a
// mix is a scatter into them: `scatter` writes values at flat indices, in order, and the next `run` sees them.
//
// The thread's code is a plain-JS string run with `eval: true`, so it needs no build entry of its own; it loads
// onnxruntime-node from the path the main thread resolved.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const THREAD_CODE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
const sessions = new Map(); // name -> { session, weights: { inputName: ort.Tensor } }
async function handle(m) {
  if (m.op === 'load') {
    const opts = { intraOpNumThreads: m.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' };
    const session = await ort.InferenceSession.create(m.bytes, opts);
    const weights = {};
    for (const w of m.weights) {
      if (!session.inputNames.includes(w.name)) throw new Error('ONNX model "' + m.name + '" has no input "' + w.name + '"');
      weights[w.name] = new ort.Tensor('float32', w.data, w.shape);
    }
    sessions.set(m.name, { session, weights });
    return { result: { inputNames: session.inputNames, outputNames: session.outputNames } };
  }
  const s = sessions.get(m.name);
  if (!s) throw new Error('ONNX model "' + m.name + '" is not loaded');
  if (m.op === 'scatter') {
    const t0 = performance.now();
    for (const u of m.updates) {
      const w = s.weights[u.tensor];
      if (!w) throw new Error('"' + u.tensor + '" is not a weight input of "' + m.name + '"');
      const data = w.data, idx = u.indices, val = u.values, n = data.length;
      for (let k = 0; k < idx.length; k++) {
        const i = idx[k];
        if (i < 0 || i >= n) throw new Error('index ' + i + ' is outside "' + u.tensor + '"');
        data[i] = val[k];
      }
    }
    return { result: { ms: performance.now() - t0 } };
  }
  if (m.op === 'read') {
    const w = s.weights[m.tensor];
    if (!w) throw new Error('"' + m.tensor + '" is not a weight input of "' + m.name + '"');
    return { result: Float32Array.from(m.indices ? Array.from(m.indices, (i) => w.data[i]) : w.data) };
  }
  if (m.op === 'run') {
    const feeds = Object.assign({}, s.weights);
    for (const [k, v] of Object.entries(m.feeds)) feeds[k] = new ort.Tensor(v.type, v.data, v.dims);
    const t0 = performance.now();
    const out = await s.session.run(feeds);
    const ms = performance.now() - t0;
    const result = {};
    const transfer = [];
    for (const [k, v] of Object.entries(out)) {
      const data = v.data.slice();
      result[k] = { dims: v.dims, data };
      transfer.push(data.buffer);
    }
    return { result: { outputs: result, ms }, transfer };
  }
  throw new Error('unknown op ' + m.op);
}
parentPort.on('message', (m) => {
  handle(m).then(
    (r) => parentPort.postMessage({ id: m.id, ok: true, result: r.result }, r.transfer || []),
    (e) => parentPort.postMessage({ id: m.id, ok: false, message: e && e.message ? e.message : String(e) }),
  );
});
`;

export interface FeedTensor {
  type: 'float32' | 'int64';
  dims: number[];
  data: Float32Array | BigInt64Array;
}

export interface RunResult {
  outputs: Record<string, { dims: number[]; data: Float32Array }>;
  /** Time inside session.run, in the thread. */
  ms: number;
}

export interface ScatterUpdate {
  tensor: string;
  indices: Int32Array;
  values: Float32Array;
}

export class OrtThread {
  private readonly worker_: Worker;
  private nextId_ = 1;
  private readonly pending_ = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private failed_: Error | null = null;

  constructor() {
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    this.worker_ = new Worker(THREAD_CODE, { eval: true, workerData: { ortPath } });
    this.worker_.on('message', (m: { id: number; ok: boolean; result?: unknown; message?: string }) => {
      const p = this.pending_.get(m.id);
      if (!p) return;
      this.pending_.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`ONNX runtime: ${m.message}`));
    });
    const fail = (error: Error) => {
      this.failed_ = error;
      for (const p of this.pending_.values()) p.reject(error);
      this.pending_.clear();
    };
    this.worker_.on('error', (e) => fail(new Error(`ONNX runtime thread failed: ${e.message}`)));
    this.worker_.on('exit', (code) => fail(new Error(`ONNX runtime thread exited (code ${code})`)));
  }

  private call<T>(message: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failed_) return Promise.reject(this.failed_);
    const id = this.nextId_++;
    return new Promise<T>((resolve, reject) => {
      this.pending_.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker_.postMessage({ ...message, id }, transfer);
    });
  }

  /**
   * Creates a session; `weights` become the graph inputs the thread keeps and patches (their buffers are transferred:
   * pass copies you no longer need).
   */
  load(name: string, bytes: Uint8Array, weights: { name: string; shape: number[]; data: Float32Array }[], threads: number): Promise<{ inputNames: string[]; outputNames: string[] }> {
    return this.call(
      { op: 'load', name, bytes, weights, threads },
      weights.map((w) => w.data.buffer as ArrayBuffer),
    );
  }

  /** Writes values at flat indices of the named weight inputs, in list order. */
  scatter(name: string, updates: ScatterUpdate[]): Promise<{ ms: number }> {
    return this.call({ op: 'scatter', name, updates });
  }

  /** A copy of a weight input as the thread holds it now (tests; whole tensor or at `indices`). */
  read(name: string, tensor: string, indices?: Int32Array): Promise<Float32Array> {
    return this.call({ op: 'read', name, tensor, indices });
  }

  run(name: string, feeds: Record<string, FeedTensor>): Promise<RunResult> {
    return this.call({ op: 'run', name, feeds });
  }

  async close(): Promise<void> {
    this.failed_ ??= new Error('ONNX runtime thread closed');
    await this.worker_.terminate();
  }
}
