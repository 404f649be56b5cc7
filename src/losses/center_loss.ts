/**
 * `centerLoss`: the squared distance of each embedding to its class centre (Wen et al.
 * 2016, "A Discriminative Feature Learning Approach for Deep Face Recognition").
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";

/** Inputs of `centerLoss`. */
export interface CenterLossInputs {
  /** Embeddings `[N, D]`. */
  x: Tensor;
  /** Class centres `[C, D]`. */
  centers: Tensor;
  /** One class index per row, in `[0, C)`. */
  labels: Labels;
}

/** Options of `centerLoss`. */
export interface CenterLossOptions extends CommonOptions {
  /** `"mean"` (over the N rows), `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `centerLoss`. */
export interface CenterLossGrads {
  /** Gradient w.r.t. the embeddings `[N, D]`: `2 s_i (x_i - c_{y_i})`. */
  x: Matrix;
  /** Gradient w.r.t. the centres `[C, D]`: `-2 sum_{i: y_i = j} s_i (x_i - c_j)`. */
  centers: Matrix;
}

/** Checks embeddings `[N, D]` (N >= 1), a class matrix `[C, D]` (C >= 1) and labels in `[0, C)`. */
export function classInputs(
  inputs: Record<string, unknown>,
  xName: string,
  classesName: string,
  checkFinite: boolean | undefined,
): { n: number; c: number; d: number; x: Float32Array; classes: Float32Array; labels: Int32Array } {
  const [n, d] = v.batch(xName, inputs[xName]);
  const [c] = v.matrix(classesName, inputs[classesName], undefined, d);
  if (c === 0) throw new RangeError(`Expected ${classesName} to have at least one row (one per class), got 0`);
  const labels = v.integers("labels", inputs.labels, n, c);
  const x = v.values(inputs[xName] as Tensor), classes = v.values(inputs[classesName] as Tensor);
  if (checkFinite) {
    v.finite(xName, x, d);
    v.finite(classesName, classes, d);
  }
  return { n, c, d, x, classes, labels };
}

/**
 * Center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep
 * Face Recognition"): `loss_i = ||x_i - c_{y_i}||^2`, `reduction` `"mean"` over the N
 * rows (default), `"sum"`, `"none"`. Shapes: x `[N, D]`, centers `[C, D]`, labels `[N]`
 * in `[0, C)`; gradients `x: 2 s_i (x_i - c_y)`, `centers: -sum_{i: y_i = j} 2 s_i (x_i - c_j)`.
 * Wen et al. move the centres with `centerUpdate` instead of their gradient.
 *
 * @example Distance to the class centre
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([1, 2]), shape: [1, 2] as const };
 * const centers = { data: new Float32Array([0, 0, 1, 1]), shape: [2, 2] as const };
 * console.log(js.centerLoss.forward({ x, centers, labels: [1] }).loss); // 1 = (1-1)^2 + (2-1)^2
 * ```
 */
export const centerLoss: Definition<CenterLossInputs, CenterLossOptions, CenterLossGrads> = lossDef<
  CenterLossInputs,
  CenterLossOptions,
  CenterLossGrads,
  "center"
>({
  name: "centerLoss",
  kernel: "center",
  inputs: ["x", "centers", "labels"],
  options: ["reduction"],
  grads: ["x", "centers"],
  prepare(inputs, o, grad, upstream) {
    const { n, c, d, x, classes: centers, labels } = classInputs(
      inputs as unknown as Record<string, unknown>,
      "x",
      "centers",
      o.checkFinite,
    );
    const reduction = v.reduction(o.reduction);
    const scales = grad ? v.rowScales(reduction, upstream, n, n) : new Float64Array(0);
    return {
      grad,
      n,
      c,
      d,
      x,
      centers,
      labels,
      scales,
      reduction,
      outX: grad ? outBuffer(o, "x", n, d) : null,
      outCenters: grad ? outBuffer(o, "centers", c, d) : null,
    };
  },
  finish: (p, raw) => ({
    loss: v.reduce(raw.rows[0], p.reduction, p.n),
    grads: {
      x: gradMatrix(p.outX, raw.grads.x, p.n, p.d),
      centers: gradMatrix(p.outCenters, raw.grads.centers, p.c, p.d),
    },
  }),
});
