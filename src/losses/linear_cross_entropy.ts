/**
 * `linearCrossEntropy`: fused linear cross-entropy (a language model's head), the
 * cross-entropy of `x W^T + bias` computed in chunks of classes so that the `[N, V]`
 * logits never exist.
 *
 * @module
 */
import { lossDef } from "../loss.ts";
import type { Definition } from "../loss.ts";
import type { CommonOptions, GpuMatrix, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { outBuffer, result } from "../kernels/core.ts";
import { lin } from "../kernels/deferred.ts";
import { capped, type LinearCeProblem } from "../kernels/linear_ce.ts";
import { largeVocabulary, nonIgnored } from "./cross_entropy.ts";

/** Inputs of `linearCrossEntropy`. */
export interface LinearCrossEntropyInputs {
  /** Hidden states `[N, D]`. */
  x: Tensor;
  /** The output projection `[V, D]`, one row per class (as `nn.Linear`). */
  W: Tensor;
  /**
   * The projection's bias `[V]`; none means 0 (and no `grads.bias`). On the WebGPU backend
   * also a GPU matrix `{ buffer, shape: [V, 1] }` (or `[1, V]`).
   */
  bias?: Float32Array | readonly number[] | GpuMatrix;
  /** One class index per row, in `[0, V)` or `ignoreIndex`. */
  labels: Labels;
  /**
   * Sorted distinct class indices `[S]` in `[0, V)` (PartialFC-style sampling, as
   * `marginHead`'s): only these classes take part in the softmax, and every non-ignored
   * label must be among them; `grads.W` is then `[S, D]` and `grads.bias` `[S]`, in the
   * order of `classes`. None means every class.
   */
  classes?: Int32Array | readonly number[];
}

/** Options of `linearCrossEntropy`: crossEntropy's, on the logits `x W^T + bias`. */
export interface LinearCrossEntropyOptions extends CommonOptions {
  /** Weight of each class `[V]` (indexed by class, also with `classes`), each in [0, 1e6]; none means all 1. */
  weight?: Float32Array | readonly number[];
  /** Rows with this label are ignored (loss 0, gradient 0). @default -100 */
  ignoreIndex?: number;
  /** Mass moved from the label to the uniform distribution over the softmax's classes, in `[0, 1]`. @default 0 */
  labelSmoothing?: number;
  /** Logit soft-capping `c tanh(z / c)` (Gemma-2), finite in (0, 1e9]; absent means no cap. @default undefined */
  softcap?: number;
  /** The z-loss coefficient k (`k lse_i^2` per non-ignored row; PaLM), finite in [0, 1e6]. @default 0 */
  zLoss?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** The parts of `linearCrossEntropy`. */
export interface LinearCrossEntropyParts {
  /** The z-loss term, reduced as the loss is and included in it (one value per row with `"none"`); 0 without `zLoss`. */
  z: number;
  /**
   * The share of non-ignored rows whose label's (capped) logit has no strictly larger logit in
   * its row (ties count as correct); 0 when every row is ignored. No gradient; a number for
   * every reduction.
   */
  accuracy: number;
}

/** Gradients of `linearCrossEntropy`. */
export interface LinearCrossEntropyGrads {
  /** Gradient w.r.t. the hidden states `[N, D]`. */
  x: Matrix;
  /** Gradient w.r.t. W, `[V, D]` (`[S, D]` with `classes`). */
  W: Matrix;
  /**
   * Gradient w.r.t. the bias `[V]` (`[S]` with `classes`); only when a bias is given. With
   * GPU-resident inputs (WebGPU) a GPU matrix `[V, 1]` (`[1, V]` for a bias of that shape), and
   * typed so (`GradVector`: a `Float32Array` for host inputs, a `GpuMatrix` for GPU ones).
   */
  bias?: Float32Array;
}

/** Checks `classes` (sorted distinct integers in `[0, v)`); null when absent. */
export function classList(value: unknown, v0: number): Int32Array | null {
  if (value === undefined) return null;
  if (!(value instanceof Int32Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected classes to be an Int32Array or an array of integers, got ${v.show(value)}`);
  }
  const src = value as ArrayLike<unknown>;
  if (src.length === 0) throw new RangeError("Expected classes to have at least one class, got 0");
  const out = new Int32Array(src.length);
  for (let r = 0; r < src.length; r++) {
    const k = src[r];
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k >= v0) {
      throw new RangeError(`Expected classes[${r}] to be an integer in [0, ${v0}), got ${v.show(k)}`);
    }
    if (r > 0 && k <= out[r - 1]) {
      throw new RangeError(
        `Expected classes to be sorted and distinct, got classes[${r}] = ${k} after classes[${r - 1}] = ${out[r - 1]}`,
      );
    }
    out[r] = k;
  }
  return out;
}

/** Checks the bias `[V]` (any float32 values; `checkFinite` scans them); a GPU matrix `[V, 1]` or `[1, V]`. */
export function biasOf(value: unknown, v0: number): Float32Array | null {
  if (value === undefined) return null;
  if (v.isGpuMatrix(value)) {
    const [r, c] = v.matrix("bias", value);
    if (Math.min(r, c) !== 1 || r * c !== v0) {
      throw new RangeError(`Expected bias to have shape [${v0}, 1] or [1, ${v0}] (one per row of W), got [${r}, ${c}]`);
    }
    return v.values(value);
  }
  if (!(value instanceof Float32Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected bias to be a Float32Array or an array of numbers, got ${v.show(value)}`);
  }
  const src = value as ArrayLike<unknown>;
  if (src.length !== v0) {
    throw new RangeError(`Expected bias to have ${v0} values (one per row of W), got ${src.length}`);
  }
  for (let j = 0; j < src.length; j++) {
    if (typeof src[j] !== "number") throw new TypeError(`Expected bias[${j}] to be a number, got ${v.show(src[j])}`);
  }
  return value instanceof Float32Array ? value : Float32Array.from(src as number[]);
}

/** The rows `rows` of a `[*, d]` matrix (fresh). */
const gather = (data: Float32Array, rows: Int32Array, d: number): Float32Array => {
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, k) => out.set(data.subarray(r * d, (r + 1) * d), k * d));
  return out;
};

