/**
 * WebAssembly driver of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`):
 * streams W through memory in chunks of classes, twice, so the [N, C] logits never exist.
 * WebAssembly memory holds x, one chunk of W and [N, chunk] blocks; W and its gradient
 * stay outside. Heads whose logits can be large (x not normalised, SphereFace and
 * L-Softmax with long embeddings) run "precise": float64 dot products held relative to
 * each row's maximum.
 *
 * The two passes are two phases over a range of classes (rows `W` of a slice whose first
 * class is `first`), so that one piece of code serves the whole head and a head sharded
 * by class (`src/losses/sharded.ts`; a worker per range of classes):
 *  1. {@linkcode headStats}: per row an online (max, sum of e^(z - max) over the
 *     non-label classes) over the range; ranges merge exactly (`mergeShardStats`).
 *  2. {@linkcode headGrads}: given the merged statistics and the row terms they give
 *     (`headRowTerms`: lse, 1 - p_y), recomputes each chunk's logits and forms the
 *     gradient of the range's rows of W and the range's share of x's gradient (the
 *     shares of all ranges sum to x's gradient).
 * {@linkcode head} is phase 1 over [0, C), the row terms, then phase 2 over [0, C).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import {
  headClasses,
  headOf,
  type HeadProblem,
  type HeadRowTerms,
  type HeadStats,
  maxNorm,
  norm,
  PRECISE_ABOVE,
  type RowTopK,
  withInterTopK,
} from "../kernels/head.ts";
import { Layout, runtime } from "./runtime.ts";

/** Classes per chunk: [N, 128] blocks and [128, D] slices of W stay in L2 for typical N and D. */
const CHUNK = 128;
const EPS = 1e-12;

/**
 * Classes per chunk with K sub-centres: at most `CHUNK` rows of W, a multiple of 8 where that
 * allows (the GEMM's tiles are 8 columns wide: K = 3 takes 40 classes, 120 rows).
 */
export function chunkClasses(K: number): number {
  const m = 8 / gcd(K, 8), tiled = Math.floor(CHUNK / (K * m)) * m;
  return tiled > 0 ? tiled : Math.max(1, Math.floor(CHUNK / K));
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Where x is not normalised the logits can be large, and a float32 logit of 1e4 is only
 * good to 6e-4. Then ("precise") the dot products are summed in float64 and every logit is
 * held relative to its row's running maximum M (z - M: small and exact wherever a
 * probability matters); the kernels see z - M and the label's logit T - M. Decided once
 * per problem from the whole of W (`p.W`), so every range of a problem agrees.
 */
export function isPrecise(p: HeadProblem): boolean {
  if (p.normX) return false;
  // (Views of WebAssembly memory that an earlier phase's growth detached are taken again.)
  const rt = runtime(), x = rt.pin(p.x)(), W = rt.pin(p.W)();
  return maxNorm(x, p.n, p.d) * (p.normW ? 1 : maxNorm(W, W.length / p.d, p.d)) > PRECISE_ABOVE;
}

/**
 * The arena of one phase over `cols` classes: x, the labels, the targets and a_i in
 * WebAssembly memory, the chunk buffers, and `chunk` (one chunk's W slice in, its norms
 * and transpose, and its dot products S = X W_J^T, or x . w - M / b in precise mode, so
 * that the kernels' u = S b is z - M).
 */
