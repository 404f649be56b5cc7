// Kernels of the `paired` family: `clip` (Radford et al. 2021, open_clip `ClipLoss`) and
// `siglip` (Zhai et al. 2023, open_clip `SigLipLoss`) on a [N, D], b [N, D], through blocks
// of S = a b^T of at most BK x BK floats: no N x N matrix is ever held. Each block is formed
// by the heads' GEMM (assembly/gemm.ts) against the transpose of its rows of b, and its
// gradient G (d loss / d S on the block) goes back through the same GEMM:
//   dA[I] += G_IJ b[J],   dB[J] += G_IJ^T a[I]   (G read by columns for the second).
//
// clip: L_ij = s S_ij. `clip_stats` takes, block by block, the running maximum (of S) and
// float64 sum of e^(L - s max) of every row and every column (online: a new maximum rescales
// the sum; the diagonal's term kept apart), and returns the loss (1/2N) sum_i (lr_i + lc_i -
// 2 L_ii) with lr, lc the row and column log-sum-exps; it leaves them for `clip_grad`, which
// forms the blocks again and takes
//   G_ij = c (e^(L_ij - lr_i) + e^(L_ij - lc_j) - 2[i = j]),  c = upstream / 2N,
// each exponent as s (S_ij - max) - log(sum) (both parts small where it matters), and on the
// diagonal -c ((1 - p_row) + (1 - p_col)) from the sums without the diagonal's term.
// siglip: x_ij = t S_ij + bias, z = +1 on the diagonal, -1 elsewhere, y = z x:
//   loss term log(1 + e^-y) = max(-y, 0) + log1p(e^-|y|),
//   G_ij = c (sigmoid(x) - [i = j]) = -z c sigmoid(-y),  c = upstream / N,
// with e = e^-|y| once: sigmoid(-y) = e / (1 + e) for y > 0, else 1 / (1 + e).
import { expNeg, logv } from "./math";
import { gemm, transpose } from "./gemm";
import { rowExpSum, rowExpSumExcept, rowMax } from "./softmax";

/** Rows and columns of S per block (`PAIRED_BLOCK` in src/kernels/paired.ts). */
const BK: i32 = 256;

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

// @ts-ignore: decorator
@inline function f32at(p: usize, i: i32): usize {
  return p + ((<usize>i) << 2);
}

// @ts-ignore: decorator
@inline function f64at(p: usize, i: i32): usize {
  return p + ((<usize>i) << 3);
}

/**
 * S [ni, nj] (row stride nj) = a[i0 .. i0 + ni) b[j0 .. j0 + nj)^T, through BT [d, nj]
 * (the transpose of b's rows).
 */
function block(S: usize, a: usize, b: usize, d: i32, i0: i32, ni: i32, j0: i32, nj: i32, BT: usize): void {
  transpose(b + ((<usize>j0 * <usize>d) << 2), nj, d, BT);
  gemm(S, nj, ni, nj, d, a + ((<usize>i0 * <usize>d) << 2), d, 1, BT, nj, 0);
}

/** dA[i0..] += G b[j0..], dB[j0..] += G^T a[i0..] for a block G [ni, nj]. */
function spread(G: usize, a: usize, b: usize, d: i32, i0: i32, ni: i32, j0: i32, nj: i32, ga: usize, gb: usize): void {
  const ai = (<usize>i0 * <usize>d) << 2, bj = (<usize>j0 * <usize>d) << 2;
  gemm(ga + ai, d, ni, d, nj, G, nj, 1, b + bj, d, 1);
  gemm(gb + bj, d, nj, d, ni, G, 1, nj, a + ai, d, 1);
}

/** Running (max, sum) of one row or column: a new maximum m rescales the sum by e^(s (old - m)). */
// @ts-ignore: decorator
@inline function merge(mx: usize, sm: usize, i: i32, m: f32, s: f32, add: f64): void {
  const old = load<f32>(f32at(mx, i));
  const keep = m > old ? Math.exp(<f64>s * (<f64>old - <f64>m)) : 1;
  store<f64>(f64at(sm, i), load<f64>(f64at(sm, i)) * keep + add);
  if (m > old) store<f32>(f32at(mx, i), m);
}