/** A caller's `options.out` buffer of a vector gradient, or null. */
function outVector(o: CommonOptions, name: string, length: number): Float32Array | null {
  const b = (o.out as Record<string, unknown> | undefined)?.[name];
  if (b === undefined) return null;
  if (!(b instanceof Float32Array) || b.length !== length) {
    throw new TypeError(`Expected options.out.${name} to be a Float32Array of ${length} values, got ${v.show(b)}`);
  }
  return b;
}

/**
 * Fused linear cross-entropy (Liger-Kernel's `FusedLinearCrossEntropy`, Apple's
 * Cut-Cross-Entropy, Wijmans et al. 2025): the value of
 * `crossEntropy(x W^T + bias, labels, options)` — class weights, `ignoreIndex`, label
 * smoothing, `softcap` (`c tanh(z / c)`) and `zLoss` (`k lse_i^2`) exactly as
 * `crossEntropy` takes them — with gradients w.r.t. `x [N, D]`, `W [V, D]` and `bias [V]`,
 * computed without the `[N, V]` logits: the classes are streamed in chunks, each chunk's
 * per-row (max, sum of exponentials) merged online, then the chunks' logits formed again
 * for the gradients (extra memory O(N chunk + N D)). Optional `classes [S]` restricts the
 * softmax to those classes (`grads.W` `[S, D]`). Parts: `z` (the z-loss, included in
 * `loss`) and `accuracy` (share of non-ignored rows whose label's logit is not beaten;
 * ties count as correct). With `reduction: "none"` the per-row upstream is folded into
 * each row's gradient before the products that form `grads.W` (Liger-Kernel #678).
 *
 * @example A vocabulary of 3
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * const W = { data: new Float32Array([2, 0, 0, 3, 0, 0]), shape: [3, 2] as const };
 * const r = wasm.linearCrossEntropy.valueAndGrad({ x, W, labels: [0, 1] }, { zLoss: 1e-4 });
 * console.log(r.loss, r.accuracy, r.grads.W.shape); // 0.1680 1 [3, 2] (PyTorch: 0.16796357; logits [[2, 0, 0], [0, 3, 0]])
 * ```
 */
export const linearCrossEntropy: Definition<
  LinearCrossEntropyInputs,
  LinearCrossEntropyOptions,
  LinearCrossEntropyGrads,
  LinearCrossEntropyParts,
  "loss",
  "linear"
> = lossDef<
  LinearCrossEntropyInputs,
  LinearCrossEntropyOptions,
  LinearCrossEntropyGrads,
  "linearCe",
  LinearCrossEntropyParts,
  "linear"
