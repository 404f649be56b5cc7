/**
 * The TensorFlow.js adapter: every loss of this library as a function of `tf.Tensor`s
 * whose forward value and gradients come from this library's CPU backends, wrapped in
 * `tf.customGrad` so that it takes part in TF.js's autodiff like any tf op.
 *
 * The adapter is written against the small part of the TF.js namespace it uses
 * ({@linkcode TfLike}), so the library keeps no dependency: pass your own
 * `import * as tf from "@tensorflow/tfjs"`.
 *
 * @module
 */
import { definitions } from "../losses/mod.ts";
import type { SyncLosses } from "../losses/mod.ts";
import type { GpuMatrix, Labels, Matrix, Reduction } from "../types.ts";
import { keys, show } from "../validate.ts";
import { wasm } from "../sync.ts";
import { scalarValue, webgpuValue } from "./webgpu.ts";

/** The tensors of TF.js as far as the adapter uses them (a `tf.Tensor` fits). */
export interface TfTensor {
  /** The tensor's shape. */
  readonly shape: number[];
  /** `"float32"`, `"int32"`, ... */
  readonly dtype: string;
  /** The number of dimensions. */
  readonly rank: number;
  /** The values, read synchronously. */
  dataSync(): ArrayLike<number>;
}

/**
 * The part of the TensorFlow.js namespace the adapter uses: `import * as tf from
 * "@tensorflow/tfjs"` (or `@tensorflow/tfjs-core` with the gradients registered) fits.
 */
export interface TfLike {
  /** `tf.customGrad`: an op with its own gradient. */
  // deno-lint-ignore no-explicit-any
  customGrad(f: (...args: any[]) => { value: any; gradFunc: (dy: any, saved: any) => any }): (...args: any[]) => any;
  /** `tf.tensor`: a tensor of float32 values. */
  // deno-lint-ignore no-explicit-any
  tensor(values: Float32Array, shape: number[], dtype?: "float32"): any;
  /** `tf.mul`: the element-wise product (scales a gradient by the upstream `dy`). */
  // deno-lint-ignore no-explicit-any
  mul(a: any, b: any): any;
  /** `tf.div`: the weighted sum's division by a count (`weights`' reductions). */
  // deno-lint-ignore no-explicit-any
  div(a: any, b: any): any;
  /** `tf.notEqual`, `tf.cast`, `tf.sum`, `tf.zerosLike`: the count of non-zero weights, on TF.js's backend. */
  // deno-lint-ignore no-explicit-any
  notEqual(a: any, b: number): any;
  // deno-lint-ignore no-explicit-any
  cast(a: any, dtype: "float32"): any;
  // deno-lint-ignore no-explicit-any
  sum(a: any): any;
  // deno-lint-ignore no-explicit-any
  zerosLike(a: any): any;
  /** `tf.tidy`: disposes what the reduction with `weights` makes on the way. */
  // deno-lint-ignore no-explicit-any
  tidy(f: () => any): any;
  /** `tf.getBackend`: the name of the active backend. */
  getBackend(): string;
  /** `tf.engine`: whether a gradient tape is recording (then the gradient is computed with the value). */
  engine(): { isTapeOn(): boolean };
  /** `tf.losses.computeWeightedLoss`: the reduction of per-row losses with `weights`. */
  // deno-lint-ignore no-explicit-any
  losses: { computeWeightedLoss(losses: any, weights?: any, reduction?: any): any };
  /** `tf.Tensor`: what an input must be an instance of to be read (and differentiated). */
  // deno-lint-ignore no-explicit-any
  Tensor: abstract new (...args: any[]) => TfTensor;
}

/** `tf.Reduction` of TF.js: `NONE` 0, `MEAN` 1, `SUM` 2, `SUM_BY_NONZERO_WEIGHTS` 3. */
export type TfReduction = 0 | 1 | 2 | 3;
const TF_NONE = 0, TF_SUM = 2, TF_SUM_BY_NONZERO_WEIGHTS = 3;

