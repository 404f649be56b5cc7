/**
 * `centerRegularization`: pulls each embedding towards its normalised class centre and
 * each centre towards the rule-weighted mean of the other centres.
 *
 * @module
 */
import type { LossDef, Prepared } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { classInputs } from "./center_loss.ts";
import { gradMatrix, outBuffer } from "./cross_entropy.ts";
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
  /** Weight of the prototype term. @default 0.5 */
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

/** The prepared `centerRegularization` problem. */
export interface CenterRegProblem extends Prepared {
  readonly b: number;
  readonly c: number;
  readonly d: number;
  readonly f: Float32Array;
  readonly centers: Float32Array;
  readonly labels: Int32Array;
  /** The rule with a zero diagonal, each row divided by its sum (zero rows stay zero), `[C, C]`. */
  readonly A: Float64Array;
  readonly prototypeWeight: number;
  /** The upstream gradient (1 by default). */
  readonly upstream: number;
  readonly outF: Matrix | null;
  readonly outCenters: Matrix | null;
}

/**
 * The definition of `centerRegularization`: `c^ = normalize(centers)`,
 * `L_center + prototypeWeight * L_proto`.
 */
export const centerRegularization: LossDef<
  CenterRegularizationInputs,
  CenterRegularizationOptions,
  CenterRegularizationGrads,
  "centerReg"
> = {
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
    const prototypeWeight = v.number("options.prototypeWeight", o.prototypeWeight, 0.5);
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
    const center = raw.rows[0][0], proto = raw.rows[1][0];
    return {
      loss: center + p.prototypeWeight * proto,
      center,
      proto,
      grads: {
        f: gradMatrix(p.outF, raw.grads.f, p.b, p.d),
        centers: gradMatrix(p.outCenters, raw.grads.centers, p.c, p.d),
      },
    };
  },
};
