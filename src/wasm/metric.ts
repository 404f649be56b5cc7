/**
 * WebAssembly glue of the `metric` family (`assembly/metric.ts`): the rows normalised,
 * the cosines by the heads' GEMM (`contrastive_dots` of physicsContrastive for h h^T, upper
 * blocks only; `gemm` for h p^T), the loss's walk over them, then the gradient by the
 * same GEMM ((A + A^T) h by `contrastive_grad`; A p and A^T h) and through the
 * normalisation.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { type MetricProblem, MINING_CODES } from "../kernels/metric.ts";
import { Frame, NONE } from "./frame.ts";
import { rowStride } from "./physics_contrastive.ts";

/**
 * Above this sharpness (1/t, beta, alpha) the cosines are float64 dot products
 * ("precise"): a float32 cosine's rounding, times it, would move the loss by more than
 * SPEC allows (as physicsContrastive's and hnmContrastive's logits).
 */
const PRECISE_ABOVE = 64;

/** The product block of `contrastive_grad`. */
const GRAD = 128;

/** The `metric` family on the WebAssembly backend. */
export function metric(p: MetricProblem): Raw {
  const { b, d, c, loss } = p;
  const proxy = loss === "proxyAnchor", cols = proxy ? c : b;
  const sharp = loss === "ntXent"
    ? 1 / p.temperature
    : loss === "multiSimilarity"
    ? Math.max(p.alpha, p.beta)
    : p.alpha;
  const precise = loss !== "tripletMargin" && sharp > PRECISE_ABOVE;
  const f = new Frame();
  const F = f.input(p.f), P = f.input(p.proxies), labels = f.input(p.labels);
  const G = p.grad ? f.output(p.outF?.data ?? null, b * d) : NONE;
  const GP = p.grad && proxy ? f.output(p.outProxies?.data ?? null, c * d) : NONE;
  const ld = proxy ? c : rowStride(b);
  const H = f.scratch(b * d * 4), inv64 = f.scratch(b * 8);
  const HP = proxy ? f.scratch(c * d * 4) : NONE, pinv64 = proxy ? f.scratch(c * 8) : NONE;
  const S = f.scratch(b * ld * 4), T = f.scratch(proxy ? c * d * 4 : Math.max(b * d, p.grad ? GRAD * GRAD : 0) * 4);
  const row = f.scratch((cols + 1) * 8), coef = f.scratch((cols + 1) * 8);
  const triplet = loss === "tripletMargin";
  const n = triplet ? b + 1 : 0;
  const keys = f.scratch(n * 8), pre = f.scratch(n * 8), shares = f.scratch(n * 8), idx = f.scratch(n * 4);
  const norms = f.scratch(n * 8), diag = f.scratch(n * 8);
  const G2 = (triplet || proxy) && p.grad ? f.scratch(b * d * 8) : NONE;
  const G2P = proxy && p.grad ? f.scratch(c * d * 8) : NONE;
  const GH = p.grad ? f.scratch(b * d * 4) : NONE, GHP = p.grad && proxy ? f.scratch(c * d * 4) : NONE;
  const sums = proxy ? f.scratch(4 * c * 8) : NONE;
  f.place();
  const k = f.rt.k, at = (h: number) => f.ptr(h);
  k.normalize_rows(at(F), b, d, at(H), 0, at(inv64));
  if (proxy) k.normalize_rows(at(P), c, d, at(HP), 0, at(pinv64));
  if (!precise) {
    if (proxy) {
      k.transpose(at(HP), c, d, at(T));
      k.gemm(at(S), ld, b, c, d, at(H), d, 1, at(T), c, 0);
    } else k.contrastive_dots(at(S), ld, at(H), b, d, at(T));
  }
  const exact = precise ? at(F) : 0, u = p.upstream, grad = p.grad ? 1 : 0;
  let value: number;
  if (loss === "ntXent") {
    const sum = k.ntxent_rows(
      at(S),
      ld,
      b,
      exact,
      d,
      at(inv64),
      at(labels),
      1 / p.temperature,
      grad,
      u / (p.pairs || 1),
      at(row),
      at(coef),
    );
    value = p.pairs ? sum / p.pairs : 0;
  } else if (loss === "multiSimilarity") {
    value = k.ms_rows(
      at(S),
      ld,
      b,
      exact,
      d,
      at(inv64),
      at(labels),
      p.alpha,
      p.beta,
      p.base,
      grad,
      u / b,
      at(row),
      at(coef),
    ) / b;
  } else if (proxy) {
    const s = at(sums);
    value = k.proxy_rows(
      at(S),
      ld,
      b,
      c,
      exact,
      precise ? at(P) : 0,
      d,
      at(inv64),
      at(pinv64),
      at(labels),
      p.alpha,
      p.margin,
      p.present,
      grad,
      u,
      at(row),
      s,
      s + c * 8,
      s + 2 * c * 8,
      s + 3 * c * 8,
    );
  } else {
    value = k.triplet_rows(
      at(S),
      ld,
      b,
      at(H),
      at(F),
      at(inv64),
      d,
      at(labels),
      p.margin,
      MINING_CODES[p.mining],
      p.soft ? 1 : 0,
      p.grad ? 1 : 0,
      p.upstream,
      at(G2),
      at(row),
      at(coef),
      at(keys),
      at(pre),
      at(shares),
      at(idx),
      at(norms),
      at(diag),
    );
  }
  const rows = [Float64Array.of(value)];
  if (!p.grad) return { rows, grads: {} };
  if (!proxy) k.contrastive_grad(at(S), ld, b, at(H), d, at(GH), at(T));
  if (proxy) {
    // dL/dh = A hp, dL/dhp = A^T h, summed in float64 over blocks of the depth (into G2, G2P;
    // GH, GHP hold one block), then through the normalisation.
    k.gemm_acc64(at(G2), b, d, c, at(S), ld, 1, at(HP), d, at(GH));
    k.gemm_acc64(at(G2P), c, d, b, at(S), 1, ld, at(H), d, at(GHP));
    k.metric_backward(0, at(G2P), at(P), at(pinv64), c, d, at(GP));
    k.metric_backward(0, at(G2), at(F), at(inv64), b, d, at(G));
  } else k.metric_backward(at(GH), at(G2), at(F), at(inv64), b, d, at(G));
  const grads: Record<string, Float32Array> = { f: f.take(G) };
  if (proxy) grads.proxies = f.take(GP);
  return { rows, grads };
}