/** Options the adapter adds to every loss's own (which it passes on, less `out`). */
export interface TfOptions<T, P = Record<string, unknown>> {
  /**
   * Called once per call, synchronously before the call returns, with what the library's
   * result holds besides `loss` and `grads`: a stateful loss's next `state` (`adaface`,
   * `curricularFace`, `marginHead` with those kinds: pass it as `inputs.state` of the next
   * step) and a composite loss's parts (`magface`'s `ce` and `g`, `distillation`'s `kl` and
   * `ce`, ...). On the `cpu`, `wasm` and `webgl` backends these are the library's plain
   * values (numbers, `{ mean, std }`). On TF.js's `webgpu` backend every GPU-resident value
   * is a `tf.Tensor` over a buffer TF.js owns, made with no readback: a part `[1, 1]` a
   * scalar (`[N]` with `reduction: "none"`), a state `[1, k]` (its fields in the order of
   * the state object: `[mean, std]`, `[t]`), which the next call takes as `inputs.state`
   * as it is; these tensors are kept (`tf.keep`: they outlive `optimizer.minimize`'s and
   * `tf.tidy`'s scopes) and the caller disposes them. With `weights` or a `tf.Reduction`
   * the library ran with `reduction: "none"`: the parts are then its per-row ones.
   */
  onResult?: (result: P) => void;
  /**
   * Per-row weights as `tf.losses`' `weights`: a `tf.Tensor` `[N]` (or a scalar, a number,
   * an array). With weights the reduction follows `tf.losses.computeWeightedLoss`
   * (default `tf.Reduction.SUM_BY_NONZERO_WEIGHTS`: `sum(w l)` over the count of non-zero
   * weights, that count a constant); gradients flow to a weights tensor too, under every
   * reduction. Only for the losses that are reduced from per-row losses (those with a
   * `reduction` option): on `featureDiversity`, `mixOutputs`, `physMoe`, ... (one value
   * for the batch) it is a `TypeError`. Not to be confused with `crossEntropy`'s class
   * weights `weight [C]`.
   */
  weights?: T | number | readonly number[] | Float32Array;
  /**
   * This library's `"mean"` (default), `"sum"`, `"none"` (and `klDiv`'s `"batchmean"`),
   * or a `tf.Reduction` value, which reduces the per-row losses exactly as
   * `tf.losses.computeWeightedLoss` does. With `weights`: a `tf.Reduction`, `"sum"`
   * (`SUM`), `"none"` (`NONE`) or `klDiv`'s `"batchmean"` (`sum(w l) / N`); `"mean"` is
   * refused as ambiguous.
   */
  reduction?: Reduction | "batchmean" | TfReduction;
}

/** The tensor type of a TF.js namespace (`tf.Tensor`). */
export type TensorOf<Tf> = Tf extends { Tensor: abstract new (...args: never[]) => infer T } ? T : never;
/** The scalar type of a TF.js namespace (`tf.Scalar`, what `optimizer.minimize` takes). */
export type ScalarOf<Tf> = Tf extends { scalar(value: number): infer S } ? S : TensorOf<Tf>;
/** The vector type of a TF.js namespace (`tf.Tensor1D`). */
export type VectorOf<Tf> = Tf extends { tensor1d(values: number[]): infer V } ? V : TensorOf<Tf>;
/** The options type of a loss `L` of the library. */
export type LossOptions<L> = L extends { forward(inputs: never, options?: infer O): unknown } ? Exclude<O, undefined>
  : never;
/** The inputs type of a loss `L` of the library. */
export type LossInputs<L> = L extends { forward(inputs: infer I, options?: never): unknown } ? I : never;

/** A loss's inputs with tensors where the library takes matrices (labels: a tensor or an array). */
export type TfInputs<I, T> = {
  // A state: the library's object (its numbers), or the tensor `onResult` gave on webgpu.
  [K in keyof I]: K extends "state" ? Exclude<I[K], GpuMatrix> | T
    : I[K] extends Labels | undefined ? Labels | T | Extract<I[K], undefined>
    : I[K] extends readonly unknown[] | undefined ? readonly T[] | Extract<I[K], undefined>
    // A number input (clip's scale): a number, or a scalar tensor that receives its gradient.
    : I[K] extends number ? number | T
    // A tensor, or a vector the library takes as numbers (adaface's and magface's norms).
    : T | Extract<I[K], undefined | Float32Array | readonly number[]>;
};