/**
 * clip's first pass: the row and column statistics (rm, cm: [n] maxima of S, float32; rx, cx:
 * [n] float64 sums of e^(s (S - max)) without the diagonal's term; sd: [n] the diagonal S_ii),
 * and the loss. For the second pass it leaves, as float32 in the first n floats of each, the
 * row and column log-sum-exps (lr in rx, lc in cx; relative to the maxima) and in sd the
 * diagonal's 2 - p_row - p_col = rx / (rx + e_ii) + cx / (cx + e_ii): the diagonal's term is
 * kept out of the float32 sums and added back in float64, so that 1 - p keeps its relative
 * accuracy where p is near 1 (a trained model's pairs). S: BK * BK floats, BT: d * BK, cmb,
 * csb: BK floats each.
 */
export function clip_stats(
  a: usize, b: usize, n: i32, d: i32, s: f32,
  S: usize, BT: usize, rm: usize, rx: usize, cm: usize, cx: usize, sd: usize, cmb: usize, csb: usize,
): f64 {
  for (let i = 0; i < n; i++) {
    store<f32>(f32at(rm, i), -Infinity);
    store<f32>(f32at(cm, i), -Infinity);
    store<f64>(f64at(rx, i), 0);
    store<f64>(f64at(cx, i), 0);
  }
  const vs = f32x4.splat(s), lanes = i32x4(0, 1, 2, 3);
  for (let i0 = 0; i0 < n; i0 += BK) {
    const ni = min(BK, n - i0);
    for (let j0 = 0; j0 < n; j0 += BK) {
      const nj = min(BK, n - j0), row = (<usize>nj) << 2, own = i0 == j0;
      block(S, a, b, d, i0, ni, j0, nj, BT);
      for (let ii = 0; ii < ni; ii++) {
        const r = S + <usize>ii * row, i = i0 + ii;
        const m = max(rowMax(r, nj), load<f32>(f32at(rm, i)));
        if (own) store<f32>(f32at(sd, i), load<f32>(f32at(r, ii)));
        merge(rm, rx, i, m, s, own ? rowExpSumExcept(r, nj, ii, m, s, 0) : rowExpSum(r, nj, m, s, 0));
      }
      // Columns: the block's maxima, then the sums of e^(s (S - m)) down each column (without
      // the diagonal: in the block on it, the lane where row ii meets column ii).
      let jj = 0;
      for (; jj + 4 <= nj; jj += 4) {
        let mv = v128.load(f32at(cm, j0 + jj));
        for (let ii = 0; ii < ni; ii++) mv = f32x4.pmax(mv, v128.load(f32at(S + <usize>ii * row, jj)));
        v128.store(f32at(cmb, jj), mv);
        const cols = i32x4.add(lanes, i32x4.splat(own ? jj : -8));
        let acc = f32x4.splat(0);
        for (let ii = 0; ii < ni; ii++) {
          const e = expNeg(f32x4.mul(f32x4.sub(v128.load(f32at(S + <usize>ii * row, jj)), mv), vs));
          acc = f32x4.add(acc, v128.andnot(e, i32x4.eq(cols, i32x4.splat(ii))));
        }
        v128.store(f32at(csb, jj), acc);
      }
      for (; jj < nj; jj++) {
        let m = load<f32>(f32at(cm, j0 + jj));
        for (let ii = 0; ii < ni; ii++) m = max(m, load<f32>(f32at(S + <usize>ii * row, jj)));
        store<f32>(f32at(cmb, jj), m);
        let acc = f32x4.splat(0);
        for (let ii = 0; ii < ni; ii++) {
          if (own && ii == jj) continue;
          acc = f32x4.add(acc, expNeg(f32x4.splat((load<f32>(f32at(S + <usize>ii * row, jj)) - m) * s)));
        }
        store<f32>(f32at(csb, jj), f32x4.extract_lane(acc, 0));
      }
      for (jj = 0; jj < nj; jj++) {
        merge(cm, cx, j0 + jj, load<f32>(f32at(cmb, jj)), s, <f64>load<f32>(f32at(csb, jj)));
      }
    }
  }
  // Row i: lse_i - L_ii = s (rm_i - S_ii) + log(rx_i + e^(s (S_ii - rm_i))), as
  // log1p(expm1(s (S_ii - rm_i)) + rx_i) (0 exactly where the row is one-hot); columns alike.
  let total: f64 = 0;
  for (let i = 0; i < n; i++) {
    const dr = <f64>s * (<f64>load<f32>(f32at(sd, i)) - <f64>load<f32>(f32at(rm, i)));
    const dc = <f64>s * (<f64>load<f32>(f32at(sd, i)) - <f64>load<f32>(f32at(cm, i)));
    const xr = load<f64>(f64at(rx, i)), xc = load<f64>(f64at(cx, i));
    const lr = Math.log1p(Math.expm1(dr) + xr), lc = Math.log1p(Math.expm1(dc) + xc);
    total += lr - dr + lc - dc;
    store<f32>(f32at(sd, i), <f32>(xr / (xr + Math.exp(dr)) + xc / (xc + Math.exp(dc))));
    store<f32>(f32at(rx, i), <f32>lr);
    store<f32>(f32at(cx, i), <f32>lc);
  }
  return total / (2 * <f64>n);
}

