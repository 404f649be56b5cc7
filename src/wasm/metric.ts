/**
 * WebAssembly glue of the `metric` family (`assembly/metric.ts`): the rows normalised,
 * the cosines by the heads' GEMM (`contrastive_dots` of physicsContrastive for h h^T, upper
 * blocks only; `gemm` for h p^T, a chunk of proxies at a time), the loss's walk over them,
 * then the gradient by the same GEMM ((A + A^T) h by `contrastive_grad`; A p and A^T h)
 * and through the normalisation.
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

/**
 * Proxies per chunk of proxyAnchor: a proxy's terms involve its own column of cosines
 * only, so at most a [B, CHUNK] block of them exists at once (C runs to 1e5).
 */
const CHUNK = 2048;

/** Whether a loss's cosines are float64 dot products (see `PRECISE_ABOVE`). */
function isPrecise(p: MetricProblem): boolean {
  if (p.loss === "tripletMargin") return false;
  const sharp = p.loss === "ntXent"
    ? 1 / p.temperature
    : p.loss === "multiSimilarity"
    ? Math.max(p.alpha, p.beta)
    : p.alpha;
  return sharp > PRECISE_ABOVE;
}

/** The `metric` family on the WebAssembly backend. */
export function metric(p: MetricProblem): Raw {
  if (p.loss === "proxyAnchor") return proxyAnchor(p);
  const { b, d, loss } = p;
  const precise = isPrecise(p), triplet = loss === "tripletMargin";
  const f = new Frame();
  const F = f.input(p.f), labels = f.input(p.labels);
  const G = p.grad ? f.output(p.outF?.data ?? null, b * d) : NONE;
  const ld = rowStride(b);
  const H = f.scratch(b * d * 4), inv64 = f.scratch(b * 8);
  const S = f.scratch(b * ld * 4), T = f.scratch(Math.max(b * d, p.grad ? GRAD * GRAD : 0) * 4);
  const row = f.scratch((b + 1) * 8), coef = f.scratch((b + 1) * 8);
  const n = triplet ? b + 1 : 0;
  const keys = f.scratch(n * 8), pre = f.scratch(n * 8), shares = f.scratch(n * 8), idx = f.scratch(n * 4);
  const norms = f.scratch(n * 8), diag = f.scratch(n * 8);
  const G2 = p.grad ? f.scratch(b * d * 8) : NONE, GH = p.grad ? f.scratch(b * d * 4) : NONE;
  const near = p.grad && !triplet ? f.scratch(b * 4) : NONE, w = p.grad && !triplet ? f.scratch(b * 8) : NONE;
  // Each row's near columns, [count, up to 15] int32, and their coefficients (assembly/metric.ts's LIST).
  const list = p.grad && !triplet ? f.scratch(b * 16 * 4) : NONE,
    cv = p.grad && !triplet ? f.scratch(b * 15 * 8) : NONE;
  f.place();
  const k = f.rt.k, at = (h: number) => f.ptr(h);
  k.normalize_rows(at(F), b, d, at(H), 0, at(inv64));
  if (!precise) k.contrastive_dots(at(S), ld, at(H), b, d, at(T));
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
      at(near),
      at(list),
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
      at(near),
      at(list),
    ) / b;
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
      grad,
      u,
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
  // Rows with a near pair: their products relative to their own direction, in float64 (G2,
  // where tripletMargin has its near pairs' terms): the near pairs alone where each row has few
  // (taken out of A before the GEMM), else the flagged rows whole.
  const fi = at(F), iv = at(inv64);
  const split = !triplet && k.metric_near_split(at(S), ld, b, at(list), at(cv));
  k.contrastive_grad(at(S), ld, b, at(H), d, at(GH), at(T));
  const g2 = triplet ||
    (split
      ? k.metric_near(b, d, fi, iv, at(list), at(cv), at(G2))
      : k.metric_relative(at(S), ld, 1, 1, b, b, fi, iv, fi, iv, d, at(near), at(GH), at(G2), 0, at(w), 1));
  k.metric_backward(at(GH), g2 ? at(G2) : 0, fi, iv, b, d, at(G));
  return { rows, grads: { f: f.take(G) } };
}