/** The parts of a loss `L`'s result: what it returns besides `loss` and `grads` (its next `state`, ...). */
export type LossParts<L> = L extends { forward(inputs: never, options?: never): infer R } ? Omit<R, "loss" | "grads">
  : never;

/**
 * What `onResult` receives: the parts of the call's result, each the library's value or (on
 * TF.js's webgpu backend) a tensor; any other part by name.
 */
export type TfResult<P, T> = { readonly [K in keyof P]: P[K] | T } & { readonly [part: string]: unknown };

/** A loss's options under the adapter: its own, less `out`, with `weights`, TF.js reductions and `onResult`. */
export type TfLossOptions<O, T, P = Record<string, unknown>> = Omit<O, "out" | "reduction"> & TfOptions<T, P>;

/** One loss under the adapter: inputs as tensors, a scalar loss (one per row for `"none"`/`NONE`). */
export type TfLoss<I, O, T, S, V, P = Record<string, unknown>> = {
  (inputs: TfInputs<I, T>, options: TfLossOptions<O, T, P> & { reduction: "none" | 0 }): V;
  (inputs: TfInputs<I, T>, options?: TfLossOptions<O, T, P>): S;
};

/** The names of the losses (the members of the loss set that have gradients). */
export type LossName = { [K in keyof SyncLosses]: SyncLosses[K] extends { valueAndGrad: unknown } ? K : never }[
  keyof SyncLosses
];

/** Every loss of the library as a TF.js function (the softmax transforms are `tf.softmax`, `tf.logSoftmax`). */
export type TfLosses<Tf> = {
  [K in LossName]: TfLoss<
    LossInputs<SyncLosses[K]>,
    LossOptions<SyncLosses[K]>,
    TensorOf<Tf>,
    ScalarOf<Tf>,
    VectorOf<Tf>,
    TfResult<LossParts<SyncLosses[K]>, TensorOf<Tf>>
  >;
};

/** Options of {@linkcode tfLosses}. */
export interface TfLossesOptions {
  /** The synchronous backend that computes values and gradients. @default wasm (from `cpu.ts`) */
  backend?: SyncLosses;
}

