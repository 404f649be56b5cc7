/**
 * The `combine` family: how a composite loss's gradients are formed from its terms'
 * (`physMoe`), as a term of its own that runs after the others on the same backend (on
 * the GPU when the inputs are there, so the gradients never leave it). Its fields are
 * other terms' gradients, bound by the composite's links (`Term.links`), and it updates
 * them in place:
 * - `sums`: `into += from` for each pair (the features' gradient of two terms);
 * - `gated`: the vector-Jacobian product of a gated ensemble `fine = sum_e gating[:, e] z_e`
 *   (`[B, C]`, `gating [B, E]`): with `dFine` the gradient w.r.t. `fine`,
 *   `into[e] += gating[:, e] * dFine` (each row scaled) and the gating's gradient
 *   `grads.gating[i, e] = <z_e[i], dFine[i]>` (into `out` when given).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

/** The vector-Jacobian product of a gated ensemble (see the module). */
export interface GatedVjp {
  readonly b: number;
  readonly c: number;
  readonly e: number;
  /** The experts' logits `[B, C]` each (the values the ensemble was formed from). */
  readonly logits: Float32Array[];
  /** Gating weights `[B, E]`. */
  readonly gating: Float32Array;
  /** The gradient w.r.t. the ensemble `[B, C]` (a link). */
  readonly dFine: Float32Array;
  /** Each expert's gradient `[B, C]` (links), added to in place. */
  readonly into: Float32Array[];
  /** The caller's buffer for the gating's gradient, or null. */
  readonly out: Matrix | null;
}

/** The prepared problem of the `combine` family. */
export interface CombineProblem extends Prepared {
  /** In-place sums `into += from` (links; equal lengths). */
  readonly sums: readonly (readonly [into: Float32Array, from: Float32Array])[];
  /** The gated ensemble's vector-Jacobian product, or null. */
  readonly gated: GatedVjp | null;
}

/** The value of a combine field before its link binds it (it is never read). */
export const LINKED: Float32Array = new Float32Array(0);
