/**
 * The `hierarchical` family: coarse cross-entropy plus cross-entropy over the true group (`hierarchical`, a term of
 * `physMoe`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared `hierarchical` problem. */
export interface HierarchicalProblem extends Prepared {
  readonly b: number;
  readonly k: number;
  readonly c: number;
  readonly coarse: Float32Array;
  readonly fine: Float32Array;
  readonly labels: Int32Array;
  /** The coarse label of each row. */
  readonly coarseLabels: Int32Array;
  /**
   * The fine classes grouped by coarse class: the children of coarse class g are
   * `children[start[g] .. start[g + 1])`, ascending.
   */
  readonly children: Int32Array;
  readonly start: Int32Array;
  readonly scales: Float64Array;
  readonly reduction: Reduction;
  readonly outCoarse: Matrix | null;
  readonly outFine: Matrix | null;
}