function open(p: HeadProblem, W: Float32Array, first: number, precise: boolean) {
  const rt = runtime();
  const { n, d } = p;
  // x, W and the out buffers may live in WebAssembly memory (see `alloc`): placing the arena
  // may grow it, which detaches their views, so they are pinned first and taken again after.
  const pinX = rt.pin(p.x), pinW = rt.pin(W);
  // Sub-centres: a chunk of B classes is R = B K rows of W (gathered per chunk with `rows`).
  const K = p.subcenters ?? 1, cols = headClasses(p, pinW());
  const B = Math.max(1, Math.min(chunkClasses(K), cols)), R = B * K, top = p.interTopK ?? 0;
  const lay = new Layout();
  const at = {
    X: lay.add(n * d * 4),
    labels: lay.add(n * 4),
    a: lay.add(n * 4),
    b: lay.add(R * 4),
    b64: lay.add(B * 8),
    WJ: lay.add(R * d * 4),
    WT: lay.add(d * R * 4),
    S: lay.add(n * R * 4),
    G: lay.add(n * R * 4),
    H: lay.add(n * R * 4),
    idx: lay.add(K > 1 ? n * B * 4 : 0),
    ones: lay.add(K > 1 ? Math.max(n, B) * 4 : 0),
    m: lay.add(n * 8),
    sum: lay.add(n * 8),
    off: lay.add(n * 8),
    cmax: lay.add(n * 8),
    t64: lay.add(d * 8 + 16),
    om: lay.add(n * 8),
    lse: lay.add(n * 8),
    scales: lay.add(n * 8),
    target: lay.add(n * 32),
    ntc: lay.add(48),
    nt: lay.add(n * 16),
    dX: lay.add(n * d * 4),
    dWJ: lay.add(R * d * 4),
    ca: lay.add(Math.max(n, R) * 4),
    cb: lay.add(Math.max(n, R) * 4),
    // interTopK's first pass: per row the k largest values, their classes, how many
    topv: lay.add(n * top * 8),
    topc: lay.add(n * top * 4),
    tops: lay.add(top > 0 ? n * 4 : 0),
  };
  const base = rt.arena(lay.size);
  const x = pinX(), w = pinW();
  const ptr = (k: keyof typeof at) => base + at[k];
  const f32 = (k: keyof typeof at, len: number) => rt.f32.subarray(ptr(k) >>> 2, (ptr(k) >>> 2) + len);
  const f64 = (k: keyof typeof at, len: number) => new Float64Array(rt.buffer, ptr(k), len);
  rt.put(ptr("X"), x);
  rt.put(ptr("labels"), p.labels);
  rt.put(ptr("target"), p.target);
  // The non-target transform's constants and rows (0 pointers without it).
  const nt = p.nonTarget;
  if (nt) rt.put(ptr("ntc"), Float64Array.of(nt.lo, nt.hi, nt.a, nt.b, nt.g, nt.cut));
  if (nt?.rows) rt.put(ptr("nt"), nt.rows);
  const ntPtrs = [nt ? ptr("ntc") : 0, nt?.rows ? ptr("nt") : 0] as const;
  f32("a", n).set(Float32Array.from(p.nx, (nx) => (p.normX ? 1 / Math.max(nx, EPS) : 1)));
  if (K > 1) f32("ones", Math.max(n, B)).fill(1);
  const k = rt.k;
  const dots = (count: number) => {
    if (!precise) {
      k.gemm(ptr("S"), count * K, n, count * K, d, ptr("X"), d, 1, ptr("WT"), count * K, 0);
      // Each class's largest sub-centre, in place: S [n, count] of class cosines, idx their rows.
      if (K > 1) k.head_submax(ptr("S"), n, count, K, ptr("a"), ptr("b"), ptr("idx"));
      return;
    }
    k.dots64(ptr("S"), ptr("X"), n, ptr("WJ"), count, d, ptr("off"), ptr("b"), ptr("b64"));
  };
  const chunk = (j0: number, count: number) => {
    const span = K * d, into = f32("WJ", count * span);
    if (p.rows) {
      for (let j = 0; j < count; j++) {
        into.set(w.subarray(p.rows[j0 + j] * span, (p.rows[j0 + j] + 1) * span), j * span);
      }
    } else into.set(w.subarray(j0 * span, (j0 + count) * span));
    k.head_prep(ptr("WJ"), count * K, d, p.normW ? 1 : 0, ptr("b"), ptr("WT"));
    // The precise logits take the column scale in float64 (dots64).
    if (precise) {
      f64("b64", count).set(
        Float64Array.from({ length: count }, (_, j) => p.normW ? 1 / Math.max(norm(w, (j0 + j) * d, d), EPS) : 1),
      );
    }
    dots(count);
  };
  /** The chunks [j0, j0 + count) of the range, local class indices. */
  const chunks = Array.from(
    { length: Math.ceil(cols / B) },
    (_, q) => ({ j0: q * B, count: Math.min(B, cols - q * B) }),
  );
  // With sub-centres the kernels take the class cosines as they are (a = b = 1).
  const ab = K > 1 ? [ptr("ones"), ptr("ones")] as const : [ptr("a"), ptr("b")] as const;
  return { rt, k, x, w, cols, K, ptr, f32, f64, dots, chunk, chunks, first, ntPtrs, ab };
}

/**
 * Phase 1 over the classes of `W` (rows of class `first` on, `[cols, D]`, a slice of the
 * head's W): per row the largest logit of the range (the label's `T_i` included where the
 * range holds the label; at least `T_i` in precise mode) and the sum of `e^(z - max)` over
 * the range's non-label classes. Ignored rows give (0, 0).
 */
