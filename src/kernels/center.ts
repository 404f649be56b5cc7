/**
 * The `center` family: distances of features to their class centres (`centerLoss`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared `centerLoss` problem. */
export interface CenterProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly d: number;
  readonly x: Float32Array;
  readonly centers: Float32Array;
  readonly labels: Int32Array;
  /** Per-row gradient scale (upstream and reduction folded in). */
  readonly scales: Float64Array;
  readonly reduction: Reduction;
  readonly outX: Matrix | null;
  readonly outCenters: Matrix | null;
}
