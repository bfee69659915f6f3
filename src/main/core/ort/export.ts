// ONNX export of the built-in model family: the word-level text encoder and the UNet as two graphs.
//
// A copy kept on purpose (ONNX deployment): each graph spells out the native model's forward pass op for op —
// the text encoder of word_text_encoder_init (model/text_encoder), unet_forward with its timestep_embedding
// (model/unet), attention (model/attention.h) and the adapted Layer (model/layer). A change to the native model is
// made here too; tests/unit/ort.test.ts compares the exported graphs' outputs with the worker's `forward` op.
//
// SHiRA-targeted weights (layers matching `targets`, by default the worker's kDefaultTargets) are graph INPUTS named
// by their parameter name ("unet.mid_block.attentions.0.proj_in.weight") in the worker's layout ([out, in] for Linear,
// [out, in, kh, kw] for Conv), so a flat index i·n + j of an adapter addresses the same element of the fed
// Float32Array and a mix is applied by writing into it in place. Every other weight is an initializer.
//
// Graphs (B is dynamic; spatial size and text length are fixed by the config):
//   text_encoder: input_ids INT64 [B, L]                                   -> context FLOAT [B, L, D]
//   unet:         x FLOAT [B, C, S, S], t INT64 [B], context FLOAT [B, L, D] -> out FLOAT [B, C, S, S]
// plus one FLOAT input per targeted weight in each.
import { DT, GraphBuilder } from './onnx-graph';
import { DEFAULT_TARGETS, layerMatches, type ModelConfig, type Weight } from './model';

export interface WeightInput {
  name: string;
  shape: number[];
}

export interface ExportedGraph {
  bytes: Uint8Array;
  /** The graph inputs that carry weights (fed from Float32Arrays the runtime patches in place). */
  weightInputs: WeightInput[];
}

export interface ExportedModel {
  textEncoder: ExportedGraph;
  unet: ExportedGraph;
  targets: string[];
}

export interface ExportOptions {
  /** Layer patterns whose weights become graph inputs (native layer_matches syntax). */
  targets?: readonly string[];
}

/** Builds one graph; the helpers keep the worker's op order so the numbers match it as closely as fp32 allows. */
class ModelGraph {
  readonly g: GraphBuilder;
  readonly weightInputs: WeightInput[] = [];
  private readonly used_ = new Set<string>();

  constructor(
    name: string,
    private readonly weights: Map<string, Weight>,
    private readonly targets: readonly string[],
  ) {
    this.g = new GraphBuilder(name);
  }

  private weight(name: string): Weight {
    const w = this.weights.get(name);
    if (!w) throw new Error(`ONNX export: the weights lack '${name}'`);
    this.used_.add(name);
    return w;
  }

  /** A layer's weight: an input when the layer is targeted, else an initializer (optionally reshaped/transposed). */
  private layerWeight(module: string): string {
    const name = `${module}.weight`;
    const w = this.weight(name);
    if (layerMatches(module, this.targets)) {
      this.weightInputs.push({ name, shape: [...w.shape] });
      return this.g.input({ name, elemType: DT.FLOAT, dims: w.shape });
    }
    return this.g.initializer(name, w.shape, w.data);
  }

  param(name: string, dims?: number[]): string {
    const w = this.weight(name);
    return this.g.initializer(name, dims ?? w.shape, w.data);
  }

  has(name: string): boolean {
    return this.weights.has(name);
  }

  /** y = x Wᵀ + b on [rows, in] (Gemm with transB keeps W in the worker's [out, in] layout). */
  linear2d(x: string, module: string, bias = true): string {
    const W = this.layerWeight(module);
    const inputs = [x, W];
    if (bias && this.has(`${module}.bias`)) inputs.push(this.param(`${module}.bias`));
    return this.g.op('Gemm', inputs, { transB: 1 }, 'linear');
  }

  /** Linear on [B, N, in] -> [B, N, out] via [B·N, in]. */
  linear3d(x: string, module: string, n: number, inF: number, outF: number, bias = true): string {
    const flat = this.g.op('Reshape', [x, this.g.ints([-1, inF])]);
    return this.g.op('Reshape', [this.linear2d(flat, module, bias), this.g.ints([-1, n, outF])]);
  }

  conv(x: string, module: string, opts: { kernel: number; stride?: number; pad?: number }): string {
    const W = this.layerWeight(module);
    const p = opts.pad ?? 0;
    return this.g.op('Conv', [x, W, this.param(`${module}.bias`)], { kernel_shape: [opts.kernel, opts.kernel], strides: [opts.stride ?? 1, opts.stride ?? 1], pads: [p, p, p, p] }, 'conv');
  }

