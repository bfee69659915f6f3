// A small ONNX graph builder over the kept protobuf schema (onnx-proto = onnx.proto compiled by protobufjs), so the
// bytes on disk are whatever protobufjs encodes for ModelProto — no hand-rolled wire format here.
//
// Conventions: tensor names are strings; every node gets a unique output name from `fresh`; float tensors are
// little-endian fp32 in raw_data (TensorProto.raw_data is LE by the spec); int64 tensors likewise.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** ONNX opset the exporter targets: 18 has LayerNormalization (17), Reduce* with axes as inputs, Resize as used. */
export const OPSET = 18;
/** IR version 8 (onnx 1.13) is the newest this schema package knows and is the one that carries opset 18. */
export const IR_VERSION = 8;

export type AttrValue = number | number[] | string | { floats: number[] };

export const DT = { FLOAT: onnx.TensorProto.DataType.FLOAT, INT64: onnx.TensorProto.DataType.INT64, INT32: onnx.TensorProto.DataType.INT32 };

export interface ValueSpec {
  name: string;
  elemType: number;
  /** A number is a fixed size; a string a symbolic one ("batch"). */
  dims: (number | string)[];
}

export class GraphBuilder {
  private readonly nodes_: InstanceType<typeof onnx.NodeProto>[] = [];
  private readonly inits_: InstanceType<typeof onnx.TensorProto>[] = [];
  private readonly inputs_: ValueSpec[] = [];
  private readonly outputs_: ValueSpec[] = [];
  private readonly names_ = new Set<string>();
  private counter_ = 0;
  private readonly consts_ = new Map<string, string>();

  constructor(readonly graphName: string) {}

  fresh(hint: string): string {
    let name: string;
    do name = `${hint}_${this.counter_++}`;
    while (this.names_.has(name));
    this.names_.add(name);
    return name;
  }

  input(spec: ValueSpec): string {
    if (this.names_.has(spec.name)) throw new Error(`ONNX graph ${this.graphName}: duplicate name '${spec.name}'`);
    this.names_.add(spec.name);
    this.inputs_.push(spec);
    return spec.name;
  }

  output(name: string, spec: Omit<ValueSpec, 'name'>): void {
    this.outputs_.push({ name, ...spec });
  }

  /** A float32 initializer; `data` is copied into the protobuf as raw LE bytes. */
  initializer(name: string, dims: readonly number[], data: Float32Array): string {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`ONNX initializer '${name}': ${data.length} values for shape [${dims.join(', ')}]`);
    if (this.names_.has(name)) throw new Error(`ONNX graph ${this.graphName}: duplicate name '${name}'`);
    this.names_.add(name);
    this.inits_.push(onnx.TensorProto.create({ name, dims: [...dims], dataType: DT.FLOAT, rawData: le(data) }));
    return name;
  }

  /** A deduplicated int64 constant (shapes, axes). */
  ints(values: readonly number[], scalar = false): string {
    const key = `i64:${scalar ? 's' : 'v'}:${values.join(',')}`;
    const hit = this.consts_.get(key);
    if (hit) return hit;
    const name = this.fresh('const_i64');
    this.inits_.push(onnx.TensorProto.create({ name, dims: scalar ? [] : [values.length], dataType: DT.INT64, rawData: le(BigInt64Array.from(values.map(BigInt))) }));
    this.consts_.set(key, name);
    return name;
  }

  /** A deduplicated float32 constant (scalars broadcast; `dims` for shaped ones). */
  floats(values: readonly number[] | Float32Array, dims?: readonly number[]): string {
    const arr = Float32Array.from(values);
    const key = `f32:${(dims ?? ['s']).join('x')}:${Buffer.from(arr.buffer).toString('base64')}`;
    const hit = this.consts_.get(key);
    if (hit) return hit;
    const name = this.fresh('const_f32');
    this.inits_.push(onnx.TensorProto.create({ name, dims: dims ? [...dims] : [], dataType: DT.FLOAT, rawData: le(arr) }));
    this.consts_.set(key, name);
    return name;
  }

  /** Adds a node with one output (the common case) and returns that output's name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, hint = opType.toLowerCase()): string {
    return this.opN(opType, inputs, 1, attrs, hint)[0]!;
  }

  opN(opType: string, inputs: readonly string[], outputs: number, attrs: Record<string, AttrValue> = {}, hint = opType.toLowerCase()): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(hint));
    this.nodes_.push(
      onnx.NodeProto.create({
        opType,
        name: this.fresh(`n_${hint}`),
        input: [...inputs],
        output: outs,
        attribute: Object.entries(attrs).map(([name, v]) => attribute(name, v)),
      }),
    );
    return outs;
  }

  /** Renames the value `from` to the graph output `to` with an Identity node. */
  identity(from: string, to: string): string {
    if (this.names_.has(to)) throw new Error(`ONNX graph ${this.graphName}: duplicate name '${to}'`);
    this.names_.add(to);
    this.nodes_.push(onnx.NodeProto.create({ opType: 'Identity', name: this.fresh('n_identity'), input: [from], output: [to] }));
    return to;
  }

  encode(docString = ''): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: 'shira-studio',
      producerVersion: '1',
      docString,
      opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: OPSET })],
      graph: onnx.GraphProto.create({
        name: this.graphName,
        node: this.nodes_,
        initializer: this.inits_,
        input: this.inputs_.map(valueInfo),
        output: this.outputs_.map(valueInfo),
      }),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function le(a: Float32Array | BigInt64Array): Uint8Array {
  // Node and every platform ORT ships for are little-endian; a copy detaches from the caller's buffer.
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

function valueInfo(s: ValueSpec) {
  return onnx.ValueInfoProto.create({
    name: s.name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: s.elemType,
        shape: onnx.TensorShapeProto.create({
          dim: s.dims.map((d) => onnx.TensorShapeProto.Dimension.create(typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
        }),
      }),
    }),
  });
}

function attribute(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: Buffer.from(v, 'utf8') });
  if (typeof v === 'number') {
    return Number.isInteger(v) ? onnx.AttributeProto.create({ name, type: T.INT, i: v }) : onnx.AttributeProto.create({ name, type: T.FLOAT, f: v });
  }
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: v });
  return onnx.AttributeProto.create({ name, type: T.FLOATS, floats: v.floats });
}

/** Reads the names, shapes and (fp32) values of a model's initializers: deployments take base weights from here. */
export function decodeModel(bytes: Uint8Array) {
  return onnx.ModelProto.decode(bytes);
}
