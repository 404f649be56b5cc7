/**
 * The `experts` family: one softmax per expert with its CE/focal and KL terms (`mixOutputs`, `iclMoe`, a term of
 * `physMoe`), and the math every backend shares for it (the gated ensemble, the gradient weights).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import { lin, recip } from "./deferred.ts";
import type { Matrix } from "../types.ts";

/**
 * The weights of the terms' gradients, as data every backend evaluates the same way
 * ({@linkcode ceWeights}; the WebGPU kernel on the GPU, between its statistics and its
 * gradients): expert e's CE/focal term gets `ce (1 + parallel P^2 / (E (m_e + eps)^2))`,
 * `P = E / sum_k 1/(m_k + eps)` (mixOutputs' parallel term, `m_e` the expert's mean CE
 * term: `d P / d m_e = P^2 / (E (m_e + eps)^2)`), the collaboration `col`, the pairs `pairs`.
 */
export interface ExpertWeights {
  readonly ce: number;
  readonly parallel: number;
  readonly eps: number;
  readonly col: number;
  readonly pairs: number;
}

/** `E / sum_e 1/(m_e + eps)` (mixOutputs' parallel term). */
export function parallelOf(means: ArrayLike<number>, eps: number): number {
  const s = lin(0, ...Array.from(means, (x) => [recip(lin(eps, [x, 1])), 1] as const));
  return lin(0, [recip(s), means.length]);
}

/** Each expert's CE/focal gradient weight, given the experts' mean CE terms (see {@linkcode ExpertWeights}). */
export function ceWeights(w: ExpertWeights, means: Float64Array): Float64Array {
  if (w.parallel === 0) return means.map(() => w.ce);
  const par = parallelOf(means, w.eps), e = means.length;
  return means.map((x) => w.ce * (1 + (w.parallel * par * par) / (e * (x + w.eps) ** 2)));
}

/** The prepared problem of the `experts` kernel family. */
export interface ExpertsProblem extends Prepared {
  readonly e: number;
  readonly b: number;
  readonly c: number;
  readonly logits: Float32Array[];
  readonly labels: Int32Array;
  /** Focal exponent per expert (0: cross-entropy). */
  readonly gamma: Float64Array;
  /** Added to every row's logits for the CE term only (log prior, `[C]`), or null. */
  readonly shift: Float64Array | null;
  /**
   * Gating weights `[B, E]`: the collaboration target is the gated ensemble
   * `sum_e gating[:, e] z_e` (a constant), which the kernel forms (float32) and returns as
   * `outputs.ensemble`; null for no collaboration term.
   */
  readonly gating: Float32Array | null;
  /** Whether the kernel also returns the experts' mean logits `(1/E) sum_e z_e` (`outputs.meanLogits`). */
  readonly mean: boolean;
  /** Whether the pairwise distillation term is computed. */
  readonly pairs: boolean;
  /** The gradient weights of the terms' means over B. */
  readonly weights: ExpertWeights;
  readonly outs: (Matrix | null)[];
}

/** The gated ensemble `sum_e gating[:, e] z_e`, `[B, C]` float32 (checked `gating [B, E]`). */
export function ensemble(gating: Float32Array, logits: Float32Array[], b: number, c: number): Float32Array {
  const e = logits.length, out = new Float32Array(b * c);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < e; k++) s += gating[i * e + k] * logits[k][i * c + j];
      out[i * c + j] = s;
    }
  }
  return out;
}

/**
 * The values an experts kernel on the host returns besides the rows and gradients: the
 * gated ensemble (the collaboration target, when a gating is given) and the mean logits
 * (when asked for), `[B, C]` float32 each.
 */
export function expertOutputs(p: ExpertsProblem, target: Float32Array | null): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  if (target) out.ensemble = target;
  if (p.mean) {
    const mean = new Float32Array(p.b * p.c);
    for (let i = 0; i < mean.length; i++) {
      let s = 0;
      for (const z of p.logits) s += z[i];
      mean[i] = s / p.e;
    }
    out.meanLogits = mean;
  }
  return out;
}
