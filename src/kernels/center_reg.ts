/**
 * The `centerReg` family: normalised centres and the rule graph (`centerRegularization`, a term of `physMoe`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

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
