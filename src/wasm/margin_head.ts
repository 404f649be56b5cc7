/**
 * WebAssembly driver of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`):
 * streams W through memory in chunks of classes, twice (the forward pass keeps an
 * online log-sum-exp per row; the backward pass recomputes each chunk's logits and
 * forms its gradient blocks), so the [N, C] logits never exist. WebAssembly memory
 * holds x, one chunk of W and [N, chunk] blocks; W and its gradient stay outside.
 * Heads whose logits can be large (x not normalised, SphereFace and L-Softmax with long
 * embeddings) run "precise": float64 dot products held relative to each row's maximum.
 *
 * @module
 */
import type { Raw } from "../loss.ts";
import { type HeadProblem, maxNorm, norm, PRECISE_ABOVE } from "../losses/margin_head.ts";
import { Layout, runtime } from "./runtime.ts";

/** Classes per chunk: [N, 128] blocks and [128, D] slices of W stay in L2 for typical N and D. */
const CHUNK = 128;
const EPS = 1e-12;

/** Row losses and gradients of an embedding head on the WebAssembly backend. */
export function head(p: HeadProblem): Raw {
  const rt = runtime();
  const { n, c, d } = p;
  const B = Math.min(CHUNK, c);
  const lay = new Layout();
  const at = {
    X: lay.add(n * d * 4),
    labels: lay.add(n * 4),
    a: lay.add(n * 4),
    b: lay.add(B * 4),
    b64: lay.add(B * 8),
    WJ: lay.add(B * d * 4),
    WT: lay.add(d * B * 4),
    S: lay.add(n * B * 4),
    G: lay.add(n * B * 4),
    H: lay.add(n * B * 4),
    m: lay.add(n * 8),
    sum: lay.add(n * 8),
    off: lay.add(n * 8),
    cmax: lay.add(n * 8),
    t64: lay.add(d * 8 + 16),
    om: lay.add(n * 8),
    lse: lay.add(n * 8),
    scales: lay.add(n * 8),
    target: lay.add(n * 32),
    dX: lay.add(n * d * 4),
    dWJ: lay.add(B * d * 4),
    ca: lay.add(Math.max(n, B) * 4),
    cb: lay.add(Math.max(n, B) * 4),
  };
  // x, W and the out buffers may live in WebAssembly memory (see `alloc`): placing the arena
  // may grow it, which detaches their views, so they are pinned first and taken again after.
  const pinX = rt.pin(p.x), pinW = rt.pin(p.W);
  const pinOutX = p.outX && rt.pin(p.outX.data), pinOutW = p.outW && rt.pin(p.outW.data);
  const base = rt.arena(lay.size);
  const x = pinX(), W = pinW(), outX = pinOutX?.(), outW = pinOutW?.();
  const ptr = (k: keyof typeof at) => base + at[k];
  const f32 = (k: keyof typeof at, len: number) => rt.f32.subarray(ptr(k) >>> 2, (ptr(k) >>> 2) + len);
  const f64 = (k: keyof typeof at, len: number) => new Float64Array(rt.buffer, ptr(k), len);
  rt.put(ptr("X"), x);
  rt.put(ptr("labels"), p.labels);
  rt.put(ptr("target"), p.target);
  f32("a", n).set(Float32Array.from(p.nx, (nx) => (p.normX ? 1 / Math.max(nx, EPS) : 1)));
  const k = rt.k;
  // Where x is not normalised the logits can be large, and a float32 logit of 1e4 is only
  // good to 6e-4. Then ("precise") the dot products are summed in float64 and every logit is
  // held relative to its row's running maximum M (z - M: small and exact wherever a
  // probability matters); the kernels see z - M and the label's logit T - M.
  const precise = !p.normX && maxNorm(x, n, d) * (p.normW ? 1 : maxNorm(W, c, d)) > PRECISE_ABOVE;
  const T = Float64Array.from({ length: n }, (_, i) => p.target[4 * i]);
  const M = precise ? T.slice() : new Float64Array(n);
  // Each row's running max starts at its label's logit T; the sum over the other
  // classes starts at 0 (the label's e^(T - m) is added at the end, in float64).
  f64("m", n).set(Float64Array.from(T, (t, i) => t - M[i]));
  f64("sum", n).fill(0);
  // One chunk's W slice in, its norms and transpose, and its dot products S = X W_J^T (or
  // x . w - M / b, so that the kernels' u = S b is z - M).
  const chunk = (j0: number, cols: number) => {
    f32("WJ", cols * d).set(W.subarray(j0 * d, (j0 + cols) * d));
    k.head_prep(ptr("WJ"), cols, d, p.normW ? 1 : 0, ptr("b"), ptr("WT"));
    // The precise logits take the column scale in float64 (dots64).
    if (precise) {
      f64("b64", cols).set(
        Float64Array.from({ length: cols }, (_, j) => p.normW ? 1 / Math.max(norm(W, (j0 + j) * d, d), EPS) : 1),
      );
    }
    dots(cols);
  };
  const dots = (cols: number) => {
    if (!precise) return k.gemm(ptr("S"), cols, n, cols, d, ptr("X"), d, 1, ptr("WT"), cols, 0);
    f64("off", n).set(M);
    k.dots64(ptr("S"), ptr("X"), n, ptr("WJ"), cols, d, ptr("off"), ptr("b"), ptr("b64"));
  };
  for (let j0 = 0; j0 < c; j0 += B) {
    const cols = Math.min(B, c - j0);
    chunk(j0, cols);
    if (precise) {
      // A chunk that raises a row's maximum by more than 1 is taken again against the new
      // one (its values relative to the old maximum were rounded at their own magnitude).
      k.head_chunk_max(ptr("S"), n, cols, j0, ptr("labels"), ptr("b"), ptr("cmax"));
      const cm = f64("cmax", n), sum = f64("sum", n);
      let again = false;
      for (let i = 0; i < n; i++) {
        if (cm[i] > 1) {
          M[i] += cm[i];
          sum[i] *= Math.exp(-cm[i]);
          again = true;
        }
      }
      if (again) dots(cols);
      f64("m", n).fill(0);
    }
    k.head_forward(
      ptr("S"),
      n,
      cols,
      j0,
      ptr("labels"),
      ptr("a"),
      ptr("b"),
      p.scale,
      p.clamp ? 1 : 0,
      ptr("m"),
      ptr("sum"),
    );
    // The kernel's maximum moved by m; it is relative to M.
    if (precise) f64("m", n).forEach((mi, i) => (M[i] += mi));
  }
  const m = f64("m", n), others = f64("sum", n);
  if (precise) m.fill(0);
  const lse = new Float64Array(n), om = new Float64Array(n), rows = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (p.labels[i] < 0) continue;
    // nll = log(1 + S / e^(T - m)), 1 - p_y = S / (S + e^(T - m)); all relative to M
    const t = T[i] - M[i], ey = Math.exp(t - m[i]);
    rows[i] = t - m[i] < -700 ? m[i] - t + Math.log(others[i]) : Math.log1p(others[i] / ey);
    lse[i] = t + rows[i];
    om[i] = others[i] / (others[i] + ey);
  }
  if (!p.grad) return { rows: [rows], grads: {} };

  if (precise) {
    const relative = p.target.slice();
    for (let i = 0; i < n; i++) relative[4 * i] = T[i] - M[i];
    rt.put(ptr("target"), relative);
  }
  f64("lse", n).set(lse);
  f64("om", n).set(om);
  f64("scales", n).set(p.scales);
  f32("dX", n * d).fill(0);
  const gW = outW ?? new Float32Array(c * d);
  for (let j0 = 0; j0 < c; j0 += B) {
    const cols = Math.min(B, c - j0);
    chunk(j0, cols);
    k.head_backward(
      ptr("S"),
      n,
      cols,
      j0,
      ptr("labels"),
      ptr("a"),
      ptr("b"),
      p.scale,
      p.clamp ? 1 : 0,
      ptr("m"),
      ptr("lse"),
      ptr("scales"),
      ptr("target"),
      ptr("om"),
      ptr("G"),
      ptr("H"),
      p.normX ? 1 : 0,
      p.normW ? 1 : 0,
    );
    // v += G W_J; t = H^T X, then dW_j = b_j (t_j - [W normalised] (W^_j . t_j) W^_j)
    k.gemm(ptr("dX"), d, n, d, cols, ptr("G"), cols, 1, ptr("WJ"), d, 1);
    if (precise) {
      k.gemm_tn64(ptr("dWJ"), ptr("H"), n, cols, ptr("X"), d, ptr("WJ"), ptr("b"), p.normW ? 1 : 0, ptr("t64"));
    } else {
      k.gemm(ptr("dWJ"), d, cols, d, n, ptr("H"), 1, cols, ptr("X"), d, 0);
      f32("ca", cols).set(f32("b", cols));
      f32("cb", cols).fill(0);
      k.row_finish(ptr("dWJ"), ptr("WJ"), cols, d, ptr("ca"), ptr("cb"), p.normW ? 1 : 0);
    }
    gW.set(f32("dWJ", cols * d), j0 * d);
  }
  // dx_i = a_i (v_i - [x normalised] (x^_i . v_i) x^_i), v = G W
  const a = f32("a", n);
  const dzy = (i: number) => -p.scales[i] * om[i];
  f32("ca", n).set(a);
  f32("cb", n).fill(0);
  k.row_finish(ptr("dX"), ptr("X"), n, d, ptr("ca"), ptr("cb"), p.normX ? 1 : 0);
  const gx = outX ?? new Float32Array(n * d);
  gx.set(f32("dX", n * d));
  // Where x is not normalised the label's part of dx, dL/dT (dT/du b_y W_y + dT/d||x|| x / ||x||),
  // is added here in float64: its two terms can nearly cancel (SphereFace at cos = +-1).
  if (!p.normX) {
    for (let i = 0; i < n; i++) {
      const y = p.labels[i];
      if (y < 0) continue;
      const by = p.normW ? 1 / Math.max(p.nw[i], EPS) : 1, nx = p.nx[i];
      const fw = dzy(i) * p.target[4 * i + 1] * by, fx = nx > 0 ? (dzy(i) * p.target[4 * i + 2]) / nx : 0;
      for (let j = 0; j < d; j++) gx[i * d + j] += fw * W[y * d + j] + fx * x[i * d + j];
    }
  }
  // Where W is not normalised the label's part of dW_y, dL/dT (dT/du a x + dT/d||W_y|| W_y / ||W_y||),
  // is added here in float64 too (L-Softmax's two terms can nearly cancel).
  if (!p.normW) {
    for (let i = 0; i < n; i++) {
      const y = p.labels[i];
      if (y < 0) continue;
      const nw = p.nw[i], fx = dzy(i) * p.target[4 * i + 1] * a[i];
      const fw = nw > 0 ? (dzy(i) * p.target[4 * i + 3]) / nw : 0;
      for (let j = 0; j < d; j++) gW[y * d + j] += fx * x[i * d + j] + fw * W[y * d + j];
    }
  }
  return { rows: [rows], grads: { x: gx, W: gW } };
}
