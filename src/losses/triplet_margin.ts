/**
 * `tripletMargin`: the triplet margin loss with its miners (pytorch-metric-learning's
 * `TripletMarginLoss` with `TripletMarginMiner` or `BatchHardMiner`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions } from "../types.ts";
import * as v from "../validate.ts";
import type { Mining } from "../kernels/metric.ts";
import { type EmbeddingGrads, type EmbeddingInputs, metricProblem, metricResult } from "./metric.ts";

export type { Mining } from "../kernels/metric.ts";

/** Inputs of `tripletMargin`. */
export type TripletMarginInputs = EmbeddingInputs;

/** Options of `tripletMargin`. */
export interface TripletMarginOptions extends CommonOptions {
  /** The margin between the positive and the negative distance, in [-4, 4]. @default 0.05 */
  margin?: number;
  /** Which triplets count: `"all"`, `"hard"`, `"semihard"` or `"batchHard"`. @default "all" */
  mining?: Mining;
  /** `log(1 + e^v)` instead of `max(v, 0)`. @default false */
  soft?: boolean;
}

/** Gradients of `tripletMargin`. */
export type TripletMarginGrads = EmbeddingGrads;

/** The largest magnitude of a distance margin: the distances of unit rows lie in [0, 2]. */
const MAX_DISTANCE_MARGIN = 4;

/**
 * Triplet margin loss (Schroff et al. 2015, "FaceNet"; Hermans et al. 2017, "In Defense of
 * the Triplet Loss" for `batchHard`; PML `TripletMarginLoss` + `TripletMarginMiner` /
 * `BatchHardMiner`). `d` is the Euclidean distance of the L2-normalised rows of f `[B, D]`
 * (its gradient at `d = 0` is 0). Triplets (a, p, n), `y_p = y_a`, `p != a`, `y_n != y_a`:
 * `mining` `"all"` takes every triplet, `"hard"` those with `d_an - d_ap <= 0`,
 * `"semihard"` those with `0 < d_an - d_ap <= margin`, `"batchHard"` one per anchor, its
 * farthest positive and nearest negative (ties to the smaller index; anchors lacking
 * either are skipped). `v = d_ap - d_an + margin`, `l = max(v, 0)` (`soft`: `log(1 + e^v)`);
 * the loss is the mean over the triplets with `l > 0` (0 if none). `margin` 0.05. The
 * triplets are never listed: per anchor the negatives' distances are sorted once and each
 * positive's triplets summed from prefix sums. Gradient w.r.t. f.
 * Backends: reference, wasm, WebGPU (one pass of src/webgpu/metric.wgsl (there the mining walks each anchor's row of distances, one invocation per positive and per negative); GPU-resident
 * inputs and the GPU path, `readback: false`, included).
 *
 * @example One triplet
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0, 0, 1, 1, 0]), shape: [3, 2] as const };
 * console.log(js.tripletMargin.forward({ f, labels: [0, 0, 1] }, { margin: 0.5 }).loss); // 1.2071 = ((sqrt 2 - 0 + 0.5) + (sqrt 2 - sqrt 2 + 0.5)) / 2: anchors 0 and 1
 * ```
 */
export const tripletMargin: Definition<TripletMarginInputs, TripletMarginOptions, TripletMarginGrads> = lossDef<
  TripletMarginInputs,
  TripletMarginOptions,
  TripletMarginGrads,
  "metric"
>({
  name: "tripletMargin",
  kernel: "metric",
  inputs: ["f", "labels"],
  options: ["margin", "mining", "soft"],
  grads: ["f"],
  prepare: (inputs, o, grad, upstream) =>
    metricProblem("tripletMargin", inputs, o, grad, upstream, {
      margin: v.number("options.margin", o.margin, 0.05, { min: -MAX_DISTANCE_MARGIN, max: MAX_DISTANCE_MARGIN }),
      mining: v.oneOf("options.mining", o.mining, ["all", "hard", "semihard", "batchHard"] as const, "all"),
      soft: v.boolean("options.soft", o.soft, false),
    }),
  finish: metricResult,
});
