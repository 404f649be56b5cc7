/**
 * `softCrossEntropy`: cross-entropy against soft target rows.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";

/** Inputs of `softCrossEntropy`. */
export interface SoftCrossEntropyInputs {
  /** Unnormalised scores `[N, C]`. */
  logits: Tensor;
  /** Target distribution per row `[N, C]` (usually probabilities). */
  target: Tensor;
}

/** Options of `softCrossEntropy`. */
export interface SoftCrossEntropyOptions extends CommonOptions {
  /** `"mean"` (over rows), `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `softCrossEntropy`. */
export interface SoftCrossEntropyGrads {
  /** Gradient w.r.t. the logits `[N, C]`. */
  logits: Matrix;
  /** Gradient w.r.t. the target `[N, C]`: `-log_softmax(logits)` times the row's upstream. */
  target: Matrix;
}

/** Checks two `[N, C]` inputs of the same shape and returns the sizes and values. */
export function pairInputs(
  inputs: object,
  nameA: string,
  nameB: string,
  o: CommonOptions,
): [number, number, Float32Array, Float32Array] {
  v.inputs(inputs);
  const rec = inputs as Record<string, Matrix>;
  const [n, c] = v.batch(nameA, rec[nameA]);
  v.matrix(nameB, rec[nameB], n, c);
  const a = v.values(rec[nameA]), b = v.values(rec[nameB]);
  if (o.checkFinite) {
    v.finite(nameA, a, c);
    v.finite(nameB, b, c);
  }
  return [n, c, a, b];
}

/**
 * Cross-entropy against soft targets ("soft_entropy"): `loss_i = -sum_c t_ic log p_ic`,
 * `p = softmax(logits)`. Shapes: logits and target `[N, C]`; `reduction` `"mean"` over
 * rows (default), `"sum"`, `"none"`. Gradients: logits `s_i (sum_c t_ic) p - t`,
 * target `-s_i log p`.
 *
 * @example Soft labels
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([1, 2, 3]), shape: [1, 3] as const };
 * const target = { data: new Float32Array([0.1, 0.2, 0.7]), shape: [1, 3] as const };
 * console.log(wasm.softCrossEntropy.forward({ logits, target }).loss); // 0.8076 (PyTorch: 0.8076059644)
 * ```
 */
export const softCrossEntropy: Definition<SoftCrossEntropyInputs, SoftCrossEntropyOptions, SoftCrossEntropyGrads> =
  lossDef<SoftCrossEntropyInputs, SoftCrossEntropyOptions, SoftCrossEntropyGrads, "softTarget">({
    name: "softCrossEntropy",
    kernel: "softTarget",
    inputs: ["logits", "target"],
    options: ["reduction"],
    grads: ["logits", "target"],
    prepare(inputs, options, grad, upstream) {
      const o = v.options(options);
      const [n, c, a, b] = pairInputs(inputs, "logits", "target", o);
      const reduction = v.reduction(o.reduction);
      const scales = grad ? v.rowScales(reduction, upstream, n, n) : new Float64Array(0);
      return {
        grad,
        n,
        c,
        a,
        b,
        scales,
        reduction,
        denominator: n,
        outA: grad ? outBuffer(o, "logits", n, c) : null,
        outB: grad ? outBuffer(o, "target", n, c) : null,
      };
    },
    finish: (p, raw) => ({
      loss: v.reduce(raw.rows[0], p.reduction as Reduction, p.denominator),
      grads: {
        logits: gradMatrix(p.outA, raw.grads.a, p.n, p.c),
        target: gradMatrix(p.outB, raw.grads.b, p.n, p.c),
      },
    }),
  });
