/**
 * What the mixture-of-experts losses share (`mixOutputs`, `iclMoe`, and through them
 * `physMoe`): one problem over E expert logit matrices `[B, C]` that the `experts`
 * kernel family solves with one softmax per expert and row, serving that expert's
 * cross-entropy or focal term, its collaboration term (a KL divergence to a constant
 * target distribution) and the pairwise distillation between experts.
 *
 * Per row i and expert e, with `p_e = softmax(z_e + shift)` and `q_e = softmax(z_e)`:
 * - `ce[e][i]`: `(1 - p_t)^gamma_e CE_i` with `CE_i = -log p_e[y_i]`, `p_t = e^-CE_i` (gamma 0: CE);
 * - `col[e][i]`: `KL(softmax(t_i) || q_e)` for the gated ensemble `t = sum_k gating[:, k] z_k` (a
 *   constant target; when a gating is given);
 * - `pairs[i]`: `sum_{j != e} KL(q_j || q_e)` over ordered pairs of experts (mixOutputs).
 * Gradients (each term's mean over B weighted by {@linkcode ceWeights} of `weights`): the
 * CE/focal term through `p_e`, the collaboration term `q_e - softmax(t)`, and the pairs
 * `(E q_e - sum_k q_k) + q_e * (D_e - <q_e, D_e>)` with `D_e = E log q_e - sum_k log q_k`
 * (the distillation gradient flows through both softmaxes of each pair).
 *
 * @module
 */
import type { Prepared } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outList } from "./cross_entropy.ts";

/** The inputs every mixture-of-experts loss takes. */
export interface ExpertInputs {
  /** One logit matrix `[B, C]` per expert (E >= 1). */
  expertLogits: readonly Tensor[];
  /** One class index per row, in `[0, C)`. */
  labels: Labels;
}

/** The gradient of a mixture-of-experts loss w.r.t. the expert logits. */
export interface ExpertGrads {
  /** Gradient w.r.t. each expert's logits `[B, C]`, in the order of the input. */
  expertLogits: Matrix[];
}

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
export function parallelOf(means: Float64Array, eps: number): number {
  let s = 0;
  for (const x of means) s += 1 / (x + eps);
  return means.length / s;
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

/** Checks the expert logits and the labels; returns E, B, C, the values and the labels. */
export function expertInputs(
  inputs: ExpertInputs,
  o: CommonOptions,
): { e: number; b: number; c: number; logits: Float32Array[]; labels: Int32Array } {
  const [e, b, c] = v.matrixList("expertLogits", inputs.expertLogits);
  if (b === 0) {
    throw new RangeError("Expected expertLogits[0] to have at least one row (an empty batch has no loss), got 0");
  }
  if (c === 0) throw new RangeError("Expected expertLogits[0] to have at least one column (one per class), got 0");
  const logits = inputs.expertLogits.map((m) => v.values(m));
  if (o.checkFinite) logits.forEach((z, i) => v.finite(`expertLogits[${i}]`, z, c));
  const labels = v.integers("labels", inputs.labels, b, c);
  return { e, b, c, logits, labels };
}

/** Mean over B of each of `count` per-row arrays starting at `rows[from]`. */
export function means(rows: Float64Array[], from: number, count: number, b: number): Float64Array {
  const out = new Float64Array(count);
  for (let k = 0; k < count; k++) {
    let s = 0;
    for (const r of rows[from + k]) s += r;
    out[k] = s / b;
  }
  return out;
}

/** The expert-logit gradients of a finished problem, as a list. */
export function expertGrads(p: ExpertsProblem, grads: Record<string, Float32Array>): Matrix[] {
  return p.logits.map((_, k) => gradMatrix(p.outs[k] ?? null, grads[`expertLogits.${k}`], p.b, p.c));
}

/** The checked `out.expertLogits` buffers of a loss over experts. */
export function expertOuts(o: CommonOptions, grad: boolean, e: number, b: number, c: number): (Matrix | null)[] {
  return grad ? outList(o, "expertLogits", e, b, c) : [];
}
