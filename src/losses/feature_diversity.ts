/**
 * `featureDiversity`: pushes the features of different experts apart (minus the mean
 * pairwise Euclidean distance between experts, per sample).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outList } from "../kernels/core.ts";
import { lin, total } from "../kernels/deferred.ts";

/** Inputs of `featureDiversity`. */
export interface FeatureDiversityInputs {
  /** One feature matrix `[B, D]` per expert (E >= 1 of them). */
  features: readonly Tensor[];
}

/** Options of `featureDiversity`. */
export interface FeatureDiversityOptions extends CommonOptions {
  /** Weight of the term, finite, in [-1e6, 1e6]. @default 0.01 */
  lambda?: number;
}

/** Gradients of `featureDiversity`. */
export interface FeatureDiversityGrads {
  /** Gradient w.r.t. each expert's features, in the order of the input. */
  features: Matrix[];
}

/**
 * Feature diversity of experts: `-lambda * mean` of `||f_e[b] - f_e'[b]||` over every
 * sample b and ordered pair of different experts (`lambda` 0.01; minimising it pushes
 * the experts apart; 0 for one expert). Gradients w.r.t. each expert's features (0
 * where a distance is 0).
 *
 * @example Two experts
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const a = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
 * const b = { data: new Float32Array([3, 4]), shape: [1, 2] as const };
 * console.log(js.featureDiversity.forward({ features: [a, b] }, { lambda: 1 }).loss); // -5
 * ```
 */
export const featureDiversity: Definition<FeatureDiversityInputs, FeatureDiversityOptions, FeatureDiversityGrads> =
  lossDef<FeatureDiversityInputs, FeatureDiversityOptions, FeatureDiversityGrads, "diversity">({
    name: "featureDiversity",
    kernel: "diversity",
    inputs: ["features"],
    options: ["lambda"],
    grads: ["features"],
    prepare(inputs, o, grad, upstream) {
      const [e, b, d] = v.matrixList("features", inputs.features);
      v.batch("features[0]", inputs.features[0]);
      const features = inputs.features.map((m) => v.values(m));
      if (o.checkFinite) features.forEach((f, i) => v.finite(`features[${i}]`, f, d));
      const lambda = v.weight("options.lambda", o.lambda, 0.01);
      const factor = e < 2 ? 0 : -lambda / (b * e * (e - 1));
      return {
        grad,
        e,
        b,
        d,
        features,
        factor,
        scale: grad ? factor * v.upstream(upstream) : 0,
        outs: grad ? outList(o, "features", e, b, d) : [],
      };
    },
    finish(p, raw) {
      const grads = p.features.map((_, i) => gradMatrix(p.outs[i] ?? null, raw.grads[`features.${i}`], p.b, p.d));
      // (+ 0 turns the -0 of a zero distance into 0)
      return { loss: lin(0, [total(raw.rows[0]), p.factor]), grads: { features: grads } };
    },
  });