export function headStats(p: HeadProblem, W: Float32Array, first: number): HeadStats {
  const { n } = p;
  const precise = isPrecise(p);
  const s = open(p, W, first, precise);
  const { k, ptr, f64 } = s;
  const T = Float64Array.from({ length: n }, (_, i) => p.target[4 * i]);
  const owns = (i: number) => p.labels[i] >= first && p.labels[i] < first + s.cols;
  // Each row's running max starts at its label's logit T where the range holds the label
  // (-inf elsewhere; precise: the reference M starts at T, the kernel's max at 0 relative
  // to it); the sum over the other classes starts at 0 (the label's e^(T - m) is added by
  // the row terms, in float64).
  const M = precise ? T.slice() : new Float64Array(n);
  f64("m", n).set(
    Float64Array.from(T, (t, i) => p.labels[i] < 0 ? 0 : precise ? 0 : owns(i) ? t : -Infinity),
  );
  f64("sum", n).fill(0);
  for (const { j0, count } of s.chunks) {
    if (precise) f64("off", n).set(M);
    s.chunk(j0, count);
    if (precise) {
      // A chunk that raises a row's maximum by more than 1 is taken again against the new
      // one (its values relative to the old maximum were rounded at their own magnitude).
      k.head_chunk_max(ptr("S"), n, count, first + j0, ptr("labels"), ptr("b"), ptr("cmax"));
      const cm = f64("cmax", n), sum = f64("sum", n);
      let again = false;
      for (let i = 0; i < n; i++) {
        if (cm[i] > 1) {
          M[i] += cm[i];
          sum[i] *= Math.exp(-cm[i]);
          again = true;
        }
      }
      if (again) {
        f64("off", n).set(M);
        s.dots(count);
      }
      f64("m", n).fill(0);
    }
    k.head_forward(
      ptr("S"),
      n,
      count,
      first + j0,
      ptr("labels"),
      ...s.ab,
      p.scale,
      p.clamp ? 1 : 0,
      ptr("m"),
      ptr("sum"),
      ...s.ntPtrs,
    );
    // The kernel's maximum moved by m; it is relative to M.
    if (precise) f64("m", n).forEach((mi, i) => (M[i] += mi));
  }
  const m = f64("m", n).slice(), sum = f64("sum", n).slice();
  if (precise) m.set(M);
  for (let i = 0; i < n; i++) if (p.labels[i] < 0) m[i] = sum[i] = 0;
  return { max: m, sum };
}

/**
 * Phase 2 over the classes of `W` (as {@linkcode headStats}), given the merged statistics
 * of every class and their row terms: the gradient w.r.t. the range's rows of W
 * (`[cols, D]`, into `outW` when given) and the range's share of the gradient w.r.t. x
 * (`[N, D]`, through x's normalisation; the shares of all ranges sum to it; into `outX`).
 */
export function headGrads(
  p: HeadProblem,
  W: Float32Array,
  first: number,
  stats: HeadStats,
  terms: HeadRowTerms,
  outX: Float32Array | null = null,
  outW: Float32Array | null = null,
): { x: Float32Array; W: Float32Array } {
  const { n, d } = p;
  const precise = isPrecise(p);
  const rt = runtime();
  const pinOutX = outX && rt.pin(outX), pinOutW = outW && rt.pin(outW);
  const s = open(p, W, first, precise);
  const { k, ptr, f32, f64, x, w, cols, K } = s;
  const gW = pinOutW?.() ?? new Float32Array(cols * K * d);
  // The kernels' maximum: the merged one (precise: it is the reference M, the kernels see 0).
  const M = stats.max;
  if (precise) {
    const relative = p.target.slice();
    for (let i = 0; i < n; i++) relative[4 * i] = p.target[4 * i] - M[i];
    rt.put(ptr("target"), relative);
    f64("off", n).set(M);
    f64("m", n).fill(0);
    f64("lse", n).set(Float64Array.from(terms.lse, (l, i) => l - M[i]));
  } else {
    f64("m", n).set(M);
    f64("lse", n).set(terms.lse);
  }
  f64("om", n).set(terms.om);
  f64("scales", n).set(p.scales);
  f32("dX", n * d).fill(0);
  for (const { j0, count } of s.chunks) {
    s.chunk(j0, count);
    k.head_backward(
      ptr("S"),
      n,
      count,
      first + j0,
      ptr("labels"),
      ...s.ab,
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
      ...s.ntPtrs,
    );
    // Sub-centres: each class's entry of G and H to its chosen row (times b_r, a_i).
    if (K > 1) k.head_subexpand(ptr("G"), ptr("H"), n, count, K, ptr("a"), ptr("b"), ptr("idx"));
    // v += G W_J; t = H^T X, then dW_j = b_j (t_j - [W normalised] (W^_j . t_j) W^_j)
    const R = count * K;
    k.gemm(ptr("dX"), d, n, d, R, ptr("G"), R, 1, ptr("WJ"), d, 1);
    if (precise) {
      k.gemm_tn64(ptr("dWJ"), ptr("H"), n, count, ptr("X"), d, ptr("WJ"), ptr("b"), p.normW ? 1 : 0, ptr("t64"));
    } else {
      k.gemm(ptr("dWJ"), d, R, d, n, ptr("H"), 1, R, ptr("X"), d, 0);
      f32("ca", R).set(f32("b", R));
      f32("cb", R).fill(0);
      k.row_finish(ptr("dWJ"), ptr("WJ"), R, d, ptr("ca"), ptr("cb"), p.normW ? 1 : 0);
    }
    gW.set(f32("dWJ", R * d), j0 * K * d);
  }
  // dx_i = a_i (v_i - [x normalised] (x^_i . v_i) x^_i), v = G W (linear in v: the
  // ranges' shares of dx sum to the whole)
  const a = f32("a", n);
  f32("ca", n).set(a);
  f32("cb", n).fill(0);
  k.row_finish(ptr("dX"), ptr("X"), n, d, ptr("ca"), ptr("cb"), p.normX ? 1 : 0);
  const gx = pinOutX?.() ?? new Float32Array(n * d);
  gx.set(f32("dX", n * d));
  labelParts(p, x, w, first, a, terms, gx, gW);
  return { x: gx, W: gW };
}