/**
 * clip's second pass: the gradients ga, gb [n, d] (zeroed here) from the statistics of
 * `clip_stats`; returns d loss / d s (times the upstream gradient).
 */
export function clip_grad(
  a: usize, b: usize, n: i32, d: i32, s: f32, up: f64,
  S: usize, BT: usize, rm: usize, lr: usize, cm: usize, lc: usize, q: usize, ga: usize, gb: usize,
): f64 {
  memory.fill(ga, 0, (<usize>n * <usize>d) << 2);
  memory.fill(gb, 0, (<usize>n * <usize>d) << 2);
  const c = <f32>(up / (2 * <f64>n)), vc = f32x4.splat(c), vs = f32x4.splat(s);
  let dscale: f64 = 0;
  for (let i0 = 0; i0 < n; i0 += BK) {
    const ni = min(BK, n - i0);
    for (let j0 = 0; j0 < n; j0 += BK) {
      const nj = min(BK, n - j0), row = (<usize>nj) << 2;
      block(S, a, b, d, i0, ni, j0, nj, BT);
      for (let ii = 0; ii < ni; ii++) {
        const r = S + <usize>ii * row, i = i0 + ii;
        const m = f32x4.splat(load<f32>(f32at(rm, i))), l = f32x4.splat(load<f32>(f32at(lr, i)));
        const own = i >= j0 && i < j0 + nj, sii = own ? load<f32>(f32at(r, i - j0)) : 0;
        // (The diagonal is written below: 0 here keeps its term out of the float32 sum of G S.)
        if (own) store<f32>(f32at(r, i - j0), 0);
        let acc = f32x4.splat(0);
        let jj = 0;
        // G = c (e^(s (S - rm_i) - lr_i) + e^(s (S - cm_j) - lc_j)); dscale += G S; G *= s.
        for (; jj + 4 <= nj; jj += 4) {
          const x = v128.load(f32at(r, jj));
          const er = expNeg(f32x4.sub(f32x4.mul(f32x4.sub(x, m), vs), l));
          const mj = v128.load(f32at(cm, j0 + jj)), lj = v128.load(f32at(lc, j0 + jj));
          const ec = expNeg(f32x4.sub(f32x4.mul(f32x4.sub(x, mj), vs), lj));
          const g = f32x4.mul(vc, f32x4.add(er, ec));
          acc = f32x4.add(acc, f32x4.mul(g, x));
          v128.store(f32at(r, jj), f32x4.mul(g, vs));
        }
        let total = hsum(acc);
        for (; jj < nj; jj++) {
          const x = load<f32>(f32at(r, jj)), j = j0 + jj;
          const er = expNeg(f32x4.splat((x - load<f32>(f32at(rm, i))) * s - load<f32>(f32at(lr, i))));
          const ec = expNeg(f32x4.splat((x - load<f32>(f32at(cm, j))) * s - load<f32>(f32at(lc, j))));
          const g = c * f32x4.extract_lane(f32x4.add(er, ec), 0);
          total += <f64>g * <f64>x;
          store<f32>(f32at(r, jj), g * s);
        }
        if (own) {
          // The diagonal: G_ii = c (p_row + p_col - 2) = -c q_i, without cancellation.
          const g = -c * load<f32>(f32at(q, i));
          total += <f64>g * <f64>sii;
          store<f32>(f32at(r, i - j0), g * s);
        }
        dscale += total;
      }
      spread(S, a, b, d, i0, ni, j0, nj, ga, gb);
    }
  }
  return dscale;
}

