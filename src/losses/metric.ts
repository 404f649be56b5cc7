/**
 * What the losses of the `metric` family share (`ntXent`, `tripletMargin`,
 * `multiSimilarity`, `proxyAnchor`, SPEC §8): their inputs' checks and their problem.
 *
 * @module
 */
import type { CommonOptions, Labels, Matrix, Tensor, Upstream } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer, type Raw } from "../kernels/core.ts";
import { first } from "../kernels/deferred.ts";
import { labelCounts, type MetricLoss, type MetricProblem } from "../kernels/metric.ts";

/** Inputs of `ntXent`, `tripletMargin` and `multiSimilarity`. */
export interface EmbeddingInputs {
  /** Embeddings `[B, D]` (L2-normalised inside, as `F.normalize`). */
  f: Tensor;
  /** One class index per row (any integer >= 0). */
  labels: Labels;
}

/** Gradients of `ntXent`, `tripletMargin` and `multiSimilarity`. */
export interface EmbeddingGrads {
  /** Gradient w.r.t. the embeddings `[B, D]` (through their normalisation). */
  f: Matrix;
}

/** The parameters of one loss of the family (the others keep neutral values). */
export type MetricParams = Partial<
  Pick<MetricProblem, "temperature" | "margin" | "mining" | "soft" | "alpha" | "beta" | "base">
>;

/**
 * The problem of a loss of the family: f `[B, D]`, labels (in `[0, C)` with proxies
 * `[C, D]`, else any integer >= 0), the upstream value and the `out` buffers.
 */
export function metricProblem(
  loss: MetricLoss,
  inputs: { f: Tensor; labels: Labels; proxies?: Tensor },
  o: CommonOptions,
  grad: boolean,
  upstream: Upstream | undefined,
  params: MetricParams,
): MetricProblem {
  const [b, d] = v.batch("f", inputs.f);
  let c = 0, proxies: Float32Array | null = null;
  if (loss === "proxyAnchor") {
    [c] = v.matrix("proxies", inputs.proxies, undefined, d);
    if (c === 0) throw new RangeError("Expected proxies to have at least one row (one per class), got 0");
    proxies = v.values(inputs.proxies as Tensor);
  }
  const labels = v.integers("labels", inputs.labels, b, c || 2 ** 31 - 1);
  const f = v.values(inputs.f);
  if (o.checkFinite) {
    v.finite("f", f, d);
    if (proxies) v.finite("proxies", proxies, d);
  }
  const { pairs, present } = labelCounts(labels);
  return {
    grad,
    loss,
    b,
    d,
    f,
    labels,
    proxies,
    c,
    temperature: 1,
    margin: 0,
    mining: "all",
    soft: false,
    alpha: 1,
    beta: 1,
    base: 0,
    ...params,
    pairs,
    present,
    upstream: grad ? v.upstream(upstream) : 1,
    outF: grad ? outBuffer(o, "f", b, d) : null,
    outProxies: grad && proxies ? outBuffer(o, "proxies", c, d) : null,
  };
}

/** The result of a loss of the family: the kernel's one row is the loss. */
export function metricResult<G>(p: MetricProblem, raw: Raw): { loss: number; grads: G } {
  const grads: Record<string, Matrix> = {};
  if (p.grad) {
    grads.f = gradMatrix(p.outF, raw.grads.f, p.b, p.d);
    if (p.proxies) grads.proxies = gradMatrix(p.outProxies, raw.grads.proxies, p.c, p.d);
  }
  return { loss: first(raw.rows[0]), grads: grads as G };
}

/** The largest sharpness (`alpha`, `beta`): its inverse and the exponents stay finite in float32. */
const MAX_SHARPNESS = 1e6;

/** Checks a sharpness (multiSimilarity's alpha and beta, proxyAnchor's alpha): finite, in [1e-6, 1e6]. */
export function sharpness(name: string, value: unknown, fallback: number): number {
  return v.number(name, value, fallback, { min: 1 / MAX_SHARPNESS, max: MAX_SHARPNESS });
}
