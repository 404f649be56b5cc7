/**
 * `accuracy`: the share of rows whose label is among the k largest logits.
 *
 * @module
 */
import type { MetricDef } from "../loss.ts";
import type { CommonOptions } from "../types.ts";
import * as v from "../validate.ts";
import { type CrossEntropyInputs, hardLabelInputs } from "./cross_entropy.ts";

/** Options of `accuracy`. */
export interface AccuracyOptions extends Omit<CommonOptions, "out"> {
  /** A row counts when its label is among the k largest logits (ties count for the label). @default 1 */
  k?: number;
  /** Rows with this label are left out of the share. @default -100 */
  ignoreIndex?: number;
}

/**
 * The definition of `accuracy`, a metric: `compute` returns the share of hits, with no
 * gradient (a step function of the logits) and no `out`.
 */
export const accuracy: MetricDef<CrossEntropyInputs, AccuracyOptions, "topkHits"> = {
  name: "accuracy",
  kernel: "topkHits",
  inputs: ["logits", "labels"],
  options: ["k", "ignoreIndex"],
  prepare(inputs, o) {
    const { n, c, labels, logits } = hardLabelInputs(inputs, o);
    const k = v.number("options.k", o.k, 1, { min: 1 });
    if (!Number.isInteger(k)) throw new RangeError(`Expected options.k to be an integer >= 1, got ${k}`);
    let count = 0;
    for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
    return { grad: false, n, c, logits, labels, k, count };
  },
  // raw.rows[0][0] is the number of hits.
  finish: (p, raw) => (p.count === 0 ? 0 : raw.rows[0][0] / p.count),
};
