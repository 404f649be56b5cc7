/**
 * `ntXent`: the normalised-temperature cross-entropy of SimCLR and InfoNCE, supervised
 * by labels (pytorch-metric-learning's `NTXentLoss`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions } from "../types.ts";
import * as v from "../validate.ts";
import { type EmbeddingGrads, type EmbeddingInputs, metricProblem, metricResult } from "./metric.ts";

/** Inputs of `ntXent`. */
export type NtXentInputs = EmbeddingInputs;

/** Options of `ntXent`. */
export interface NtXentOptions extends CommonOptions {
  /** Temperature t of the cosines `s / t`, finite, >= 1e-6. @default 0.07 */
  temperature?: number;
}

/** Gradients of `ntXent`. */
export type NtXentGrads = EmbeddingGrads;

/**
 * NT-Xent / InfoNCE (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
 * Visual Representations"; van den Oord et al. 2018; PML `NTXentLoss`). With `s` the
 * cosines of the L2-normalised rows of f `[B, D]` and t the `temperature` (0.07), for every
 * ordered positive pair (a, p), `a != p`, `y_a = y_p`:
 * `l_ap = -log(e^(s_ap/t) / (e^(s_ap/t) + sum_{n: y_n != y_a} e^(s_an/t)))`; the loss is
 * the mean over those pairs (0, with zero gradients, when the batch has none). SimCLR:
 * the two augmented views of each image share a label. Gradient w.r.t. f.
 * Backends: reference, wasm, WebGPU (one pass of src/webgpu/metric.wgsl; GPU-resident
 * inputs and the GPU path, `readback: false`, included).
 *
 * @example Two views of two images
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0, 1, 0, 0, 2, 0, 1]), shape: [4, 2] as const };
 * console.log(js.ntXent.forward({ f, labels: [0, 0, 1, 1] }, { temperature: 1 }).loss); // 0.5514 = log(1 + 2/e)
 * ```
 */
export const ntXent: Definition<NtXentInputs, NtXentOptions, NtXentGrads> = lossDef<
  NtXentInputs,
  NtXentOptions,
  NtXentGrads,
  "metric"
>({
  name: "ntXent",
  kernel: "metric",
  inputs: ["f", "labels"],
  options: ["temperature"],
  grads: ["f"],
  prepare: (inputs, o, grad, upstream) =>
    metricProblem("ntXent", inputs, o, grad, upstream, { temperature: v.temperature(o.temperature, 0.07) }),
  finish: metricResult,
});
