/**
 * The `diversity` family: pairwise distances between experts (`featureDiversity`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

/** The prepared `featureDiversity` problem. */
export interface DiversityProblem extends Prepared {
  readonly e: number;
  readonly b: number;
  readonly d: number;
  readonly features: Float32Array[];
  /**
   * The value's factor `-lambda / (B E (E - 1))` (0 for E = 1), times the upstream
   * gradient for the gradients.
   */
  readonly factor: number;
  readonly scale: number;
  readonly outs: (Matrix | null)[];
}
