/**
 * The `softTarget` and `klDiv` families: two `[N, C]` inputs (`softCrossEntropy`, `klDiv`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

/** The prepared problem of a row-wise loss of two `[N, C]` inputs. */
export interface PairProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly a: Float32Array;
  readonly b: Float32Array;
  readonly scales: Float64Array;
  readonly outA: Matrix | null;
  readonly outB: Matrix | null;
  readonly reduction: string;
  readonly denominator: number;
}

/** The prepared `klDiv` problem. */
export interface KlProblem extends PairProblem {
  readonly logTarget: boolean;
}
