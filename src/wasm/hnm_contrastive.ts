/**
 * WebAssembly glue of `hnmContrastive`: the cosines of each embedding to the prototypes
 * of the classes the batch uses by the heads' GEMM, then the rows, their coefficients and
 * the gradient (`assembly/hnm_contrastive.ts`).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { HnmProblem } from "../kernels/hnm.ts";
import { Frame, NONE } from "./frame.ts";

/**
 * Above this 1/t the logits (cosines / t) are float64 dot products ("precise"): a float32
 * cosine's rounding, times 1/t, would move them by more than SPEC allows near ties.
 */
const PRECISE_ABOVE = 64;

/** `hnmContrastive` on the WebAssembly backend. */
export function hnm(p: HnmProblem): Raw {
  const { b, c, d, k } = p;
  const invT = 1 / p.temperature, precise = invT > PRECISE_ABOVE;
  // At most one class per (row, slot), and never more than C.
  const most = Math.min(c, b * (k + 1));
  const f = new Frame();
  const F = f.input(p.f), P = f.input(p.prototypes), labels = f.input(p.labels), hard = f.input(p.hard);
  const scales = f.input(p.grad ? p.scales : null);
  const G = p.grad ? f.output(p.out?.data ?? null, b * d) : NONE;
  const map = f.scratch(c * 4), list = f.scratch(most * 4), idx = f.scratch(b * (k + 1) * 4);
  const finv64 = f.scratch(b * 8), pinv64 = f.scratch(most * 8);
  const fh = precise ? NONE : f.scratch(b * d * 4), pt = precise ? NONE : f.scratch(d * most * 4);
  const cos = precise ? NONE : f.scratch(b * most * 4), coef = f.scratch(b * (k + 1) * 8);
  const rows = f.scratch(b * 8), l = f.scratch((k + 1) * 8), v = f.scratch(d * 8);
  f.place();
  const kk = f.rt.k;
  const at = (h: number) => f.ptr(h);
  const u = kk.hnm_prep(
    at(F),
    b,
    d,
    at(P),
    c,
    at(labels),
    at(hard),
    k,
    at(map),
    at(list),
    at(idx),
    at(finv64),
    at(pinv64),
    at(fh),
    at(pt),
  );
  // cos = f^ p^T over the listed classes
  if (!precise) kk.gemm(at(cos), u, b, u, d, at(fh), d, 1, at(pt), u, 0);
  kk.hnm_rows(
    at(cos),
    u,
    b,
    k,
    at(idx),
    invT,
    at(F),
    d,
    at(P),
    at(list),
    at(finv64),
    at(pinv64),
    at(scales),
    at(rows),
    at(coef),
    at(l),
  );
  if (!p.grad) return { rows: [f.f64(rows, b)], grads: {} };
  kk.hnm_grad(at(F), b, d, at(P), at(list), at(idx), k, at(finv64), at(pinv64), at(coef), at(G), at(v));
  return { rows: [f.f64(rows, b)], grads: { f: f.take(G) } };
}