/**
 * Every loss of this library as a TensorFlow.js function of `tf.Tensor`s, for
 * `optimizer.minimize(() => ...)`, `tf.variableGrads`, `tf.grads` and custom loops: the
 * forward value and the gradients come from this library (one fused pass where the
 * loss is reduced and a gradient is being recorded) through `tf.customGrad`.
 *
 * Each function takes the loss's inputs by name, as the library does, with `tf.Tensor`s
 * for matrices (`logits`, `cos`, `x`, `W`, ... `[N, C]` / `[N, D]` / `[C, D]`) and a
 * `tf.Tensor1D` (int32 or integral float32) or an array for `labels`; differentiable
 * inputs (the loss's gradient keys) get their gradients, so a head's class weights `W`
 * may be a `tf.Variable` and are trained with the embedding. It returns a `tf.Scalar`,
 * or a `tf.Tensor1D` of one loss per row with `reduction: "none"` / `tf.Reduction.NONE`.
 *
 * Where it differs from `tf.losses`: labels are integer class indices (as
 * `tf.losses.sparseCategoricalCrossentropy`), not one-hot; inputs are named, not
 * positional; the default reduction is the library's `"mean"` (over non-ignored rows,
 * by the summed class weight with `weight`), where `tf.losses` defaults to
 * `SUM_BY_NONZERO_WEIGHTS` (the same value when no row is weighted or ignored). With
 * `weights` or a `tf.Reduction` the per-row losses are reduced by
 * `tf.losses.computeWeightedLoss` itself (an ignored row is then a loss of 0 that
 * still counts unless its weight is 0; `"mean"` with `weights` is refused as
 * ambiguous, `klDiv`'s `"batchmean"` is `sum(w l) / N`), inside a `tf.tidy` (a call
 * leaves only its result), and a weights tensor gets its gradient under every
 * reduction (`SUM_BY_NONZERO_WEIGHTS` counts the non-zero weights as a constant, a weights
 * tensor by TF.js's ops on its backend: TF.js's own count, `notEqual`, has no gradient). `weights` or a
 * `tf.Reduction` on a loss with no per-row losses (no `reduction` option:
 * `featureDiversity`, `mixOutputs`, `physMoe`, ...) is a `TypeError`, and so is an
 * unknown option key, the message listing the keys the adapter takes.
 * `options.out` is refused (gradients are new tensors).
 *
 * State and parts: the returned tensor is the loss alone (what `optimizer.minimize` and
 * `tf.grads` take); `options.onResult` receives the rest of the library's result of the
 * same pass (no second call): a stateful loss's next `state` (`adaface`,
 * `curricularFace`, their `marginHead` kinds) to pass to the next step, and a composite
 * loss's parts (`magface`'s `ce`, `g`; `distillation`'s `kl`, `ce`): plain values on the
 * CPU backends, tensors made with no readback on `webgpu`, which the caller disposes (see
 * {@linkcode TfOptions.onResult}). Nothing is kept in the adapter between calls.
 *
 * Backends: on `wasm`, `cpu` and `webgl` the inputs are read with `dataSync` (a GPU
 * readback per call on `webgl`) and the library's `backend` computes. On TF.js's
 * `webgpu` backend the loss runs on TF.js's own `GPUDevice` and buffers through this
 * library's synchronous GPU form (src/tfjs/webgpu.ts): float inputs by
 * `tensor.dataToGPU()` (uploaded when TF.js holds them on the CPU), labels on the host
 * (an array, or an int32 tensor TF.js holds on the CPU: a GPU-resident one is read
 * back), the loss and gradients as tensors over buffers TF.js owns; a training step
 * maps no buffer. There `reduction: "none"` is for the losses whose gradient is per row
 * (`crossEntropy`, `focal`, the soft-target and cosine-margin losses).
 *
 * @param tf The TensorFlow.js namespace (`import * as tf from "@tensorflow/tfjs"`).
 * @param options `backend`: `wasm` (default) or `js` from `cpu.ts`.
 * @returns One function per loss, by the library's names.
 *
 * @example Train an ArcFace head's embeddings and class weights
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tfLosses } from "@softmargin/softmargin/tfjs";
 * await tf.setBackend("cpu");
 * const losses = tfLosses(tf);
 * const x = tf.variable(tf.tensor2d([[1, 0], [0.6, 0.8]]));
 * const W = tf.variable(tf.tensor2d([[1, 0], [0, 1], [-1, 0]]));
 * const labels = tf.tensor1d([0, 1], "int32");
 * const optimizer = tf.train.sgd(0.1);
 * const before = optimizer.minimize(() => losses.marginHead({ x, W, labels }, { kind: "arcface", scale: 16 }), true);
 * console.log(before?.dataSync()[0]); // 1.5097 (PyTorch: 1.5097439); x and W took one step
 * ```
 *
 * @example AdaFace's state through training steps, and MagFace's parts
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { adafaceInit, type AdafaceState } from "@softmargin/softmargin";
 * import { tfLosses } from "@softmargin/softmargin/tfjs";
 * await tf.setBackend("cpu");
 * const losses = tfLosses(tf);
 * const x = tf.variable(tf.tensor2d([[20, 1], [1, 30]]));
 * const W = tf.variable(tf.tensor2d([[1, 0], [0, 1], [-1, 0]]));
 * const labels = [0, 1];
 * const optimizer = tf.train.sgd(0.01);
 * let state = adafaceInit(); // { mean: 20, std: 100 }
 * for (let step = 0; step < 3; step++) {
 *   optimizer.minimize(() =>
 *     losses.marginHead({ x, W, labels, state }, {
 *       kind: "adaface",
 *       scale: 16,
 *       onResult: (r) => (state = r.state as AdafaceState), // on the cpu backend: numbers
 *     })
 *   );
 * }
 * console.log(state); // the state after three steps: { mean: 20.149..., std: 97.239... }
 * const cos = tf.tensor2d([[0.5, 0.1], [0.2, 0.7]]);
 * losses.magface({ cos, norms: tf.tensor1d([20, 30]), labels }, {
 *   onResult: ({ ce, g }) => console.log(ce, g), // 1.9918 0.0437: the mean CE, the norms' regulariser
 * });
 * ```
 */
