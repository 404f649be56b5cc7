/**
 * `crossEntropy`: softmax cross-entropy with integer labels, as
 * `torch.nn.functional.cross_entropy`, and the hard-label problem it shares with `focal`.
 *
 * @module
 */
import type { LossDef, Prepared } from "../loss.ts";
import { result } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import type { MarginTarget } from "./margin.ts";

/** Inputs of `crossEntropy` and `focal`. */
export interface CrossEntropyInputs {
  /** Unnormalised scores `[N, C]`. */
  logits: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
}

/** Options of `crossEntropy`. */
export interface CrossEntropyOptions extends CommonOptions {
  /** Weight of each class `[C]` (non-negative); none means all 1. */
  weight?: Float32Array | readonly number[];
  /** Rows with this label are ignored (loss 0, gradient 0). @default -100 */
  ignoreIndex?: number;
  /** Mass moved from the label to the uniform distribution, in `[0, 1]`. @default 0 */
  labelSmoothing?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `crossEntropy` and `focal`. */
export interface CrossEntropyGrads {
  /** Gradient w.r.t. the logits `[N, C]`. */
  logits: Matrix;
}

/**
 * The problem the fused softmax cross-entropy kernel solves, row by row. The logits
 * are `z_j = scale * x_j` (`x_j` clamped to [-1, 1] first with `clamp`), the label's
 * logit replaced by `target[2i]` (derivative w.r.t. `x_y`: `target[2i+1]`) when
 * `target` is given (the margin losses). `nll_i = logsumexp(z_i) - z_{i,y}`; with
 * smoothing `eps` the target is `q = (1-eps) w_y onehot(y) + (eps/C) w` and the row
 * loss `-sum_c q_c log p_c`; with `gamma != 0` (focal) it is `w_y (1 - e^-nll)^gamma nll`.
 * The gradient row is `scales[i]` times the derivative of the row loss w.r.t. `x`.
 */
export interface HardLabelProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly logits: Float32Array;
  /** Labels with ignored rows set to -1. */
  readonly labels: Int32Array;
  /** Class weights (cross-entropy) or per-class alpha (focal), or null for all 1. */
  readonly weight: Float32Array | null;
  readonly smoothing: number;
  /** Focal exponent; 0 for cross-entropy. */
  readonly gamma: number;
  /** Logit scale (1 for cross-entropy, `s` for the margin losses). */
  readonly scale: number;
  /** Clamp the inputs to [-1, 1] first (cosines). */
  readonly clamp: boolean;
  /**
   * Per row: the label's replaced logit and its derivative w.r.t. the input, or null
   * (null too for GPU-resident cosines: the WebGPU kernel evaluates `margin` itself).
   */
  readonly target: Float64Array | null;
  /** The margin losses: the label's target as data (what `target` holds, for kernels that evaluate it). */
  readonly margin?: MarginTarget;
  /** Per-row gradient scale (upstream and reduction folded in); ignored rows 0. */
  readonly scales: Float64Array;
  /** Caller's buffer for the gradient, or null. */
  readonly out: Matrix | null;
  readonly reduction: Reduction;
  /** What `"mean"` divides the summed row losses by. */
  readonly denominator: number;
}

/** Checks the inputs shared by the hard-label losses. */
export function hardLabelInputs(
  inputs: CrossEntropyInputs,
  o: CommonOptions & { ignoreIndex?: number },
): { n: number; c: number; labels: Int32Array; ignoreIndex: number; logits: Float32Array } {
  v.inputs(inputs);
  const [n, c] = v.batch("logits", inputs.logits);
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
  const logits = v.values(inputs.logits);
  if (o.checkFinite) v.finite("logits", logits, c);
  return { n, c, labels, ignoreIndex, logits };
}

/**
 * Checks a caller's output buffer for a gradient. A GPU matrix `{ buffer, shape }` is
 * returned as is (only the WebGPU kernels write it; the CPU backends refuse it).
 */
export function outBuffer(o: CommonOptions, name: string, rows: number, cols: number): Matrix | null {
  const m = o.out?.[name];
  if (m === undefined) return null;
  v.matrix(`options.out.${name}`, m, rows, cols);
  return m as Matrix;
}

/** Checks a caller's list of output buffers for the gradient of a list input (`count` matrices `[rows, cols]`). */
export function outList(o: CommonOptions, name: string, count: number, rows: number, cols: number): (Matrix | null)[] {
  const list = o.out?.[name];
  if (list === undefined) return new Array(count).fill(null);
  const [e] = v.matrixList(`options.out.${name}`, list, rows, cols);
  if (e !== count) throw new RangeError(`Expected options.out.${name} to have ${count} matrices, got ${e}`);
  return list as Matrix[];
}

/** The gradient matrix: the caller's output buffer when given (returned as is), else a fresh one. */
export function gradMatrix(out: Matrix | null, data: Float32Array | undefined, rows: number, cols: number): Matrix {
  return out ?? result(data as Float32Array, rows, cols);
}

/** The hard-label finish step shared with `focal`. */
export function finishHardLabel(p: HardLabelProblem, rows: Float64Array, grad: Float32Array | undefined) {
  const loss = v.reduce(rows, p.reduction, p.denominator);
  // `grads` is read only when gradients were asked for (then the kernel wrote `grad`).
  return { loss, grads: { logits: gradMatrix(p.out, grad, p.n, p.c) } };
}

/** The definition of `crossEntropy`. */
export const crossEntropy: LossDef<CrossEntropyInputs, CrossEntropyOptions, CrossEntropyGrads, "hardLabel"> = {
  name: "crossEntropy",
  kernel: "hardLabel",
  inputs: ["logits", "labels"],
  options: ["weight", "ignoreIndex", "labelSmoothing", "reduction"],
  grads: ["logits"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const { n, c, labels, logits } = hardLabelInputs(inputs, o);
    const weight = v.vector("options.weight", o.weight, c, 0);
    const smoothing = v.number("options.labelSmoothing", o.labelSmoothing, 0, { min: 0, max: 1 });
    const reduction = v.reduction(o.reduction);
    // "mean" divides by the summed weight of the non-ignored rows, as PyTorch.
    let denominator = 0;
    for (let i = 0; i < n; i++) if (labels[i] >= 0) denominator += weight ? weight[labels[i]] : 1;
    const scales = grad ? v.rowScales(reduction, upstream, n, denominator, (i) => labels[i] < 0) : new Float64Array(0);
    const out = grad ? outBuffer(o, "logits", n, c) : null;
    return {
      grad,
      n,
      c,
      logits,
      labels,
      weight,
      smoothing,
      gamma: 0,
      scale: 1,
      clamp: false,
      target: null,
      scales,
      out,
      reduction,
      denominator,
    };
  },
  finish: (p, raw) => finishHardLabel(p, raw.rows[0], raw.grads.logits),
};
