/**
 * `accuracy`: the share of rows whose label is among the k largest logits.
 *
 * @module
 */
import type { LossDef, Prepared } from "../loss.ts";
import type { CommonOptions, Matrix } from "../types.ts";
import * as v from "../validate.ts";
import { type CrossEntropyGrads, type CrossEntropyInputs, hardLabelInputs } from "./cross_entropy.ts";

/** Options of `accuracy`. */
export interface AccuracyOptions extends CommonOptions {
  /** A row counts when its label is among the k largest logits (ties count for the label). @default 1 */
  k?: number;
  /** Rows with this label are left out of the share. @default -100 */
  ignoreIndex?: number;
}

/** The prepared `accuracy` problem. */
export interface AccuracyProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly logits: Float32Array;
  readonly labels: Int32Array;
  readonly k: number;
  readonly count: number;
}

/** The definition of `accuracy`. Its gradient is 0 (a step function of the logits). */
export const accuracy: LossDef<CrossEntropyInputs, AccuracyOptions, CrossEntropyGrads, AccuracyProblem> = {
  name: "accuracy",
  prepare(inputs, options, grad) {
    const o = v.options(options);
    const { n, c, labels, logits } = hardLabelInputs(inputs, o);
    const k = v.number("options.k", o.k, 1, { min: 1 });
    if (!Number.isInteger(k)) throw new RangeError(`Expected options.k to be an integer >= 1, got ${k}`);
    let count = 0;
    for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
    return { grad, n, c, logits, labels, k, count };
  },
  finish: (p, raw) => ({
    // raw.rows[0][0] is the number of hits.
    loss: p.count === 0 ? 0 : raw.rows[0][0] / p.count,
    grads: { logits: { data: new Float32Array(p.grad ? p.n * p.c : 0), shape: [p.n, p.c] } as Matrix },
  }),
};