export function tfLosses<Tf extends TfLike>(tf: Tf, options: TfLossesOptions = {}): TfLosses<Tf> {
  keys("options of tfLosses", options, ["backend"]);
  const backend = options.backend ?? wasm;
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(definitions)) {
    if (!("grads" in def)) continue; // metrics and transforms have no tf.customGrad form
    const loss = (backend as unknown as Record<string, Loss>)[name];
    out[name] = (inputs: Record<string, unknown>, opts: Record<string, unknown> = {}) =>
      call(tf, name, loss, def as Keyed, inputs, opts);
  }
  return out as TfLosses<Tf>;
}

interface Loss {
  forward(inputs: object, options: object): { loss: number | Float32Array };
  backward(inputs: object, options: object, upstream?: number | Float32Array): Grads;
  valueAndGrad(inputs: object, options: object): { loss: number | Float32Array; grads: Grads };
}

/** What the adapter reads of a definition: its option keys and its gradient keys. */
interface Keyed {
  readonly options: readonly string[] | ((o: object) => readonly string[]);
  readonly grads: readonly string[];
  readonly numbers?: readonly string[];
}

/** The losses whose `reduction` has `"batchmean"` (sum / N; src/losses/kl_div.ts). */
const BATCHMEAN: readonly string[] = ["klDiv"];

function call(
  tf: TfLike,
  name: string,
  loss: Loss,
  def: Keyed,
  inputs: Record<string, unknown>,
  options: Record<string, unknown>,
) {
  // Number inputs (clip's scale): a scalar tensor among them is differentiated too.
  const numbers = def.numbers ?? [];
  // TF.js's webgpu backend: the loss on TF.js's device and buffers (src/tfjs/webgpu.ts).
  const onWebgpu = tf.getBackend() === "webgpu";
  if (typeof inputs !== "object" || inputs === null) {
    throw new TypeError(`Expected inputs to be an object, got ${show(inputs)}`);
  }
  const { weights, reduction, ...rest } = options;
  if ("out" in rest) {
    throw new TypeError(
      `Expected no options.out in softmargin/tfjs (gradients are new tensors), got ${show(rest.out)}`,
    );
  }
  const named = typeof def.options === "function" ? def.options(options) : def.options;
  const perRow = named.includes("reduction");
  const tfReduction = typeof reduction === "number" || weights !== undefined;
  if (!perRow && tfReduction) {
    const [key, value] = weights !== undefined ? ["weights", weights] : ["reduction", reduction];
    throw new TypeError(
      `Expected no options.${key} for ${name} (one value for the whole batch: it has no per-row losses to weight or reduce), got ${
        show(value)
      }`,
    );
  }
  keys(`options of ${name}`, options, [...named, "checkFinite", "onResult", ...(perRow ? ["weights"] : [])]);
  const { onResult } = options;
  if (onResult !== undefined && typeof onResult !== "function") {
    throw new TypeError(`Expected options.onResult to be a function, got ${show(onResult)}`);
  }
  delete rest.onResult;
  const r = tfReduction ? tfReductionOf(name, reduction) : undefined;
  // The library's reduction, or per-row losses that tf.losses.computeWeightedLoss reduces.
  const libOptions = tfReduction
    ? { ...rest, reduction: "none" }
    : reduction === undefined
    ? rest
    : { ...rest, reduction };
  const host: Record<string, unknown> = {};
  const isTensor = (v: unknown): v is TfTensor => v instanceof tf.Tensor;
  for (const [k, v] of onWebgpu ? [] : Object.entries(inputs)) {
    host[k] = isTensor(v) && numbers.includes(k)
      ? scalarValue(k, v)
      : isTensor(v)
      ? hostValue(k, v)
      : isTensorList(v, isTensor)
      ? v.map((t, i) => hostValue(`${k}[${i}]`, t))
      : v;
  }
  // The differentiable tensors: the loss's gradient keys given as tensors (or lists of them).
  const diff: Slot[] = [];
  for (const k of [...def.grads, ...numbers]) {
    const v = inputs[k];
    if (isTensor(v)) diff.push({ key: k, index: -1, tensor: v });
    else if (isTensorList(v, isTensor)) v.forEach((t, index) => diff.push({ key: k, index, tensor: t }));
  }
  // The result's parts of this call's pass (for onResult, called once the loss tensor is made).
  let parts: Record<string, unknown> = {};
  const keep = onResult ? (p: Record<string, unknown>) => void (parts = p) : undefined;
  const rows = () =>
    onWebgpu
      ? webgpuValue(tf, name, inputs, libOptions, diff, numbers, keep)
      : value(tf, loss, host, libOptions, diff, keep);
  // The per-row losses are an intermediate: made and reduced inside a tidy.
  const result = r === undefined ? rows() : tf.tidy(() => weighted(tf, rows(), weights, r));
  (onResult as ((p: Record<string, unknown>) => void) | undefined)?.(parts);
  return result;
}