  layerNorm(x: string, module: string, eps = 1e-5): string {
    return this.g.op('LayerNormalization', [x, this.param(`${module}.weight`), this.param(`${module}.bias`)], { axis: -1, epsilon: eps }, 'layernorm');
  }

  /** GroupNorm as InstanceNormalization over [B, G, C/G·H·W] plus the per-channel affine (ONNX's own GroupNormalization-18 is per group). */
  groupNorm(x: string, module: string, groups: number, c: number, h: number, w: number, eps = 1e-5): string {
    const grouped = this.g.op('Reshape', [x, this.g.ints([-1, groups, (c / groups) * h * w])]);
    const normed = this.g.op(
      'InstanceNormalization',
      [grouped, this.g.floats(new Float32Array(groups).fill(1), [groups]), this.g.floats(new Float32Array(groups), [groups])],
      { epsilon: eps },
      'groupnorm',
    );
    const back = this.g.op('Reshape', [normed, this.g.ints([-1, c, h, w])]);
    return this.g.op('Add', [this.g.op('Mul', [back, this.param(`${module}.weight`, [c, 1, 1])]), this.param(`${module}.bias`, [c, 1, 1])]);
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])], {}, 'silu');
  }

  /** Exact GELU (torch::gelu's default): x · ½ (1 + erf(x/√2)). */
  gelu(x: string): string {
    const erf = this.g.op('Erf', [this.g.op('Mul', [x, this.g.floats([Math.SQRT1_2])])]);
    return this.g.op('Mul', [this.g.op('Mul', [x, this.g.floats([0.5])]), this.g.op('Add', [erf, this.g.floats([1])])], {}, 'gelu');
  }

  /** Multi-head attention without a mask (native attention()): q [B, N, C], k/v [B, M, C] -> [B, N, C]. */
  attention(q: string, k: string, v: string, n: number, m: number, c: number, heads: number): string {
    const d = c / heads;
    const split = (t: string, len: number, perm: number[]) => this.g.op('Transpose', [this.g.op('Reshape', [t, this.g.ints([-1, len, heads, d])])], { perm });
    const qh = split(q, n, [0, 2, 1, 3]);
    const kt = split(k, m, [0, 2, 3, 1]);
    const vh = split(v, m, [0, 2, 1, 3]);
    const scores = this.g.op('Div', [this.g.op('MatMul', [qh, kt]), this.g.floats([Math.sqrt(d)])]);
    const out = this.g.op('MatMul', [this.g.op('Softmax', [scores], { axis: -1 }), vh]);
    return this.g.op('Reshape', [this.g.op('Transpose', [out], { perm: [0, 2, 1, 3] }), this.g.ints([-1, n, c])]);
  }

  /** Weights the graph never used are an exporter bug or a model of another family: say which. */
  checkAllUsed(prefix: string): void {
    const unused = [...this.weights.keys()].filter((k) => k.startsWith(prefix) && !this.used_.has(k));
    if (unused.length) throw new Error(`ONNX export: ${unused.length} weights were not placed in the graph (first: ${unused[0]})`);
  }
}

/** Mirrors the native word text encoder's forward (model/text_encoder). */
function exportTextEncoder(config: ModelConfig, weights: Map<string, Weight>, targets: readonly string[]): ExportedGraph {
  const t = config.text;
  const m = new ModelGraph('text_encoder', weights, targets);
  const g = m.g;
  const L = t.maxLength;
  const D = t.width;
  const ids = g.input({ name: 'input_ids', elemType: DT.INT64, dims: ['batch', L] });
  const P = 'text_encoder.';
  const tok = g.op('Gather', [m.param(`${P}embeddings.token_embedding.weight`), ids], { axis: 0 });
  // Positions are arange(L) for every row, so the whole position table is added.
  let x = g.op('Add', [tok, m.param(`${P}embeddings.position_embedding.weight`)]);
  for (let i = 0; i < t.layers; i++) {
    const l = `${P}encoder.layers.${i}`;
    const h = m.layerNorm(x, `${l}.layer_norm1`);
    const q = m.linear3d(h, `${l}.self_attn.q_proj`, L, D, D);
    const k = m.linear3d(h, `${l}.self_attn.k_proj`, L, D, D);
    const v = m.linear3d(h, `${l}.self_attn.v_proj`, L, D, D);
    x = g.op('Add', [x, m.linear3d(m.attention(q, k, v, L, L, D, t.heads), `${l}.self_attn.out_proj`, L, D, D)]);
    const f = m.linear3d(m.gelu(m.linear3d(m.layerNorm(x, `${l}.layer_norm2`), `${l}.mlp.fc1`, L, D, 4 * D)), `${l}.mlp.fc2`, L, 4 * D, D);
    x = g.op('Add', [x, f]);
  }
  g.identity(m.layerNorm(x, `${P}final_layer_norm`), 'context');
  g.output('context', { elemType: DT.FLOAT, dims: ['batch', L, D] });
  m.checkAllUsed(P);
  return { bytes: g.encode(`shira-studio text encoder of ${config.name}`), weightInputs: m.weightInputs };
}

