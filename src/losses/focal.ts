/**
 * `focal`: focal loss on softmax probabilities (Lin et al. 2017), solved by the
 * hard-label kernel of `crossEntropy` with a non-zero exponent.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Reduction } from "../types.ts";
import * as v from "../validate.ts";
import { type CrossEntropyGrads, type CrossEntropyInputs, finishHardLabel, hardLabelInputs } from "./cross_entropy.ts";
import { outBuffer } from "../kernels/core.ts";

/** Options of `focal`. */
export interface FocalOptions extends CommonOptions {
  /** Focusing exponent, in [0, 100]; 0 gives each row's cross-entropy (weighted by `alpha`). @default 2 */
  gamma?: number;
  /** Per-class weight alpha `[C]`, each in [0, 1e6]; none means all 1. */
  alpha?: Float32Array | readonly number[];
  /** Rows with this label are ignored. @default -100 */
  ignoreIndex?: number;
  /** `"mean"` (over the non-ignored rows), `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/**
 * Focal loss on softmax probabilities (Lin et al. 2017, "Focal Loss for Dense Object
 * Detection"): `loss_i = alpha_y (1 - p_t)^gamma CE_i`, `p_t = e^-CE_i`, `gamma` default
 * 2 (0 gives each row's cross-entropy), optional per-class `alpha [C]`. `"mean"` averages over the
 * non-ignored rows (alpha weighs rows but is not a denominator). The gradient is finite
 * at `p_t = 1` for every `gamma >= 0` (the unbounded factor `(1-p_t)^(gamma-1)` meets
 * `CE_i = 0` and the product is taken as its limit, 0).
 *
 * @example Focal loss
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([2, 0, 0, 0, 0, 2]), shape: [2, 3] as const };
 * console.log(wasm.focal.forward({ logits, labels: [0, 1] }, { gamma: 2 }).loss); // 0.8994 (PyTorch-built reference: 0.8993823043)
 * ```
 */
export const focal: Definition<CrossEntropyInputs, FocalOptions, CrossEntropyGrads> = lossDef<
  CrossEntropyInputs,
  FocalOptions,
  CrossEntropyGrads,
  "hardLabel"
>({
  name: "focal",
  kernel: "hardLabel",
  inputs: ["logits", "labels"],
  options: ["gamma", "alpha", "ignoreIndex", "reduction"],
  grads: ["logits"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const { n, c, labels, logits } = hardLabelInputs(inputs, o);
    const gamma = v.exponent("options.gamma", o.gamma, 2);
    const weight = v.vector("options.alpha", o.alpha, c, 0, v.MAX_WEIGHT);
    const reduction = v.reduction(o.reduction);
    // "mean" averages over the non-ignored rows; alpha weighs rows but is not a denominator.
    let denominator = 0;
    for (let i = 0; i < n; i++) if (labels[i] >= 0) denominator++;
    const scales = grad ? v.rowScales(reduction, upstream, n, denominator, (i) => labels[i] < 0) : new Float64Array(0);
    const out = grad ? outBuffer(o, "logits", n, c) : null;
    // The kernel's focal branch is taken for gamma != 0; gamma = 0 is exactly cross-entropy with weight alpha.
    return {
      grad,
      n,
      c,
      logits,
      labels,
      weight,
      smoothing: 0,
      gamma,
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