/** The reduction with weights or a tf.Reduction: a `tf.Reduction`, or `"batchmean"` (sum / N). */
function tfReductionOf(name: string, reduction: unknown): TfReduction | "batchmean" {
  if (reduction === undefined) return TF_SUM_BY_NONZERO_WEIGHTS;
  if (reduction === "none") return TF_NONE;
  if (reduction === "sum") return TF_SUM;
  if (reduction === "batchmean" && BATCHMEAN.includes(name)) return "batchmean";
  if (typeof reduction === "number") {
    if ([0, 1, 2, 3].includes(reduction)) return reduction as TfReduction;
    throw new RangeError(
      `Expected options.reduction to be a tf.Reduction (0 NONE, 1 MEAN, 2 SUM, 3 SUM_BY_NONZERO_WEIGHTS), got ${reduction}`,
    );
  }
  const own = BATCHMEAN.includes(name) ? `, "none" or "batchmean"` : ` or "none"`;
  throw new TypeError(
    `Expected options.reduction of ${name} to be a tf.Reduction, "sum"${own} with options.weights, got ${
      show(reduction)
    }${
      reduction === "mean"
        ? " (ambiguous: use tf.Reduction.MEAN for sum(w l) / sum(w) or tf.Reduction.SUM_BY_NONZERO_WEIGHTS)"
        : ""
    }`,
  );
}

/**
 * `tf.losses.computeWeightedLoss(rows, weights, r)`, with a gradient for a weights tensor under
 * every reduction: `SUM_BY_NONZERO_WEIGHTS` divides `sum(w l)` by the count of non-zero weights
 * taken as a constant (TF.js counts with `notEqual`, which has no gradient): a weights tensor's
 * count is computed by TF.js's ops on its own backend (on the GPU on webgpu: no readback) under
 * a zero gradient, plain numbers' on the host; `"batchmean"` divides by N.
 */
function weighted(tf: TfLike, rows: TfTensor, weights: unknown, r: TfReduction | "batchmean") {
  const n = rows.shape[0];
  if (r === "batchmean") return tf.div(tf.losses.computeWeightedLoss(rows, weights, TF_SUM), n);
  if (r !== TF_SUM_BY_NONZERO_WEIGHTS || weights === undefined) return tf.losses.computeWeightedLoss(rows, weights, r);
  const tensor = weights instanceof tf.Tensor;
  const size = tensor
    ? weights.shape.reduce((a, b) => a * b, 1)
    : typeof weights === "number"
    ? 1
    : (weights as ArrayLike<number>).length;
  // (weights of another size: TF.js's own reduction, and its error if the shapes do not broadcast)
  if (size !== 1 && size !== n) return tf.losses.computeWeightedLoss(rows, weights, r);
  let count: unknown;
  if (tensor) count = nonZero(tf, weights);
  else {
    const w = typeof weights === "number" ? [weights] : (weights as ArrayLike<number>);
    let k = 0;
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) k++;
    count = k;
  }
  const sum = tf.losses.computeWeightedLoss(rows, weights, TF_SUM);
  return tf.div(sum, size === 1 ? tf.mul(count, n) : count);
}

