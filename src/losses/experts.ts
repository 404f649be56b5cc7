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
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outList } from "../kernels/core.ts";
import type { ExpertsProblem } from "../kernels/experts.ts";
import { lin, total } from "../kernels/deferred.ts";

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
export function means(rows: Float64Array[], from: number, count: number, b: number): number[] {
  return Array.from({ length: count }, (_, k) => lin(0, [total(rows[from + k]), 1 / b]));
}

/** The expert-logit gradients of a finished problem, as a list. */
export function expertGrads(p: ExpertsProblem, grads: Record<string, Float32Array>): Matrix[] {
  return p.logits.map((_, k) => gradMatrix(p.outs[k] ?? null, grads[`expertLogits.${k}`], p.b, p.c));
}

/** The checked `out.expertLogits` buffers of a loss over experts. */
export function expertOuts(o: CommonOptions, grad: boolean, e: number, b: number, c: number): (Matrix | null)[] {
  return grad ? outList(o, "expertLogits", e, b, c) : [];
}
