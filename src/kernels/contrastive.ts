/**
 * The `contrastive` family: B x B similarities of the rule-aware supervised contrastive loss (`physicsContrastive`,
 * a term of `physMoe`).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared `physicsContrastive` problem. */
export interface ContrastiveProblem extends Prepared {
  readonly b: number;
  readonly d: number;
  readonly f: Float32Array;
  readonly labels: Int32Array;
  /** `rule [K, K]` (float32, values in [0, 1]) or null (all 0). */
  readonly rule: Float32Array | null;
  readonly k: number;
  readonly temperature: number;
  readonly threshold: number;
  /** Per anchor: 1 when it has a positive and a non-zero denominator weight, else 0. */
  readonly valid: Uint8Array;
  /** Per anchor: its number of positives. */
  readonly positives: Int32Array;
  /** Per-anchor gradient scale (0 for anchors that are not valid). */
  readonly scales: Float64Array;
  readonly reduction: Reduction;
  /** The number of valid anchors (`"mean"`'s denominator). */
  readonly denominator: number;
  readonly out: Matrix | null;
}
