/**
 * The `softmax` family: row softmax / log-softmax and their vector-Jacobian products.
 *
 * @module
 */
import type { Matrix } from "../types.ts";

/** The prepared problem of a softmax transform: its output, or its VJP with `up`. */
export interface SoftmaxProblem {
  readonly n: number;
  readonly c: number;
  readonly x: Float32Array;
  readonly log: boolean;
  /** Upstream rows `[N, C]` for the vector-Jacobian product; null for the output itself. */
  readonly up: Float32Array | null;
  readonly out: Matrix | null;
}

/** A transform's kernel: the output (or VJP) as a fresh array or in `out`. */
export type SoftmaxKernel = (p: SoftmaxProblem) => Float32Array | Promise<Float32Array>;
