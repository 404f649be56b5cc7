/**
 * `crossEntropy`: softmax cross-entropy with integer labels, as
 * `torch.nn.functional.cross_entropy`, and the hard-label problem it shares with `focal`.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import type { HardLabelProblem } from "../kernels/hard_label.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { lin } from "../kernels/deferred.ts";

/** Inputs of `crossEntropy` and `focal`. */
export interface CrossEntropyInputs {
  /** Unnormalised scores `[N, C]`. */
  logits: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
}

/** Options of `crossEntropy`. */
export interface CrossEntropyOptions extends CommonOptions {
  /** Weight of each class `[C]`, each in [0, 1e6]; none means all 1. */
  weight?: Float32Array | readonly number[];
  /** Rows with this label are ignored (loss 0, gradient 0). @default -100 */
  ignoreIndex?: number;
  /** Mass moved from the label to the uniform distribution, in `[0, 1]`. @default 0 */
  labelSmoothing?: number;
  /**
   * Logit soft-capping (Gemma-2; Liger-Kernel's `softcap`): every logit `z` becomes
   * `softcap * tanh(z / softcap)` before the softmax, so that no logit exceeds `softcap` in
   * magnitude; the gradient flows through the cap (`1 - tanh^2`). Finite, in (0, 1e9]; absent
   * means no cap. @default undefined
   */
  softcap?: number;
  /**
   * The z-loss coefficient k (PaLM, Chowdhery et al. 2022, section 5; Liger-Kernel's
   * `lse_square_scale`): each non-ignored row adds `k * lse_i^2`, `lse_i` the log-sum-exp of
   * its (capped) logits, not multiplied by a class weight. `"mean"` divides the summed terms by
   * the number of non-ignored rows (also with `weight`, as Liger-Kernel; 0 when there is none),
   * `"sum"` leaves them undivided, `"none"` adds row i's own term to row i. The reduced term is
   * part `z` of the result and is included in `loss`. Finite, in [0, 1e6]. @default 0
   */
  zLoss?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** The parts of `crossEntropy`. */
export interface CrossEntropyParts {
  /**
   * The z-loss term `zLoss * lse^2`, reduced as the loss is (over the non-ignored rows for
   * `"mean"`), included in `loss`; 0 when `zLoss` is 0. With `reduction: "none"` it is one
   * value per row (a `Float32Array`).
   */
  z: number;
}

/** Gradients of `crossEntropy` and `focal`. */
export interface CrossEntropyGrads {
  /** Gradient w.r.t. the logits `[N, C]`. */
  logits: Matrix;
}

/** Checks the inputs shared by the hard-label losses. */
export function hardLabelInputs(
  inputs: CrossEntropyInputs,
  o: CommonOptions & { ignoreIndex?: number },
): { n: number; c: number; labels: Int32Array; ignoreIndex: number; logits: Float32Array } {
  v.inputs(inputs);
  const [n, c] = v.batch("logits", inputs.logits);
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
  const logits = v.values(inputs.logits);
  if (o.checkFinite) v.finite("logits", logits, c);
  return { n, c, labels, ignoreIndex, logits };
}

/** The hard-label finish step shared with `focal`. */
export function finishHardLabel(p: HardLabelProblem, rows: Float64Array, grad: Float32Array | undefined) {
  const loss = v.reduce(rows, p.reduction, p.denominator);
  // `grads` is read only when gradients were asked for (then the kernel wrote `grad`).
  return { loss, grads: { logits: gradMatrix(p.out, grad, p.n, p.c * (p.subcenters ?? 1)) } };
}

/**
 * Softmax cross-entropy with integer labels, as `torch.nn.functional.cross_entropy`:
 * `loss_i = -(1-eps) w_y log p_iy - (eps/C) sum_c w_c log p_ic`, `p = softmax(logits)`,
 * with class weights `w` (`weight`, default all 1) and label smoothing `eps`
 * (`labelSmoothing`, default 0, Szegedy et al. 2016, "Rethinking the Inception
 * Architecture"). `reduction` `"mean"` (default) divides by the summed weight of the
 * non-ignored rows; rows labelled `ignoreIndex` (default -100) count 0, and a batch
 * with none left has loss 0 and zero gradients (PyTorch gives NaN there).
 * Shapes: logits `[N, C]`, labels `[N]`; gradient `grads.logits` `[N, C]`:
 * `s_i (q_sum p - q)` for the target distribution `q` of the formula.
 *
 * For large vocabularies (as Liger-Kernel's cross-entropy): `softcap` c first replaces
 * every logit by `c tanh(z / c)` (Gemma-2), and `zLoss` k adds `k lse_i^2` per non-ignored
 * row (PaLM's z-loss; `lse` over the capped logits, no class weight; `"mean"` divides by
 * the number of non-ignored rows). Part `z` is that term, reduced, and is included in
 * `loss`; the gradients go through both. docs/LOSSES.md lists where this differs from
 * Liger-Kernel.
 *
 * @example Loss and gradient
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([2, 0, 0, 0, 3, 0]), shape: [2, 3] as const };
 * const { loss, grads } = wasm.crossEntropy.valueAndGrad({ logits, labels: [0, 1] }, { labelSmoothing: 0.1 });
 * console.log(loss, grads.logits.shape); // 0.3339 [2, 3]
 * ```
 *
 * @example Softcap and z-loss (a language model's head)
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([40, 0, 0, 0, 3, 0]), shape: [2, 3] as const };
 * const r = wasm.crossEntropy.forward({ logits, labels: [0, 1] }, { softcap: 30, zLoss: 1e-4 });
 * console.log(r.loss, r.z); // 0.0825 0.0345 (40 is capped to 30 tanh(4/3) = 26.1; z is included in loss)
 * ```
 */
export const crossEntropy: Definition<
  CrossEntropyInputs,
  CrossEntropyOptions,
  CrossEntropyGrads,
  CrossEntropyParts,
  "loss",
  "logits"
> = lossDef<CrossEntropyInputs, CrossEntropyOptions, CrossEntropyGrads, "hardLabel", CrossEntropyParts, "logits">({
  name: "crossEntropy",
  shard: "logits",
  kernel: "hardLabel",
  inputs: ["logits", "labels"],
  options: ["weight", "ignoreIndex", "labelSmoothing", "softcap", "zLoss", "reduction"],
  grads: ["logits"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const { n, c, labels, logits } = hardLabelInputs(inputs, o);
    const weight = v.vector("options.weight", o.weight, c, 0, v.MAX_WEIGHT);
    const smoothing = v.number("options.labelSmoothing", o.labelSmoothing, 0, { min: 0, max: 1 });
    const { softcap, zLoss } = largeVocabulary(o);
    const reduction = v.reduction(o.reduction);
    // "mean" divides by the summed weight of the non-ignored rows, as PyTorch; the z-loss by their number.
    let denominator = 0;
    for (let i = 0; i < n; i++) if (labels[i] >= 0) denominator += weight ? weight[labels[i]] : 1;
    const ignored = (i: number) => labels[i] < 0;
    const scales = grad ? v.rowScales(reduction, upstream, n, denominator, ignored) : new Float64Array(0);
    const zScales = grad && zLoss ? v.rowScales(reduction, upstream, n, nonIgnored(labels), ignored) : undefined;
    const out = grad ? outBuffer(o, "logits", n, c) : null;
    return {
      grad,
      n,
      c,
      logits,
      labels,
      weight,
      smoothing,
      gamma: 0,
      scale: 1,
      clamp: false,
      target: null,
      scales,
      out,
      reduction,
      denominator,
      softcap,
      zLoss,
      zScales,
    };
  },
  finish(p, raw) {
    const { loss: ce, grads } = finishHardLabel(p, raw.rows[0], raw.grads.logits);
    // Without a z-loss the part is 0 (a row of zeros with "none") and the loss is the cross-entropy's.
    if (!p.zLoss) return { loss: ce, z: p.reduction === "none" ? new Float32Array(p.n) : 0, grads };
    const zRows = raw.rows[1];
    const z = v.reduce(zRows, p.reduction, nonIgnored(p.labels));
    if (p.reduction !== "none") return { loss: lin(0, [ce as number, 1], [z as number, 1]), z, grads };
    // "none": row i's loss and its own z term, summed in float64.
    return { loss: lin(0, [raw.rows[0], 1], [zRows, 1]), z, grads };
  },
});

/** The number of non-ignored rows (labels < 0 are ignored). */
export const nonIgnored = (labels: Int32Array): number => labels.reduce((k, y) => k + (y >= 0 ? 1 : 0), 0);

/** Checks crossEntropy's `softcap` (absent: none, as 0) and `zLoss` (default 0). */
export function largeVocabulary(o: { softcap?: unknown; zLoss?: unknown }): { softcap: number; zLoss: number } {
  const softcap = v.number("options.softcap", o.softcap, 0, { min: 0, minExclusive: true, max: 1e9 });
  const zLoss = v.weight("options.zLoss", o.zLoss, 0, 0);
  return { softcap, zLoss };
}
