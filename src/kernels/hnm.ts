/**
 * The `hnm` family: prototype cosines with hard negatives (`hnmContrastive`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared `hnmContrastive` problem. */
export interface HnmProblem extends Prepared {
  readonly b: number;
  readonly c: number;
  readonly d: number;
  readonly k: number;
  readonly f: Float32Array;
  readonly prototypes: Float32Array;
  readonly labels: Int32Array;
  readonly hard: Int32Array;
  readonly temperature: number;
  readonly scales: Float64Array;
  readonly reduction: Reduction;
  readonly out: Matrix | null;
}
