/**
 * `multiSimilarity`: the multi-similarity loss (pytorch-metric-learning's
 * `MultiSimilarityLoss`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions } from "../types.ts";
import * as v from "../validate.ts";
import { type EmbeddingGrads, type EmbeddingInputs, metricProblem, metricResult, sharpness } from "./metric.ts";

/** Inputs of `multiSimilarity`. */
export type MultiSimilarityInputs = EmbeddingInputs;

/** Options of `multiSimilarity`. */
export interface MultiSimilarityOptions extends CommonOptions {
  /** The positives' sharpness, in [1e-6, 1e6]. @default 2 */
  alpha?: number;
  /** The negatives' sharpness, in [1e-6, 1e6]. @default 50 */
  beta?: number;
  /** The similarity both terms are measured from, in [-2, 2]. @default 0.5 */
  base?: number;
}

/** Gradients of `multiSimilarity`. */
export type MultiSimilarityGrads = EmbeddingGrads;

/**
 * Multi-similarity loss (Wang et al. 2019, "Multi-Similarity Loss with General Pair
 * Weighting for Deep Metric Learning"; PML `MultiSimilarityLoss`). With S the cosines of
 * the L2-normalised rows of f `[B, D]`, per anchor i
 * `(1/alpha) log(1 + sum_{p != i: y_p = y_i} e^(-alpha (S_ip - base))) + (1/beta) log(1 + sum_{n: y_n != y_i} e^(beta (S_in - base)))`
 * (an empty sum contributes 0), averaged over all B anchors. `alpha` 2, `beta` 50,
 * `base` 0.5. Gradient w.r.t. f.
 * Backends: reference, wasm, WebGPU (one pass of src/webgpu/metric.wgsl; GPU-resident
 * inputs and the GPU path, `readback: false`, included).
 *
 * @example One positive pair, orthogonal to nothing
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0, 2, 0]), shape: [2, 2] as const };
 * console.log(js.multiSimilarity.forward({ f, labels: [0, 0] }, { alpha: 1 }).loss); // 0.4741 = log(1 + e^-0.5)
 * ```
 */
export const multiSimilarity: Definition<MultiSimilarityInputs, MultiSimilarityOptions, MultiSimilarityGrads> = lossDef<
  MultiSimilarityInputs,
  MultiSimilarityOptions,
  MultiSimilarityGrads,
  "metric"
>({
  name: "multiSimilarity",
  kernel: "metric",
  inputs: ["f", "labels"],
  options: ["alpha", "beta", "base"],
  grads: ["f"],
  prepare: (inputs, o, grad, upstream) =>
    metricProblem("multiSimilarity", inputs, o, grad, upstream, {
      alpha: sharpness("options.alpha", o.alpha, 2),
      beta: sharpness("options.beta", o.beta, 50),
      base: v.cosineMargin("options.base", o.base, 0.5),
    }),
  finish: metricResult,
});
