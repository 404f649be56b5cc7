/**
 * The `paired` family: two batches of embeddings `a [N, D]`, `b [N, D]` whose row i is a
 * positive pair, scored against every other row by the N x N similarities
 * `S = a b^T` (`clip`: symmetric cross-entropy over `scale S`; `siglip`: a sigmoid per
 * pair over `scale S + bias`). Every backend works on blocks of S, never the whole
 * matrix; this file holds the problem type and the scalar math the backends share.
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

/** Which loss of the family. */
export type PairedKind = "clip" | "siglip";

/** The prepared `clip` / `siglip` problem. */
export interface PairedProblem extends Prepared {
  readonly kind: PairedKind;
  readonly n: number;
  /** The columns of S (= n): `init`'s `auto` routing weighs a problem by `n c d / 16`, as the heads'. */
  readonly c: number;
  readonly d: number;
  readonly a: Float32Array;
  readonly b: Float32Array;
  /** The logit scale (CLIP's `logit_scale.exp()`, SigLIP's `t`), > 0. */
  readonly scale: number;
  /** SigLIP's logit bias (0 for clip). */
  readonly bias: number;
  /** The upstream gradient of the (reduced) loss: every gradient is multiplied by it. */
  readonly upstream: number;
  readonly outA: Matrix | null;
  readonly outB: Matrix | null;
}

/**
 * The raw result's number gradients (`Raw.numbers`): `scale` (and `bias` for siglip),
 * already multiplied by the upstream gradient.
 */
export type PairedNumbers = { scale: number; bias?: number };

/** The rows and columns of S per block (every backend's unit of work; a block is `PAIRED_BLOCK^2` floats). */
export const PAIRED_BLOCK = 256;

/** `log(1 + e^x)` without overflow or cancellation: `max(x, 0) + log1p(e^-|x|)` (= `-log sigmoid(-x)`). */
export function softplus(x: number): number {
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

/** `1 / (1 + e^-x)` for any x (no overflow: the exponential is of `-|x|`). */
export function sigmoid(x: number): number {
  const e = Math.exp(-Math.abs(x));
  return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}