>({
  name: "linearCrossEntropy",
  shard: "linear",
  kernel: "linearCe",
  inputs: ["x", "W", "bias", "labels", "classes"],
  options: ["weight", "ignoreIndex", "labelSmoothing", "softcap", "zLoss", "reduction"],
  grads: ["x", "W", "bias"],
  prepare(inputs, options, grad, upstream): LinearCeProblem {
    const o = v.options(options);
    v.inputs(inputs);
    const [n, d] = v.batch("x", inputs.x);
    const [v0] = v.matrix("W", inputs.W, undefined, d);
    if (v0 === 0) throw new RangeError("Expected W to have at least one row (one per class), got 0");
    const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
    const given = v.labels("labels", inputs.labels, n, v0, ignoreIndex);
    const classes = classList(inputs.classes, v0);
    let bias = biasOf(inputs.bias, v0);
    let weight = v.vector("options.weight", o.weight, v0, 0, v.MAX_WEIGHT);
    const smoothing = v.number("options.labelSmoothing", o.labelSmoothing, 0, { min: 0, max: 1 });
    const { softcap, zLoss } = largeVocabulary(o);
    const reduction = v.reduction(o.reduction);
    const x = v.values(inputs.x);
    let W = v.values(inputs.W);
    if (o.checkFinite) {
      v.finite("x", x, d);
      v.finite("W", W, d);
      if (bias) v.finite("bias", bias, v0);
    }
    // "mean" divides by the summed weight of the non-ignored rows, as PyTorch (the weight of the label's class).
    let denominator = 0;
    for (let i = 0; i < n; i++) if (given[i] >= 0) denominator += weight ? weight[given[i]] : 1;
    let labels = given;
    // With classes, W and bias on the GPU are gathered there (the WebGPU kernel, `rows`); on the host here.
    const rows = classes && (v.onDevice(W) || v.onDevice(bias)) ? classes : null;
    if (classes) {
      const at = new Map<number, number>();
      classes.forEach((k, r) => at.set(k, r));
      labels = given.map((y, i) => {
        if (y < 0) return -1;
        const r = at.get(y);
        if (r === undefined) {
          throw new RangeError(`Expected labels[${i}] (${y}) to be one of classes, got a class not in it`);
        }
        return r;
      });
      if (!rows) {
        W = gather(W, classes, d);
        bias = bias && gather(bias, classes, 1);
      }
      weight = weight && gather(weight, classes, 1);
    }
    const c = classes ? classes.length : v0;
    const count = nonIgnored(labels);
    const ignored = (i: number) => labels[i] < 0;
    const scales = grad ? v.rowScales(reduction, upstream, n, denominator, ignored) : new Float64Array(0);
    const zScales = grad && zLoss ? v.rowScales(reduction, upstream, n, count, ignored) : new Float64Array(0);
    // The label's logit and its derivative through the cap, from a float64 dot product.
    let target = new Float64Array(0);
    if (!v.onDevice(x) && !v.onDevice(W) && !v.onDevice(bias)) {
      target = new Float64Array(2 * n);
      for (let i = 0; i < n; i++) {
        const y = labels[i];
        if (y < 0) continue;
        let u = bias ? bias[y] : 0;
        for (let k = 0; k < d; k++) u += x[i * d + k] * W[y * d + k];
        target.set(capped(u, softcap), 2 * i);
      }
    }
    const out = (name: string, rows: number) => (grad ? outBuffer(o, name, rows, d) : null);
    return {
      grad,
      n,
      d,
      c,
      x,
      W,
      bias,
      rows,
      labels,
      weight,
      smoothing,
      softcap,
      zLoss,
      target,
      scales,
      zScales,
      reduction,
      denominator,
      count,
      outX: out("x", n),
      outW: out("W", c),
      outBias: grad && bias ? outVector(o, "bias", c) : null,
    };
  },
  finish(p, raw) {
    const [rows, zRows, correct] = raw.rows;
    // With the helpers of src/kernels/deferred.ts (per-row values that a GPU kernel may leave on the GPU).
    const ce = v.reduce(rows, p.reduction, p.denominator);
    const z = p.zLoss ? v.reduce(zRows, p.reduction, p.count) : p.reduction === "none" ? new Float32Array(p.n) : 0;
    const loss = p.reduction === "none" ? lin(0, [rows, 1], [zRows, 1]) : lin(0, [ce as number, 1], [z as number, 1]);
    const accuracy = v.reduce(correct, "mean", p.count) as number;
    const grads: LinearCrossEntropyGrads = {
      x: p.outX ?? result(raw.grads.x, p.n, p.d),
      W: p.outW ?? result(raw.grads.W, p.c, p.d),
      ...(p.bias ? { bias: raw.grads.bias } : {}),
    };
    return { loss, z: z as number, accuracy, grads };
  },
});
