/**
 * `hierarchical`: cross-entropy over coarse classes plus cross-entropy over only the
 * fine classes of the true coarse class.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { lin } from "../kernels/deferred.ts";

/** Inputs of `hierarchical`. */
export interface HierarchicalInputs {
  /** Coarse logits `[B, K]`. */
  coarse: Tensor;
  /** Fine logits `[B, C]`. */
  fine: Tensor;
  /** Fine class of each row, in `[0, C)`. */
  labels: Labels;
  /** The coarse class of each fine class `[C]`, in `[0, K)`. */
  fineToCoarse: Int32Array | readonly number[];
}

/** Options of `hierarchical`. */
export interface HierarchicalOptions extends CommonOptions {
  /** `"mean"` (over the B rows), `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `hierarchical`. */
export interface HierarchicalGrads {
  /** Gradient w.r.t. the coarse logits `[B, K]`. */
  coarse: Matrix;
  /** Gradient w.r.t. the fine logits `[B, C]`: exactly 0 outside the true coarse class's children. */
  fine: Matrix;
}

/** The parts of `hierarchical`, reduced as the loss is. */
export interface HierarchicalParts {
  /** The coarse cross-entropy. */
  coarse: number;
  /** The cross-entropy over the children of the true coarse class. */
  fine: number;
}

/** The internal definition of `hierarchical` (physMoe prepares its term with it). */
export const hierarchicalLoss = lossDef<
  HierarchicalInputs,
  HierarchicalOptions,
  HierarchicalGrads,
  "hierarchical",
  HierarchicalParts
>({
  name: "hierarchical",
  kernel: "hierarchical",
  inputs: ["coarse", "fine", "labels", "fineToCoarse"],
  options: ["reduction"],
  grads: ["coarse", "fine"],
  prepare(inputs, o, grad, upstream) {
    const [b, k] = v.batch("coarse", inputs.coarse);
    const [, c] = v.matrix("fine", inputs.fine, b);
    if (c === 0) throw new RangeError("Expected fine to have at least one column (one per class), got 0");
    const labels = v.integers("labels", inputs.labels, b, c);
    const f2c = v.integers("fineToCoarse", inputs.fineToCoarse, c, k);
    const coarse = v.values(inputs.coarse), fine = v.values(inputs.fine);
    if (o.checkFinite) {
      v.finite("coarse", coarse, k);
      v.finite("fine", fine, c);
    }
    const reduction = v.reduction(o.reduction);
    // Group the fine classes by coarse class (counting sort: ascending within a group).
    const start = new Int32Array(k + 1);
    for (const g of f2c) start[g + 1]++;
    for (let g = 0; g < k; g++) start[g + 1] += start[g];
    const children = new Int32Array(c), fill = start.slice(0, k);
    for (let j = 0; j < c; j++) children[fill[f2c[j]]++] = j;
    return {
      grad,
      b,
      k,
      c,
      coarse,
      fine,
      labels,
      coarseLabels: labels.map((y) => f2c[y]),
      children,
      start,
      scales: grad ? v.rowScales(reduction, upstream, b, b) : new Float64Array(0),
      reduction,
      outCoarse: grad ? outBuffer(o, "coarse", b, k) : null,
      outFine: grad ? outBuffer(o, "fine", b, c) : null,
    };
  },
  finish(p, raw) {
    const [coarseRows, fineRows] = raw.rows;
    const grads = {
      coarse: gradMatrix(p.outCoarse, raw.grads.coarse, p.b, p.k),
      fine: gradMatrix(p.outFine, raw.grads.fine, p.b, p.c),
    };
    if (p.reduction === "none") return { loss: lin(0, [coarseRows, 1], [fineRows, 1]), grads };
    const coarse = v.reduce(coarseRows, p.reduction, p.b) as number;
    const fine = v.reduce(fineRows, p.reduction, p.b) as number;
    return { loss: lin(0, [coarse, 1], [fine, 1]), coarse, fine, grads };
  },
});

/**
 * Hierarchical cross-entropy: `CE(coarse, fineToCoarse[y])` plus the cross-entropy over
 * only the fine classes of the true coarse class (the others are excluded, not masked
 * with -1e9: their gradient is exactly 0). Parts `coarse` and `fine`; gradients w.r.t.
 * coarse `[B, K]` and fine `[B, C]`.
 *
 * @example Two groups of two
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const coarse = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
 * const fine = { data: new Float32Array([0, 0, 5, 9]), shape: [1, 4] as const };
 * const r = js.hierarchical.forward({ coarse, fine, labels: [1], fineToCoarse: [0, 0, 1, 1] });
 * console.log(r.coarse, r.fine); // 0.6931 0.6931 (log 2 each: classes 2 and 3 are not read)
 * ```
 */
export const hierarchical: Definition<HierarchicalInputs, HierarchicalOptions, HierarchicalGrads, HierarchicalParts> =
  hierarchicalLoss;