/**
 * proxyAnchor, a chunk of CHUNK proxies at a time: their cosines S = h p^T, the chunk's
 * terms and A, then dL/dh += A p (summed in float64 over the chunks and over blocks of the
 * depth) and the chunk's dL/dp = A^T h, through the normalisations.
 */
function proxyAnchor(p: MetricProblem): Raw {
  const { b, c, d } = p, cb = Math.min(c, CHUNK), precise = isPrecise(p);
  const f = new Frame();
  const F = f.input(p.f), P = f.input(p.proxies), labels = f.input(p.labels);
  const G = p.grad ? f.output(p.outF?.data ?? null, b * d) : NONE;
  const GP = p.grad ? f.output(p.outProxies?.data ?? null, c * d) : NONE;
  const H = f.scratch(b * d * 4), inv64 = f.scratch(b * 8), HP = f.scratch(c * d * 4), pinv64 = f.scratch(c * 8);
  const S = f.scratch(b * cb * 4), T = f.scratch(cb * d * 4), row = f.scratch(cb * 8), sums = f.scratch(4 * cb * 8);
  const own = f.scratch(cb * 4), near = f.scratch(b * 4), nearP = f.scratch(cb * 4);
  const w = p.grad ? f.scratch(Math.max(b, cb) * 8) : NONE;
  const G2 = p.grad ? f.scratch(b * d * 8) : NONE, GH = p.grad ? f.scratch(b * d * 4) : NONE;
  const G2P = p.grad ? f.scratch(cb * d * 8) : NONE, GHP = p.grad ? f.scratch(cb * d * 4) : NONE;
  f.place();
  const k = f.rt.k, at = (h: number) => f.ptr(h), s = at(sums), grad = p.grad ? 1 : 0;
  k.normalize_rows(at(F), b, d, at(H), 0, at(inv64));
  k.normalize_rows(at(P), c, d, at(HP), 0, at(pinv64));
  let value = 0;
  for (let k0 = 0; k0 < c; k0 += cb) {
    const n = Math.min(cb, c - k0), hp = at(HP) + k0 * d * 4;
    if (!precise) {
      k.transpose(hp, n, d, at(T));
      k.gemm(at(S), n, b, n, d, at(H), d, 1, at(T), n, 0);
    }
    value += k.proxy_rows(
      at(S),
      n,
      b,
      k0,
      n,
      c,
      precise ? at(F) : 0,
      at(P) + k0 * d * 4,
      d,
      at(inv64),
      at(pinv64) + k0 * 8,
      at(labels),
      p.alpha,
      p.margin,
      p.present,
      grad,
      p.upstream,
      at(row),
      s,
      s + cb * 8,
      s + 2 * cb * 8,
      s + 3 * cb * 8,
      at(own),
      at(near),
      at(nearP),
    );
    if (!grad) continue;
    // The rows and proxies with a near pair in the chunk: their products relative to their own
    // direction, in float64; the GEMM's skip them.
    const P0 = at(P) + k0 * d * 4, pinv = at(pinv64) + k0 * 8;
    k.gemm_acc64(at(G2), b, d, n, at(S), n, 1, hp, d, at(GH), k0 > 0 ? 1 : 0, at(near));
    k.metric_relative(at(S), n, 1, 0, b, n, at(F), at(inv64), P0, pinv, d, at(near), 0, at(G2), 1, at(w), 1);
    k.gemm_acc64(at(G2P), n, d, b, at(S), 1, n, at(H), d, at(GHP), 0, at(nearP));
    k.metric_relative(at(S), 1, n, 0, n, b, P0, pinv, at(F), at(inv64), d, at(nearP), 0, at(G2P), 1, at(w), 1);
    k.metric_backward(0, at(G2P), P0, pinv, n, d, at(GP) + k0 * d * 4);
  }
  const rows = [Float64Array.of(value)];
  if (!grad) return { rows, grads: {} };
  k.metric_backward(0, at(G2), at(F), at(inv64), b, d, at(G));
  return { rows, grads: { f: f.take(G), proxies: f.take(GP) } };
}
