/**
 * The `topkHits` family: top-k hits of the label (the `accuracy` metric).
 *
 * @module
 */
import type { Prepared } from "./core.ts";

/** The prepared `accuracy` problem. */
export interface AccuracyProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly logits: Float32Array;
  readonly labels: Int32Array;
  readonly k: number;
  readonly count: number;
}
