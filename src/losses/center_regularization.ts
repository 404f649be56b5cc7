/**
 * `centerRegularization`: pulls each embedding towards its normalised class centre and
 * each centre towards the rule-weighted mean of the other centres.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { classInputs } from "./center_loss.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { first, lin } from "../kernels/deferred.ts";
import { ruleMatrix } from "./physics_contrastive.ts";

/** Inputs of `centerRegularization`. */
export interface CenterRegularizationInputs {
  /** Embeddings `[B, D]`, normalised by the caller (used as given). */
  f: Tensor;
  /** Class centres `[C, D]` (normalised inside). */
  centers: Tensor;
  /** One class index per row, in `[0, C)`. */
  labels: Labels;
  /** Rule similarity of the classes `[C, C]`, values in [0, 1]. */
  rule: Tensor;
}

/** Options of `centerRegularization`. */
export interface CenterRegularizationOptions extends CommonOptions {
  /** Weight of the prototype term, finite, in [-1e6, 1e6]. @default 0.5 */
  prototypeWeight?: number;
}

/** Gradients of `centerRegularization`. */
export interface CenterRegularizationGrads {
  /** Gradient w.r.t. the embeddings `[B, D]`. */
  f: Matrix;
  /** Gradient w.r.t. the centres `[C, D]` (through their normalisation). */
  centers: Matrix;
}

/** The parts of `centerRegularization`. */
export interface CenterRegularizationParts {
  /** `mean_i (1 - f_i . c^_{y_i})`. */
  center: number;
  /** `mean_c (1 - c^_c . (A c^)_c)`. */
  proto: number;
}

/** The internal definition of `centerRegularization` (physMoe prepares its term with it). */
export const centerRegularizationLoss = lossDef<
  CenterRegularizationInputs,
  CenterRegularizationOptions,
  CenterRegularizationGrads,
  "centerReg",
  CenterRegularizationParts
>({
  name: "centerRegularization",
  kernel: "centerReg",
  inputs: ["f", "centers", "labels", "rule"],
  options: ["prototypeWeight"],
  grads: ["f", "centers"],
  prepare(inputs, o, grad, upstream) {
    const { n: b, c, d, x: f, classes: centers, labels } = classInputs(
      inputs as unknown as Record<string, unknown>,
      "f",
      "centers",
      o.checkFinite,
    );
    const [, rule] = ruleMatrix("rule", inputs.rule, c);
    const prototypeWeight = v.weight("options.prototypeWeight", o.prototypeWeight, 0.5);
    // A = rule without its diagonal, rows divided by their sums (a zero row stays zero).
    const A = new Float64Array(c * c);
    for (let i = 0; i < c; i++) {
      let sum = 0;
      for (let j = 0; j < c; j++) if (j !== i) sum += rule[i * c + j];
      if (sum === 0) continue;
      for (let j = 0; j < c; j++) if (j !== i) A[i * c + j] = rule[i * c + j] / sum;
    }
    return {
      grad,
      b,
      c,
      d,
      f,
      centers,
      labels,
      A,
      prototypeWeight,
      upstream: grad ? v.upstream(upstream) : 1,
      outF: grad ? outBuffer(o, "f", b, d) : null,
      outCenters: grad ? outBuffer(o, "centers", c, d) : null,
    };
  },
  finish(p, raw) {
    const center = first(raw.rows[0]), proto = first(raw.rows[1]);
    return {
      loss: lin(0, [center, 1], [proto, p.prototypeWeight]),
      center,
      proto,
      grads: {
        f: gradMatrix(p.outF, raw.grads.f, p.b, p.d),
        centers: gradMatrix(p.outCenters, raw.grads.centers, p.c, p.d),
      },
    };
  },
});

/**
 * Centre regularisation: with `c^ = normalize(centers)`,
 * `L_center = mean_i (1 - f_i . c^_{y_i})` and, for `A` the rule without its diagonal
 * with rows divided by their sums, `L_proto = mean_c (1 - c^_c . (A c^)_c)`; the value is
 * `L_center + prototypeWeight * L_proto` (`prototypeWeight` 0.5), parts `center` and
 * `proto`. Gradients w.r.t. f and the centres.
 *
 * @example
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0]), shape: [1, 2] as const };
 * const centers = { data: new Float32Array([2, 0, 0, 1]), shape: [2, 2] as const };
 * const rule = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * const { loss, center, proto } = js.centerRegularization.forward({ f, centers, labels: [0], rule });
 * console.log(loss, center, proto); // 0.5 0 1
 * ```
 */
export const centerRegularization: Definition<
  CenterRegularizationInputs,
  CenterRegularizationOptions,
  CenterRegularizationGrads,
  CenterRegularizationParts
> = centerRegularizationLoss;
