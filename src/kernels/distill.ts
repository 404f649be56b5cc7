/**
 * The `distill` family: temperature KL plus cross-entropy (`distillation`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared `distillation` problem. */
export interface DistillationProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly student: Float32Array;
  readonly teacher: Float32Array;
  readonly labels: Int32Array;
  readonly temperature: number;
  readonly alpha: number;
  readonly reduction: Reduction;
  /** Non-ignored rows: the cross-entropy mean's denominator. */
  readonly count: number;
  /** Per-row gradient factors of the KL term (alpha T scale) and of the CE term ((1 - alpha) scale). */
  readonly ka: Float64Array;
  readonly ca: Float64Array;
  readonly out: Matrix | null;
}