/**
 * The label's parts of the gradients that the kernels leave to the host (in float64: their
 * two terms can nearly cancel), for the rows whose label is in the range of `w` (classes
 * `first` on): where x is not normalised, dL/dT (dT/du b_y W_y + dT/d||x|| x / ||x||) into
 * `gx`; where W is not normalised, dL/dT (dT/du a x + dT/d||W_y|| W_y / ||W_y||) into `gW`.
 */
export function labelParts(
  p: HeadProblem,
  x: Float32Array,
  w: Float32Array,
  first: number,
  a: Float32Array,
  terms: HeadRowTerms,
  gx: Float32Array,
  gW: Float32Array,
): void {
  const { n, d } = p, cols = w.length / d;
  const dzy = (i: number) => -p.scales[i] * terms.om[i];
  const owned = (i: number) => p.labels[i] >= first && p.labels[i] < first + cols;
  if (!p.normX) {
    for (let i = 0; i < n; i++) {
      if (!owned(i)) continue;
      const y = p.labels[i] - first;
      const by = p.normW ? 1 / Math.max(p.nw[i], EPS) : 1, nx = p.nx[i];
      const fw = dzy(i) * p.target[4 * i + 1] * by, fx = nx > 0 ? (dzy(i) * p.target[4 * i + 2]) / nx : 0;
      for (let j = 0; j < d; j++) gx[i * d + j] += fw * w[y * d + j] + fx * x[i * d + j];
    }
  }
  if (!p.normW) {
    for (let i = 0; i < n; i++) {
      if (!owned(i)) continue;
      const y = p.labels[i] - first;
      const nw = p.nw[i], fx = dzy(i) * p.target[4 * i + 1] * a[i];
      const fw = nw > 0 ? (dzy(i) * p.target[4 * i + 3]) / nw : 0;
      for (let j = 0; j < d; j++) gW[y * d + j] += fx * x[i * d + j] + fw * w[y * d + j];
    }
  }
}

/**
 * `interTopK`'s first pass (marginHead: x normalised, never precise): chunk by chunk, `head_topk`
 * keeps each row's k largest non-target class cosines as the kernels round and transform them
 * (so that the head's comparisons with the threshold are exact), then into `top`.
 */
export function cosines(p: HeadProblem, top: RowTopK): void {
  const { n } = p, k = top.k;
  const s = open(p, p.W, 0, false);
  const { ptr, f64 } = s;
  new Int32Array(s.rt.buffer, ptr("tops"), n).fill(0);
  for (const { j0, count } of s.chunks) {
    s.chunk(j0, count);
    s.k.head_topk(
      ptr("S"),
      n,
      count,
      j0,
      ptr("labels"),
      ...s.ab,
      s.ntPtrs[0],
      k,
      ptr("topv"),
      ptr("topc"),
      ptr("tops"),
    );
  }
  top.vals.set(f64("topv", n * k));
  top.cols.set(new Int32Array(s.rt.buffer, ptr("topc"), n * k));
  top.size.set(new Int32Array(s.rt.buffer, ptr("tops"), n));
}

/**
 * Row losses and gradients of an embedding head on the WebAssembly backend: both phases over
 * every class (with `interTopK`, after {@linkcode cosines}).
 */
export const head: (p: HeadProblem) => Raw = withInterTopK(headOf({ stats: headStats, grads: headGrads }), cosines);
