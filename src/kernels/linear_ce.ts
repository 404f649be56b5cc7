/**
 * The `linearCe` family: fused linear cross-entropy (`linearCrossEntropy`), the logits
 * `z = cap(x W^T + bias)` streamed in chunks of classes and never held whole. Each chunk
 * of classes is a shard of crossEntropy's logits (src/kernels/shards.ts): its statistics
 * (`max`, the non-label `sum`, with smoothing `below`) merge across chunks exactly as
 * shards' do (`mergeShardStats`), the row terms come from the merged statistics
 * (`logitRowTerms`), and each chunk's gradient w.r.t. its logits is a shard's gradient.
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/** The prepared problem of `linearCrossEntropy` (with `classes`, W, bias and weight already gathered to them). */
export interface LinearCeProblem extends Prepared {
  readonly n: number;
  readonly d: number;
  /** The classes of the softmax (V, or S with `classes`). */
  readonly c: number;
  readonly x: Float32Array;
  /** `[c, d]`. */
  readonly W: Float32Array;
  /** `[c]`, or null for no bias. */
  readonly bias: Float32Array | null;
  /**
   * With `classes` and W or bias on the GPU (WebGPU only): the classes, whose rows of W and
   * bias (given whole, `[V, D]` and `[V]`) the kernel gathers; else null (W and bias hold the
   * `c` classes' rows).
   */
  readonly rows?: Int32Array | null;
  /** Labels as indices into the `c` classes, ignored rows -1. */
  readonly labels: Int32Array;
  /** Class weights `[c]`, or null for all 1. */
  readonly weight: Float32Array | null;
  readonly smoothing: number;
  /** The softcap c, 0 for none. */
  readonly softcap: number;
  readonly zLoss: number;
  /**
   * `[N, 2]` float64: the label's logit `cap(x_i . W_y + b_y)` (dot product in float64) and
   * its derivative `1 - tanh^2` (1 without a cap); 0 for ignored rows (empty for GPU inputs).
   */
  readonly target: Float64Array;
  /** Per-row gradient scales of the cross-entropy and of the z-loss (ignored rows 0). */
  readonly scales: Float64Array;
  readonly zScales: Float64Array;
  readonly reduction: Reduction;
  /** The summed class weight of the non-ignored rows ("mean" of the cross-entropy). */
  readonly denominator: number;
  /** The number of non-ignored rows ("mean" of the z-loss, accuracy). */
  readonly count: number;
  /** The caller's buffers of the gradients, or null. */
  readonly outX: Matrix | null;
  readonly outW: Matrix | null;
  readonly outBias: Float32Array | null;
}

/** The softcap `c tanh(u / c)` (identity for c = 0) and its derivative. */
export function capped(u: number, c: number): [number, number] {
  if (!c) return [u, 1];
  const t = Math.tanh(u / c);
  return [c * t, 1 - t * t];
}

/**
 * Row i is correct (1) when no other class's capped logit is strictly larger than its
 * label's: `cap(top_i) <= cap(zy_i)` (the cap is monotone, so the largest other logit
 * before the cap is the largest after it; ties count as correct). Ignored rows 0.
 */
export function correctRows(labels: Int32Array, top: Float64Array, zy: Float64Array, softcap: number): Float64Array {
  return Float64Array.from(
    labels,
    (y, i) => (y >= 0 && capped(top[i], softcap)[0] <= capped(zy[i], softcap)[0] ? 1 : 0),
  );
}