/** The number of non-zero values of `w` as a scalar tensor whose gradient is zero (a constant of the reduction). */
function nonZero(tf: TfLike, w: TfTensor): unknown {
  return tf.customGrad((x: TfTensor) => ({
    value: tf.sum(tf.cast(tf.notEqual(x, 0), "float32")),
    gradFunc: () => tf.zerosLike(x),
  }))(w);
}

/** A differentiable tensor: input `key` (element `index` of a list input, else -1). */
interface Slot {
  key: string;
  index: number;
  tensor: TfTensor;
}

function isTensorList(v: unknown, isTensor: (t: unknown) => t is TfTensor): v is TfTensor[] {
  return Array.isArray(v) && v.length > 0 && v.every(isTensor);
}

/** The result's parts: all but `loss` and `grads`. */
function partsOf(r: Record<string, unknown>): Record<string, unknown> {
  const { loss: _, grads: __, ...parts } = r;
  return parts;
}

/**
 * The loss as a tensor, with the library's gradients w.r.t. the tensors of `diff`; `keep`
 * receives the forward pass's parts (its next state, ...).
 */
function value(
  tf: TfLike,
  loss: Loss,
  host: Record<string, unknown>,
  options: Record<string, unknown>,
  diff: Slot[],
  keep?: (parts: Record<string, unknown>) => void,
) {
  const reduced = options.reduction !== "none";
  const tensor = (l: number | Float32Array) =>
    typeof l === "number" ? tf.tensor(Float32Array.of(l), []) : tf.tensor(l, [l.length]);
  if (diff.length === 0) {
    const r = loss.forward(host, options);
    keep?.(partsOf(r));
    return tensor(r.loss);
  }
  // One fused pass when a reduced loss is being differentiated: the gradient of a scalar
  // only needs scaling by dy. Otherwise the forward pass now, and backward (with the
  // upstream dy per row for "none") only when TF.js asks for the gradient.
  const fused = reduced && tf.engine().isTapeOn();
  const f = tf.customGrad(() => {
    const r = fused ? loss.valueAndGrad(host, options) : loss.forward(host, options);
    keep?.(partsOf(r));
    const grads = "grads" in r ? (r.grads as Grads) : undefined;
    return {
      value: tensor(r.loss),
      gradFunc: (dy: TfTensor) => {
        const g = grads ?? loss.backward(host, options, reduced ? 1 : Float32Array.from(dy.dataSync()));
        return diff.map(({ key, index, tensor: x }) => {
          // A matrix, a number (clip's scale), or a vector (magface's norms [N]).
          const m = index < 0 ? (g[key] as Matrix | number | Float32Array) : (g[key] as Matrix[])[index];
          const values = typeof m === "number" ? Float32Array.of(m) : m instanceof Float32Array ? m : m.data;
          const t = tf.tensor(values, [...x.shape]);
          return reduced ? tf.mul(t, dy) : t;
        });
      },
    };
  });
  return f(...diff.map((s) => s.tensor));
}

type Grads = Record<string, Matrix | Matrix[] | number | Float32Array>;

/**
 * A tensor input on the host: an int32 tensor as integers (`Int32Array`, or
 * `{ data: Int32Array, shape }` for rank 2), a float one as a matrix `{ data, shape }`
 * (rank 2) or as numbers (rank 1: labels given as floats, which the library checks are
 * integers where it wants integers; a cast would truncate 1.5 silently).
 */
function hostValue(name: string, t: TfTensor): unknown {
  if (t.rank !== 1 && t.rank !== 2) {
    throw new RangeError(`Expected inputs.${name} to be a tf.Tensor of rank 1 or 2, got shape [${t.shape}]`);
  }
  const d = t.dataSync();
  const ints = t.dtype === "int32";
  if (t.rank === 1) return ints ? Int32Array.from(d) : Array.from(d);
  const data = ints ? Int32Array.from(d) : d instanceof Float32Array ? d : Float32Array.from(d);
  return { data, shape: [t.shape[0], t.shape[1]] };
}
