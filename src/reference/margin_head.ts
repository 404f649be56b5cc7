/**
 * Reference kernel of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`),
 * in float64: every logit of a row, then the chain rule written out. As the other
 * backends, in two phases over a range of classes (rows of a slice of W whose first
 * class is `first`): {@linkcode headStats} (per row the max and the sum of exponentials
 * over the range's non-label classes) and, given the merged statistics of every class,
 * {@linkcode headGrads} (the range's rows of dW and its share of dx). {@linkcode head}
 * runs both over every class; a head sharded by class runs them per shard.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import {
  headClasses,
  headOf,
  type HeadProblem,
  headRows,
  type HeadRowTerms,
  type HeadStats,
  norm,
  type RowTopK,
  withInterTopK,
} from "../kernels/head.ts";
import { hardLogit, isHard, subcenter } from "../kernels/hard_label.ts";

const EPS = 1e-12;

/** a_i per row (1/max(||x_i||, 1e-12) when x is normalised, else 1). */
const rowScale = (p: HeadProblem, i: number) => (p.normX ? 1 / Math.max(p.nx[i], EPS) : 1);

/**
 * Row i's cosines-or-dots u and logits z over the `cols` classes of W (z of the label: T), and
 * `dz` the derivative of each non-label logit w.r.t. u over s (0 where a clamp or the filter
 * cut; the non-target transform's slope where hard). With sub-centres K, a class's u is its
 * winning row's (`subcenter`: the losses' rule) and `arg[j]` is that row.
 */
function logits(
  p: HeadProblem,
  W: Float32Array,
  first: number,
  i: number,
  b: Float64Array,
  u: Float64Array,
  arg: Int32Array,
) {
  const { d, x, scale: s, clamp, nonTarget: nt } = p;
  const K = p.subcenters ?? 1, cols = b.length / K, z = new Float64Array(cols), dz = new Float64Array(cols);
  const vals = new Float64Array(cols);
  const y = p.labels[i] - first;
  const lo = nt ? nt.lo : -1, hi = nt ? nt.hi : 1;
  const cut = (t: number) => (clamp ? Math.min(hi, Math.max(lo, t)) : t);
  const t = new Float64Array(K);
  for (let j = 0; j < cols; j++) {
    for (let q = 0; q < K; q++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += x[i * d + k] * W[(j * K + q) * d + k];
      t[q] = dot * rowScale(p, i) * b[j * K + q];
    }
    const q = K === 1 ? 0 : subcenter(t, 0, K);
    [arg[j], u[j]] = [j * K + q, t[q]];
    let v = cut(u[j]);
    dz[j] = v === u[j] ? 1 : 0;
    if (nt && j !== y && v > nt.cut) v = dz[j] = 0;
    vals[j] = v;
    z[j] = s * v;
    if (nt?.rows && j !== y && isHard(v, first + j, nt.rows[2 * i], nt.rows[2 * i + 1])) {
      const [value, slope] = hardLogit(nt, v);
      z[j] = s * value;
      dz[j] *= slope;
    }
  }
  if (y >= 0 && y < cols) z[y] = p.target[4 * i];
  return { z, dz, vals };
}

/** b_r per row of W (1/max(||W_r||, 1e-12) when W is normalised, else 1) and the norms. */
function columnScales(p: HeadProblem, W: Float32Array): { nw: Float64Array; b: Float64Array } {
  const rows = W.length / p.d;
  const nw = Float64Array.from({ length: rows }, (_, j) => norm(W, j * p.d, p.d));
  return { nw, b: Float64Array.from(nw, (v) => (p.normW ? 1 / Math.max(v, EPS) : 1)) };
}

/** Phase 1 over the classes of `W` (`[cols, D]`, class `first` on): per row the max and the non-label sum. */
export function headStats(p: HeadProblem, all: Float32Array, first: number): HeadStats {
  const { n } = p;
  const W = headRows(p, all);
  const { b } = columnScales(p, W);
  const cols = headClasses(p, all);
  const max = new Float64Array(n), sum = new Float64Array(n), u = new Float64Array(cols), arg = new Int32Array(cols);
  for (let i = 0; i < n; i++) {
    if (p.labels[i] < 0) continue;
    const { z } = logits(p, W, first, i, b, u, arg), y = p.labels[i] - first;
    let m = -Infinity, s = 0;
    for (let j = 0; j < z.length; j++) m = Math.max(m, z[j]);
    for (let j = 0; j < z.length; j++) if (j !== y) s += Math.exp(z[j] - m);
    max[i] = m;
    sum[i] = s;
  }
  return { max, sum };
}

