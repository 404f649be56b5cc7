/**
 * `crossEntropy`: softmax cross-entropy with integer labels, as
 * `torch.nn.functional.cross_entropy`, and the hard-label problem it shares with `focal`.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import type { HardLabelProblem } from "../kernels/hard_label.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";

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

/** The hard-label finish step shared with `focal`. */
export function finishHardLabel(p: HardLabelProblem, rows: Float64Array, grad: Float32Array | undefined) {
  const loss = v.reduce(rows, p.reduction, p.denominator);
  // `grads` is read only when gradients were asked for (then the kernel wrote `grad`).
  return { loss, grads: { logits: gradMatrix(p.out, grad, p.n, p.c) } };
}

/**
 * Softmax cross-entropy with integer labels, as `torch.nn.functional.cross_entropy`:
 * `loss_i = -(1-eps) w_y log p_iy - (eps/C) sum_c w_c log p_ic`, `p = softmax(logits)`,
 * with class weights `w` (`weight`, default all 1) and label smoothing `eps`
 * (`labelSmoothing`, default 0, Szegedy et al. 2016, "Rethinking the Inception
 * Architecture"). `reduction` `"mean"` (default) divides by the summed weight of the
 * non-ignored rows; rows labelled `ignoreIndex` (default -100) count 0, and a batch
 * with none left has loss 0 and zero gradients (PyTorch gives NaN there).
 * Shapes: logits `[N, C]`, labels `[N]`; gradient `grads.logits` `[N, C]`:
 * `s_i (q_sum p - q)` for the target distribution `q` of the formula.
 *
 * @example Loss and gradient
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([2, 0, 0, 0, 3, 0]), shape: [2, 3] as const };
 * const { loss, grads } = wasm.crossEntropy.valueAndGrad({ logits, labels: [0, 1] }, { labelSmoothing: 0.1 });
 * console.log(loss, grads.logits.shape); // 0.3339 [2, 3]
 * ```
 */
export const crossEntropy: Definition<
  CrossEntropyInputs,
  CrossEntropyOptions,
  CrossEntropyGrads,
  unknown,
  "loss",
  "logits"
> = lossDef<CrossEntropyInputs, CrossEntropyOptions, CrossEntropyGrads, "hardLabel", unknown, "logits">({
  name: "crossEntropy",
  shard: "logits",
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
});