/**
 * siglip in one pass: the loss (returned) and, when ga is not 0, the gradients ga, gb
 * [n, d] (zeroed here) and d loss / d t, d loss / d bias in nums [2] (float64, times the
 * upstream gradient).
 */
export function siglip(
  a: usize, b: usize, n: i32, d: i32, t: f32, bias: f32, up: f64,
  S: usize, BT: usize, ga: usize, gb: usize, nums: usize,
): f64 {
  const grad = ga != 0;
  if (grad) {
    memory.fill(ga, 0, (<usize>n * <usize>d) << 2);
    memory.fill(gb, 0, (<usize>n * <usize>d) << 2);
  }
  const c = <f32>(up / <f64>n), vc = f32x4.splat(c), vt = f32x4.splat(t), vb = f32x4.splat(bias);
  const zero = f32x4.splat(0), one = f32x4.splat(1), four = i32x4.splat(4);
  let loss: f64 = 0, dt: f64 = 0, db: f64 = 0;
  for (let i0 = 0; i0 < n; i0 += BK) {
    const ni = min(BK, n - i0);
    for (let j0 = 0; j0 < n; j0 += BK) {
      const nj = min(BK, n - j0), row = (<usize>nj) << 2;
      block(S, a, b, d, i0, ni, j0, nj, BT);
      for (let ii = 0; ii < ni; ii++) {
        const r = S + <usize>ii * row;
        // The diagonal's column in this block (-1 if none): the lanes where z = +1.
        const vi = i32x4.splat(i0 + ii - j0);
        let idx = i32x4(0, 1, 2, 3);
        let la = zero, ta = zero, ba = zero;
        for (let jj = 0; jj < nj; jj += 4) {
          // A tail of fewer than 4 columns: the lanes past nj read the next row (or the
          // scratch after S) and are masked out of every sum and store.
          const x = v128.load(f32at(r, jj));
          const live = i32x4.lt_s(idx, i32x4.splat(nj));
          const pos = i32x4.eq(idx, vi);
          const xs = f32x4.add(f32x4.mul(x, vt), vb);
          const y = v128.bitselect(xs, f32x4.neg(xs), pos);
          const e = expNeg(f32x4.neg(f32x4.abs(y)));
          const u = f32x4.add(one, e);
          // log1p(e) = log(u) e / (u - 1) (exact where u rounds to 1: then e).
          const um = f32x4.sub(u, one);
          const l1p = v128.bitselect(e, f32x4.mul(logv(u), f32x4.div(e, um)), f32x4.eq(um, zero));
          const term = f32x4.add(f32x4.pmax(f32x4.neg(y), zero), l1p);
          la = f32x4.add(la, v128.and(term, live));
          if (grad) {
            // G = -z c sigmoid(-y)
            const sg = f32x4.div(v128.bitselect(e, one, f32x4.gt(y, zero)), u);
            const g = v128.and(f32x4.mul(vc, v128.bitselect(f32x4.neg(sg), sg, pos)), live);
            ta = f32x4.add(ta, f32x4.mul(g, v128.and(x, live)));
            ba = f32x4.add(ba, g);
            if (jj + 4 <= nj) v128.store(f32at(r, jj), f32x4.mul(g, vt));
            else for (let q = 0; jj + q < nj; q++) store<f32>(f32at(r, jj + q), laneOf(f32x4.mul(g, vt), q));
          }
          idx = i32x4.add(idx, four);
        }
        loss += hsum(la);
        dt += hsum(ta);
        db += hsum(ba);
      }
      if (grad) spread(S, a, b, d, i0, ni, j0, nj, ga, gb);
    }
  }
  store<f64>(nums, dt);
  store<f64>(nums + 8, db);
  return loss / <f64>n;
}

/** Lane q (0..3) of an f32x4. */
function laneOf(v: v128, q: i32): f32 {
  if (q == 0) return f32x4.extract_lane(v, 0);
  if (q == 1) return f32x4.extract_lane(v, 1);
  if (q == 2) return f32x4.extract_lane(v, 2);
  return f32x4.extract_lane(v, 3);
}
