/**
 * `proxyAnchor`: the proxy-anchor loss (pytorch-metric-learning's `ProxyAnchorLoss`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { metricProblem, metricResult, sharpness } from "./metric.ts";

/** Inputs of `proxyAnchor`. */
export interface ProxyAnchorInputs {
  /** Embeddings `[B, D]` (L2-normalised inside). */
  f: Tensor;
  /** One proxy per class `[C, D]` (L2-normalised inside; learnable). */
  proxies: Tensor;
  /** One class index per row, in `[0, C)`. */
  labels: Labels;
}

/** Options of `proxyAnchor`. */
export interface ProxyAnchorOptions extends CommonOptions {
  /** The cosine margin, in [-2, 2]. @default 0.1 */
  margin?: number;
  /** The sharpness, in [1e-6, 1e6]. @default 32 */
  alpha?: number;
}

/** Gradients of `proxyAnchor`. */
export interface ProxyAnchorGrads {
  /** Gradient w.r.t. the embeddings `[B, D]`. */
  f: Matrix;
  /** Gradient w.r.t. the proxies `[C, D]`. */
  proxies: Matrix;
}

/**
 * Proxy-anchor loss (Kim et al. 2020, "Proxy Anchor Loss for Deep Metric Learning"; PML
 * `ProxyAnchorLoss`). With `cos_ic` the cosine of the L2-normalised row i of f `[B, D]`
 * and proxy c of `proxies [C, D]`, and `P+` the classes present in the batch:
 * `pos = (1/|P+|) sum_{c in P+} log(1 + sum_{i: y_i = c} e^(-alpha (cos_ic - margin)))`,
 * `neg = (1/C) sum_c log(1 + sum_{i: y_i != c} e^(alpha (cos_ic + margin)))`; the loss is
 * `pos + neg`. `margin` 0.1, `alpha` 32. Gradients w.r.t. f and the proxies.
 * Backends: reference, wasm, WebGPU (one pass of src/webgpu/metric.wgsl; GPU-resident
 * inputs and the GPU path, `readback: false`, included).
 *
 * @example One row on its proxy
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([3, 0]), shape: [1, 2] as const };
 * const proxies = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * console.log(js.proxyAnchor.forward({ f, proxies, labels: [0] }, { margin: 0, alpha: 1 }).loss); // 0.6598 = log(1 + 1/e) + log(2)/2
 * ```
 */
export const proxyAnchor: Definition<ProxyAnchorInputs, ProxyAnchorOptions, ProxyAnchorGrads> = lossDef<
  ProxyAnchorInputs,
  ProxyAnchorOptions,
  ProxyAnchorGrads,
  "metric"
>({
  name: "proxyAnchor",
  kernel: "metric",
  inputs: ["f", "proxies", "labels"],
  options: ["margin", "alpha"],
  grads: ["f", "proxies"],
  prepare: (inputs, o, grad, upstream) =>
    metricProblem("proxyAnchor", inputs, o, grad, upstream, {
      margin: v.cosineMargin("options.margin", o.margin, 0.1),
      alpha: sharpness("options.alpha", o.alpha, 32),
    }),
  finish: metricResult,
});