/** Sinusoidal frequencies exp(−ln(10⁴)·i/half) rounded as libtorch computes them in fp32. Mirrors native timestep_embedding. */
function timestepFreqs(half: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(half);
  const c = f(-Math.log(10000));
  for (let i = 0; i < half; i++) out[i] = f(Math.exp(f(f(c * i) / f(half))));
  return out;
}

/** Mirrors native unet_forward (model/unet). */
function exportUNet(config: ModelConfig, weights: Map<string, Weight>, targets: readonly string[]): ExportedGraph {
  const u = config.unet;
  const m = new ModelGraph('unet', weights, targets);
  const g = m.g;
  const S = u.sampleSize;
  const p = u.patchSize;
  const ch = u.blockOutChannels;
  const G = u.normNumGroups;
  const heads = u.attentionHeads;
  const L = config.text.maxLength;
  const D = config.text.width;
  const P = 'unet.';
  const x = g.input({ name: 'x', elemType: DT.FLOAT, dims: ['batch', u.inChannels, S, S] });
  const t = g.input({ name: 't', elemType: DT.INT64, dims: ['batch'] });
  const context = g.input({ name: 'context', elemType: DT.FLOAT, dims: ['batch', L, D] });

  // 1. time: [B] -> [B, ch0] (cos | sin) -> linear_1 -> silu -> linear_2
  const half = Math.floor(ch[0]! / 2);
  if (ch[0]! % 2) throw new Error('ONNX export: odd block_out_channels[0] (padded timestep embedding) is not supported');
  const tf = g.op('Unsqueeze', [g.op('Cast', [t], { to: DT.FLOAT }), g.ints([1])]);
  const args = g.op('Mul', [tf, g.floats(timestepFreqs(half), [1, half])]);
  const tEmb = g.op('Concat', [g.op('Cos', [args]), g.op('Sin', [args])], { axis: 1 });
  const emb = m.linear2d(m.silu(m.linear2d(tEmb, `${P}time_embedding.linear_1`)), `${P}time_embedding.linear_2`);
  const embAct = m.silu(emb); // every resnet's time_emb_proj takes silu(temb)

  let H = S / p;
  let C = ch[0]!;
  // 2. space-to-depth (pixel_unshuffle): channel = c·p² + i·p + j
  let h = x;
  if (p > 1) {
    const r = g.op('Reshape', [x, g.ints([-1, u.inChannels, H, p, H, p])]);
    h = g.op('Reshape', [g.op('Transpose', [r], { perm: [0, 1, 3, 5, 2, 4] }), g.ints([-1, u.inChannels * p * p, H, H])]);
  }
  h = m.conv(h, `${P}conv_in`, { kernel: 3, pad: 1 });

  const resnet = (input: string, module: string, cin: number, cout: number): string => {
    let r = m.conv(m.silu(m.groupNorm(input, `${module}.norm1`, G, cin, H, H)), `${module}.conv1`, { kernel: 3, pad: 1 });
    const te = g.op('Unsqueeze', [m.linear2d(embAct, `${module}.time_emb_proj`), g.ints([2, 3])]);
    r = g.op('Add', [r, te]);
    r = m.conv(m.silu(m.groupNorm(r, `${module}.norm2`, G, cout, H, H)), `${module}.conv2`, { kernel: 3, pad: 1 });
    const shortcut = cin !== cout ? m.conv(input, `${module}.conv_shortcut`, { kernel: 1 }) : input;
    return g.op('Add', [shortcut, r]);
  };

  const transformer = (input: string, module: string, c: number): string => {
    const n = H * H;
    let s = m.groupNorm(input, `${module}.norm`, G, c, H, H, 1e-6);
    if (!u.useLinearProjection) s = m.conv(s, `${module}.proj_in`, { kernel: 1 });
    // [B, C, H, W] -> [B·H·W, C] tokens
    let tok = g.op('Reshape', [g.op('Transpose', [s], { perm: [0, 2, 3, 1] }), g.ints([-1, c])]);
    if (u.useLinearProjection) tok = m.linear2d(tok, `${module}.proj_in`);
    let xs = g.op('Reshape', [tok, g.ints([-1, n, c])]);
    const b = `${module}.transformer_blocks.0`;
    const attn = (q: string, kv: string, prefix: string, m2: number, ckv: number) =>
      m.linear3d(
        m.attention(m.linear3d(q, `${prefix}.to_q`, n, c, c, false), m.linear3d(kv, `${prefix}.to_k`, m2, ckv, c, false), m.linear3d(kv, `${prefix}.to_v`, m2, ckv, c, false), n, m2, c, heads),
        `${prefix}.to_out.0`,
        n,
        c,
        c,
      );
    const h1 = m.layerNorm(xs, `${b}.norm1`);
    xs = g.op('Add', [xs, attn(h1, h1, `${b}.attn1`, n, c)]);
    xs = g.op('Add', [xs, attn(m.layerNorm(xs, `${b}.norm2`), context, `${b}.attn2`, L, D)]);
    // GEGLU: proj -> [h | gate], h · gelu(gate)
    const inner = 4 * c;
    const proj = m.linear3d(m.layerNorm(xs, `${b}.norm3`), `${b}.ff.net.0.proj`, n, c, 2 * inner);
    const [hPart, gate] = g.opN('Split', [proj, g.ints([inner, inner])], 2, { axis: -1 }, 'geglu');
    xs = g.op('Add', [xs, m.linear3d(g.op('Mul', [hPart!, m.gelu(gate!)]), `${b}.ff.net.2`, n, inner, c)]);
    let out = g.op('Reshape', [xs, g.ints([-1, c])]);
    if (u.useLinearProjection) out = m.linear2d(out, `${module}.proj_out`);
    let img = g.op('Transpose', [g.op('Reshape', [out, g.ints([-1, H, H, c])])], { perm: [0, 3, 1, 2] });
    if (!u.useLinearProjection) img = m.conv(img, `${module}.proj_out`, { kernel: 1 });
    return g.op('Add', [img, input]);
  };

  // 3. down
  const skips: { v: string; c: number }[] = [{ v: h, c: C }];
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j < u.layersPerBlock; j++) {
      const blk = `${P}down_blocks.${i}`;
      h = resnet(h, `${blk}.resnets.${j}`, C, ch[i]!);
      C = ch[i]!;
      if (u.attention[i]) h = transformer(h, `${blk}.attentions.${j}`, C);
      skips.push({ v: h, c: C });
    }
    if (i + 1 < ch.length) {
      h = m.conv(h, `${P}down_blocks.${i}.downsamplers.0.conv`, { kernel: 3, stride: 2, pad: 1 });
      H /= 2;
      skips.push({ v: h, c: C });
    }
  }
  // 4. mid
  h = resnet(h, `${P}mid_block.resnets.0`, C, C);
  h = transformer(h, `${P}mid_block.attentions.0`, C);
  h = resnet(h, `${P}mid_block.resnets.1`, C, C);
  // 5. up (up_blocks.0 is the deepest level)
  for (let k = 0; k < ch.length; k++) {
    const i = ch.length - 1 - k;
    const blk = `${P}up_blocks.${k}`;
    for (let j = 0; j < u.layersPerBlock + 1; j++) {
      const skip = skips.pop()!;
      h = g.op('Concat', [h, skip.v], { axis: 1 });
      h = resnet(h, `${blk}.resnets.${j}`, C + skip.c, ch[i]!);
      C = ch[i]!;
      if (u.attention[i]) h = transformer(h, `${blk}.attentions.${j}`, C);
    }
    if (i > 0) {
      // nearest ×2 as torch's interpolate(mode=nearest): src = floor(dst / 2)
      h = g.op('Resize', [h, '', g.floats([1, 1, 2, 2], [4])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
      H *= 2;
      h = m.conv(h, `${blk}.upsamplers.0.conv`, { kernel: 3, pad: 1 });
    }
  }
  // 6. out, then depth-to-space (pixel_shuffle)
  let out = m.conv(m.silu(m.groupNorm(h, `${P}conv_norm_out`, G, C, H, H)), `${P}conv_out`, { kernel: 3, pad: 1 });
  if (p > 1) {
    const r = g.op('Reshape', [out, g.ints([-1, u.outChannels, p, p, H, H])]);
    out = g.op('Reshape', [g.op('Transpose', [r], { perm: [0, 1, 4, 2, 5, 3] }), g.ints([-1, u.outChannels, S, S])]);
  }
  g.identity(out, 'out');
  g.output('out', { elemType: DT.FLOAT, dims: ['batch', u.outChannels, S, S] });
  m.checkAllUsed(P);
  return { bytes: g.encode(`shira-studio UNet of ${config.name}`), weightInputs: m.weightInputs };
}

export function exportModel(config: ModelConfig, weights: Map<string, Weight>, options: ExportOptions = {}): ExportedModel {
  const targets = [...(options.targets ?? DEFAULT_TARGETS)];
  return { textEncoder: exportTextEncoder(config, weights, targets), unet: exportUNet(config, weights, targets), targets };
}
