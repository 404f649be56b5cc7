/**
 * `accuracy`: the share of rows whose label is among the k largest logits.
 *
 * @module
 */
import { type Definition, metricDef } from "../loss.ts";
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
 * Top-k accuracy, a metric: `compute` returns the share of non-ignored rows whose label
 * is among the `k` (default 1) largest logits; a label counts when fewer than `k` logits
 * are strictly greater (ties count for the label). 0 when every row is ignored. A metric
 * has no gradient, no `backward` and no `out`.
 *
 * @example Top-1 and top-2
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([3, 2, 1, 1, 2, 3]), shape: [2, 3] as const };
 * console.log(wasm.accuracy.compute({ logits, labels: [1, 2] })); // 0.5
 * console.log(wasm.accuracy.compute({ logits, labels: [1, 2] }, { k: 2 })); // 1
 * ```
 */
export const accuracy: Definition<CrossEntropyInputs, AccuracyOptions, unknown, unknown, "metric"> = metricDef<
  CrossEntropyInputs,
  AccuracyOptions,
  "topkHits"
>({
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
});