/**
 * Phase 2 over the classes of `W`, given the merged statistics and their row terms: the
 * gradient w.r.t. the range's rows of W and the range's share of the gradient w.r.t. x.
 */
export function headGrads(
  p: HeadProblem,
  all: Float32Array,
  first: number,
  _stats: HeadStats,
  terms: HeadRowTerms,
  outX: Float32Array | null = null,
  outW: Float32Array | null = null,
): { x: Float32Array; W: Float32Array } {
  const { n, d, x, labels, scale: s, target } = p;
  const W = headRows(p, all);
  const { nw: nwAll, b } = columnScales(p, W);
  const cols = headClasses(p, all), rows = b.length;
  const dx = new Float64Array(n * d), dW = new Float64Array(rows * d), colAcc = new Float64Array(rows);
  const u = new Float64Array(cols), arg = new Int32Array(cols);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    const { z, dz } = logits(p, W, first, i, b, u, arg), y = labels[i] - first, a = rowScale(p, i);
    const si = p.scales[i];
    // dL/dz_y = s_i (p_y - 1) = -s_i (1 - p_y)
    const dzy = -si * terms.om[i];
    let rowAcc = 0;
    for (let j = 0; j < cols; j++) {
      // dL/du_ij: through s * clamp(u) (the clamp passes nothing outside [-1, 1]; dz: and the
      // non-target transform), or the target; to the class's chosen row r alone.
      const du = j === y ? dzy * target[4 * i + 1] : dz[j] === 0 ? 0 : si * Math.exp(z[j] - terms.lse[i]) * s * dz[j];
      const r = arg[j];
      // u = (x . W_r) a b: du/dx = a b W_r - [normX] u a^2 x; du/dW_r = a b x - [normW] u b^2 W_r
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += du * a * b[r] * W[r * d + k];
        dW[r * d + k] += du * a * b[r] * x[i * d + k];
      }
      rowAcc += du * u[j];
      colAcc[r] += du * u[j];
    }
    const nx = p.nx[i], owned = y >= 0 && y < cols;
    for (let k = 0; k < d; k++) {
      // Linear in the range's du: the ranges' shares of dx sum to the whole.
      if (p.normX && nx > EPS) dx[i * d + k] -= rowAcc * a * a * x[i * d + k];
      if (!owned) continue;
      // The target's own dependence on ||x|| and ||W_y||.
      if (nx > 0) dx[i * d + k] += (dzy * target[4 * i + 2] * x[i * d + k]) / nx;
      if (p.nw[i] > 0) dW[arg[y] * d + k] += (dzy * target[4 * i + 3] * W[arg[y] * d + k]) / p.nw[i];
    }
  }
  if (p.normW) {
    for (let j = 0; j < rows; j++) {
      if (nwAll[j] <= EPS) continue;
      for (let k = 0; k < d; k++) dW[j * d + k] -= colAcc[j] * b[j] * b[j] * W[j * d + k];
    }
  }
  const gx = outX ?? new Float32Array(n * d), gW = outW ?? new Float32Array(rows * d);
  gx.set(dx);
  gW.set(dW);
  return { x: gx, W: gW };
}

/** `interTopK`'s first pass: every row's non-target class cosines (clamped, filtered) offered to `top`. */
export function cosines(p: HeadProblem, top: RowTopK): void {
  const W = headRows(p, p.W);
  const { b } = columnScales(p, W);
  const cols = headClasses(p, p.W), u = new Float64Array(cols), arg = new Int32Array(cols);
  for (let i = 0; i < p.n; i++) {
    if (p.labels[i] < 0) continue;
    const { vals } = logits(p, W, 0, i, b, u, arg);
    for (let j = 0; j < cols; j++) if (j !== p.labels[i]) top.offer(i, j, vals[j]);
  }
}

/**
 * Row losses and gradients w.r.t. x and W of an embedding head: both phases over every class
 * (with `interTopK`, after a first pass that finds each row's k largest non-target class cosines).
 */
export const head: (p: HeadProblem) => Raw = withInterTopK(headOf({ stats: headStats, grads: headGrads }), cosines);
