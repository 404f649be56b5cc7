// Kernels of the `metric` family (SPEC §8: ntXent, tripletMargin, multiSimilarity,
// proxyAnchor). The host normalises the rows (`normalize_rows`) and forms the cosines S
// with the GEMM (`contrastive_dots` for h h^T, `gemm` for h p^T); one `*_rows` function per
// loss then walks S an anchor row at a time (proxyAnchor: a chunk of proxies at a time, its
// columns' sums gathered row by row), takes the loss in float64 and overwrites S with
// A = dL/dS, already scaled by the upstream value and the loss's denominator; the host
// sends A back with the GEMM ((A + A^T) h by `contrastive_grad`; A p and A^T h by
// `gemm_acc64`, float32 blocks summed in float64) and `metric_backward` takes the result
// through the normalisation.
//
// Where a float32 cosine's rounding (about 1e-7) times the loss's sharpness (1/t, beta,
// alpha) would move a value by more than SPEC allows, the rows are "precise": each cosine is
// then a float64 dot product of the raw rows times their float64 inverse norms.
//
// tripletMargin mines inside the same walk: per anchor the negatives' distances are sorted
// once (a quicksort of packed keys), and each positive's mined triplets are an interval of
// them, summed from prefix sums (relu) or walked (soft); the negatives' share of the
// gradient is a difference array over the sorted positions. No triplet is ever listed.
// Distances come from S (`d^2 = n_a + n_j - 2 S_aj`, n the squared norms of the normalised
// rows) except near ones (d^2 < NEAR), taken again in float64 from the raw rows and their
// float64 inverse norms: there the float32 cosine's rounding, divided by a small d, would
// dominate, and so would the rounding of the float32 normalised rows where two rows point
// almost the same way. Near pairs also send their gradient directly as c (h_a - h_j) / d in
// float64 (into G2) rather than through A, where -c/d h_j and the c/(2d) 2 h_a of the norms
// would cancel in float32.
//
// Nearly parallel rows: the normalisation's backward (g - h (h . g)) / ||f|| keeps 1/100 to
// 1/1000 of g = sum_j B_ij q_j where the rows are 0.01 to 0.001 apart, so a float32 g formed
// by the GEMM and then projected loses those digits. The walks flag every row (proxy) with a
// near pair (d^2 < NEAR, a cosine above 1 - NEAR/2); `metric_relative` forms those rows'
// products in float64 from the raw rows relative to the row's own direction,
// sum_j B_ij q_j - (sum_j B_ij) h_i = sum_j B_ij (q_j - h_i), which projects to the same
// gradient with nothing left to cancel (the WebGPU kernel's near tiles, docs/LOSSES.md §11).
import { rowDot } from "./vectors";
import { gemm } from "./gemm";
import { expNeg } from "./math";

/** The depth of one float32 product of `gemm_acc64` (the blocks add up in float64). */
const DEPTH: i32 = 256;

/** Below this squared distance a pair is "near" (see above). */
export const NEAR: f64 = 0.1;

/** The cosine above which two unit rows are near (d^2 = 2 - 2 cos < NEAR). */
const NEAR_COS: f64 = 1 - NEAR / 2;

/** The near columns a row's list holds (`markNear`); a row with more takes `metric_relative` whole. */
const LIST: i32 = 15;

/**
 * near [i] (int32) = whether row i's cosines row [cols] (float64; skip's excepted) hold a near
 * pair (see `NEAR_COS`); with nearQ (not 0), nearQ [j] = 1 for each such column j; with list
 * (not 0, [rows, LIST + 1] int32), row i's is [count, its first LIST near columns].
 */
function markNear(row: usize, cols: i32, skip: i32, i: i32, near: usize, nearQ: usize, list: usize = 0): void {
  let any = 0;
  const l = list + ((<usize>i * <usize>(LIST + 1)) << 2);
  for (let j = 0; j < cols; j++) {
    if (j == skip || f64At(row, j) <= NEAR_COS) continue;
    if (list && any < LIST) store<i32>(l + ((<usize>any + 1) << 2), j);
    any++;
    if (nearQ) store<i32>(nearQ + ((<usize>j) << 2), 1);
  }
  if (list) store<i32>(l, any);
  store<i32>(near + ((<usize>i) << 2), any ? 1 : 0);
}

/** Whether row i's near list (`markNear`) holds column j. */
function listed(list: usize, i: i32, j: i32): bool {
  const l = list + ((<usize>i * <usize>(LIST + 1)) << 2), n = load<i32>(l);
  for (let t = 0; t < n; t++) if (load<i32>(l + ((<usize>t + 1) << 2)) == j) return true;
  return false;
}

/**
 * ntXent's and multiSimilarity's near pairs taken out of A [b, ld] (the coefficients the walks
 * left in S) when every flagged row's list (`markNear`) holds all its near columns (at most LIST)
 * and the lists agree (j in i's where i is in j's): then cv [b, LIST] (float64) gets each listed
 * pair's B_ij = A_ij + A_ji, A_ij and A_ji become 0, and returns 1; otherwise leaves A as it was
 * and returns 0 (`metric_relative` then forms the flagged rows whole). The float32 GEMM then sums
 * the far pairs only and `metric_near` adds the near ones relative to the row's own direction:
 * a row's cost follows its near pairs, not the batch (a row with one near positive among 256).
 */
export function metric_near_split(S: usize, ld: i32, b: i32, list: usize, cv: usize): i32 {
  for (let i = 0; i < b; i++) {
    const l = list + ((<usize>i * <usize>(LIST + 1)) << 2), n = load<i32>(l);
    if (n > LIST) return 0;
    for (let t = 0; t < n; t++) if (!listed(list, load<i32>(l + ((<usize>t + 1) << 2)), i)) return 0;
  }
  for (let i = 0; i < b; i++) {
    const l = list + ((<usize>i * <usize>(LIST + 1)) << 2), n = load<i32>(l);
    for (let t = 0; t < n; t++) {
      const j = load<i32>(l + ((<usize>t + 1) << 2));
      const ij = S + ((<usize>i * <usize>ld + <usize>j) << 2), ji = S + ((<usize>j * <usize>ld + <usize>i) << 2);
      setF64(cv, i * LIST + t, <f64>load<f32>(ij) + <f64>load<f32>(ji));
    }
  }
  for (let i = 0; i < b; i++) {
    const l = list + ((<usize>i * <usize>(LIST + 1)) << 2), n = load<i32>(l);
    for (let t = 0; t < n; t++) store<f32>(S + ((<usize>i * <usize>ld + <usize>load<i32>(l + ((<usize>t + 1) << 2))) << 2), 0);
  }
  return 1;
}

/**
 * The near pairs `metric_near_split` took out, relative to each row's own direction:
 * G2 [b, d] (float64) = sum over row i's listed j of B_ij (q_j - h_i), h_i = F_i inv64_i and
 * q_j = F_j inv64_j (a row of norm below 1e-12, which the backward does not project: sum B_ij q_j),
 * 0 for the other rows. Returns the number of rows with a near pair.
 */
export function metric_near(b: i32, d: i32, F: usize, inv64: usize, list: usize, cv: usize, G2: usize): i32 {
  memory.fill(G2, 0, (<usize>b * <usize>d) << 3);
  let flagged = 0;
  for (let i = 0; i < b; i++) {
    const n = load<i32>(list + ((<usize>i * <usize>(LIST + 1)) << 2));
    if (!n) continue;
    flagged++;
    const out = G2 + ((<usize>i * <usize>d) << 3), f = F + ((<usize>i * <usize>d) << 2);
    let total: f64 = 0;
    for (let t = 0; t < n; t++) {
      const c = f64At(cv, i * LIST + t), j = load<i32>(list + ((<usize>i * <usize>(LIST + 1) + <usize>t + 1) << 2));
      total += c;
      const w = c * f64At(inv64, j), q = F + ((<usize>j * <usize>d) << 2);
      for (let k = 0; k < d; k++) setF64(out, k, f64At(out, k) + w * <f64>load<f32>(q + ((<usize>k) << 2)));
    }
    const hw = Math.sqrt(rowDot(f, f, d)) >= 1e-12 ? -total * f64At(inv64, i) : 0;
    for (let k = 0; k < d; k++) setF64(out, k, f64At(out, k) + hw * <f64>load<f32>(f + ((<usize>k) << 2)));
  }
  return flagged;
}

// @ts-ignore: decorator
@inline function f64At(p: usize, i: i32): f64 {
  return load<f64>(p + ((<usize>i) << 3));
}

// @ts-ignore: decorator
@inline function setF64(p: usize, i: i32, x: f64): void {
  store<f64>(p + ((<usize>i) << 3), x);
}

// @ts-ignore: decorator
@inline function i32At(p: usize, i: i32): i32 {
  return load<i32>(p + ((<usize>i) << 2));
}

/** log(1 + e^x) without overflow. */
function softplus(x: f64): f64 {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** 1 / (1 + e^-x) without overflow. */
function sigmoid(x: f64): f64 {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * Row i of the cosines into out [cols] float64: from S [*, ld] (float32), or for precise
 * rows (F not 0) the float64 dot products of F's row i with Q's rows times the inverse
 * norms finv64 [*], qinv64 [cols] (F, Q [*, d] raw rows).
 */
function loadRow(i: i32, S: usize, ld: i32, cols: i32, F: usize, Q: usize, d: i32, finv64: usize, qinv64: usize, out: usize): void {
  if (F) {
    const fi = F + ((<usize>i * <usize>d) << 2), s = f64At(finv64, i);
    for (let j = 0; j < cols; j++) setF64(out, j, rowDot(fi, Q + ((<usize>j * <usize>d) << 2), d) * s * f64At(qinv64, j));
    return;
  }
  const row = S + ((<usize>i * <usize>ld) << 2);
  for (let j = 0; j < cols; j++) setF64(out, j, <f64>load<f32>(row + ((<usize>j) << 2)));
}

/** Row i of S [*, ld] = scale * coef [cols] (float64). */
function storeRow(i: i32, S: usize, ld: i32, cols: i32, coef: usize, scale: f64): void {
  const row = S + ((<usize>i * <usize>ld) << 2);
  for (let j = 0; j < cols; j++) store<f32>(row + ((<usize>j) << 2), <f32>(scale * f64At(coef, j)));
}

/**
 * ntXent over S [b, ld] (or precise rows from F, inv64): per anchor a, with L the
 * log-sum-exp of its negatives' s_an / t, each positive p adds l_ap = softplus(L - s_ap/t);
 * dl/ds_ap = -sigmoid(L - s_ap/t) / t, dl/ds_an = (sum_p sigmoid(.)) e^(s_an/t - L) / t.
 * Returns the sum of the l_ap; with grad, S becomes A scaled by `scale` (upstream / pairs)
 * and near [b] (int32) the rows' near flags, list [b, LIST + 1] their near columns (`markNear`).
 * Scratch row, coef [b] float64.
 */
export function ntxent_rows(
  S: usize, ld: i32, b: i32, F: usize, d: i32, inv64: usize, labels: usize, invT: f64, grad: i32, scale: f64, row: usize,
  coef: usize, near: usize, list: usize,
): f64 {
  let total: f64 = 0;
  for (let a = 0; a < b; a++) {
    loadRow(a, S, ld, b, F, F, d, inv64, inv64, row);
    if (grad) markNear(row, b, a, a, near, 0, list);
    const ya = i32At(labels, a);
    let m: f64 = -Infinity;
    for (let j = 0; j < b; j++) if (i32At(labels, j) != ya) m = max(m, f64At(row, j) * invT);
    // e^(s_an/t - m) of the negatives (0 elsewhere) by the float32x4 exp (relative error 1.6e-7;
    // every argument <= 0, and a masked lane's value is dropped whatever it is); sums in float64.
    let sum: f64 = 0, j = 0;
    const vy = i32x4.splat(ya);
    for (; j + 4 <= b; j += 4) {
      let x = f32x4.splat(<f32>(f64At(row, j) * invT - m));
      x = f32x4.replace_lane(x, 1, <f32>(f64At(row, j + 1) * invT - m));
      x = f32x4.replace_lane(x, 2, <f32>(f64At(row, j + 2) * invT - m));
      x = f32x4.replace_lane(x, 3, <f32>(f64At(row, j + 3) * invT - m));
      const e = v128.andnot(expNeg(x), i32x4.eq(v128.load(labels + ((<usize>j) << 2)), vy));
      const e0 = <f64>f32x4.extract_lane(e, 0), e1 = <f64>f32x4.extract_lane(e, 1);
      const e2 = <f64>f32x4.extract_lane(e, 2), e3 = <f64>f32x4.extract_lane(e, 3);
      setF64(coef, j, e0);
      setF64(coef, j + 1, e1);
      setF64(coef, j + 2, e2);
      setF64(coef, j + 3, e3);
      sum += (e0 + e1) + (e2 + e3);
    }
    for (; j < b; j++) {
      let c: f64 = 0;
      if (i32At(labels, j) != ya) sum += c = Math.exp(f64At(row, j) * invT - m);
      setF64(coef, j, c);
    }
    // No negative: every l_ap is softplus(-inf) = 0, and so is the row of A.
    const L = sum > 0 ? m + Math.log(sum) : -Infinity;
    let shares: f64 = 0;
    for (j = 0; j < b; j++) {
      if (j == a || i32At(labels, j) != ya) continue;
      const x = L - f64At(row, j) * invT;
      total += softplus(x);
      const s = sigmoid(x);
      shares += s;
      setF64(coef, j, -s);
    }
    if (!grad) continue;
    for (j = 0; j < b; j++) if (i32At(labels, j) != ya) setF64(coef, j, shares * f64At(coef, j) / sum);
    storeRow(a, S, ld, b, coef, scale * invT);
  }
  return total;
}

/**
 * log(1 + sum_{j: keep_j} e^(x_j)) for x_j = k (row_j - base) over the row's entries j of
 * label class `same` (y_j == y, j != skip) or of the others; with coef (not 0), coef_j gets
 * sign * e^(x_j) / (1 + sum) for those j.
 */
function logOnePlus(row: usize, n: i32, labels: usize, y: i32, same: bool, skip: i32, k: f64, base: f64, coef: usize, sign: f64): f64 {
  let m: f64 = 0;
  for (let j = 0; j < n; j++) if (j != skip && (i32At(labels, j) == y) == same) m = max(m, k * (f64At(row, j) - base));
  let s = Math.exp(-m);
  for (let j = 0; j < n; j++) if (j != skip && (i32At(labels, j) == y) == same) s += Math.exp(k * (f64At(row, j) - base) - m);
  if (coef) {
    for (let j = 0; j < n; j++) {
      if (j != skip && (i32At(labels, j) == y) == same) setF64(coef, j, sign * Math.exp(k * (f64At(row, j) - base) - m) / s);
    }
  }
  return m + Math.log(s);
}

/**
 * multiSimilarity over S [b, ld] (or precise rows): per anchor
 * (1/alpha) log(1 + sum_p e^(-alpha (S_ap - base))) + (1/beta) log(1 + sum_n e^(beta (S_an - base)));
 * dl/dS_ap = -e^(.)/(1 + sum), dl/dS_an = e^(.)/(1 + sum). Returns the sum over anchors;
 * with grad, S becomes A scaled by `scale` (upstream / b), near [b] (int32) the rows' near
 * flags and list [b, LIST + 1] their near columns. Scratch row, coef [b] float64.
 */
export function ms_rows(
  S: usize, ld: i32, b: i32, F: usize, d: i32, inv64: usize, labels: usize, alpha: f64, beta: f64, base: f64, grad: i32,
  scale: f64, row: usize, coef: usize, near: usize, list: usize,
): f64 {
  let total: f64 = 0;
  const c = grad ? coef : 0;
  for (let a = 0; a < b; a++) {
    loadRow(a, S, ld, b, F, F, d, inv64, inv64, row);
    if (c) markNear(row, b, a, a, near, 0, list);
    if (c) memory.fill(coef, 0, (<usize>b) << 3);
    const y = i32At(labels, a);
    total += logOnePlus(row, b, labels, y, true, a, -alpha, base, c, -1) / alpha;
    total += logOnePlus(row, b, labels, y, false, -1, beta, base, c, 1) / beta;
    if (c) storeRow(a, S, ld, b, coef, scale);
  }
  return total;
}

/** proxyAnchor's exponent of a row of class y and proxy k: -alpha (s - margin) when y = k, alpha (s + margin) otherwise. */
// @ts-ignore: decorator
@inline function proxyExponent(y: i32, k: i32, s: f64, alpha: f64, margin: f64): f64 {
  return y == k ? -alpha * (s - margin) : alpha * (s + margin);
}

/**
 * proxyAnchor over the proxies k0 .. k0 + cc - 1 of `classes` (a chunk: each proxy's terms
 * involve its own column only): S [b, ld] their cosines with the rows (or precise rows
 * from F, finv64 and the chunk's proxies P, pinv64). Per proxy k, x_ik = -alpha (S_ik -
 * margin) for its rows (y_i = k), alpha (S_ik + margin) for the others; pos_k = log(1 +
 * sum e^x) over its rows (classes present only), neg_k over the others. Returns the chunk's
 * sum_k pos_k / present + sum_k neg_k / classes; with grad, S becomes (times `scale`, the
 * upstream) A: dL/dS_ik = -alpha e^(x - mp_k)/sp_k / present (own rows), alpha e^(x -
 * mn_k)/sn_k / classes, and near [b], nearP [cc] (int32) the near flags of the rows and of the
 * chunk's proxies (`markNear`). Scratch row, mp, sp, mn, sn [cc] float64, own [cc] int32.
 */
export function proxy_rows(
  S: usize, ld: i32, b: i32, k0: i32, cc: i32, classes: i32, F: usize, P: usize, d: i32, finv64: usize, pinv64: usize,
  labels: usize, alpha: f64, margin: f64, present: i32, grad: i32, scale: f64, row: usize, mp: usize, sp: usize,
  mn: usize, sn: usize, own: usize, near: usize, nearP: usize,
): f64 {
  const bytes = (<usize>cc) << 3;
  memory.fill(mp, 0, bytes);
  memory.fill(mn, 0, bytes);
  memory.fill(sp, 0, bytes);
  memory.fill(sn, 0, bytes);
  memory.fill(own, 0, (<usize>cc) << 2);
  if (grad) memory.fill(nearP, 0, (<usize>cc) << 2);
  for (let i = 0; i < b; i++) {
    loadRow(i, S, ld, cc, F, P, d, finv64, pinv64, row);
    if (grad) markNear(row, cc, -1, i, near, nearP);
    const y = i32At(labels, i) - k0;
    for (let k = 0; k < cc; k++) {
      const v = proxyExponent(y, k, f64At(row, k), alpha, margin);
      if (y == k) setF64(mp, k, max(f64At(mp, k), v));
      else setF64(mn, k, max(f64At(mn, k), v));
    }
    if (y >= 0 && y < cc) store<i32>(own + ((<usize>y) << 2), 1);
  }
  for (let i = 0; i < b; i++) {
    loadRow(i, S, ld, cc, F, P, d, finv64, pinv64, row);
    const y = i32At(labels, i) - k0;
    for (let k = 0; k < cc; k++) {
      const v = proxyExponent(y, k, f64At(row, k), alpha, margin);
      if (y == k) setF64(sp, k, f64At(sp, k) + Math.exp(v - f64At(mp, k)));
      else setF64(sn, k, f64At(sn, k) + Math.exp(v - f64At(mn, k)));
    }
  }
  let pos: f64 = 0, neg: f64 = 0;
  for (let k = 0; k < cc; k++) {
    // sp_k, sn_k: the sums plus the one of log(1 + ...), e^(-m).
    setF64(sp, k, f64At(sp, k) + Math.exp(-f64At(mp, k)));
    setF64(sn, k, f64At(sn, k) + Math.exp(-f64At(mn, k)));
    neg += f64At(mn, k) + Math.log(f64At(sn, k));
    if (i32At(own, k)) pos += f64At(mp, k) + Math.log(f64At(sp, k));
  }
  if (grad) {
    const wp = scale * alpha / <f64>present, wn = scale * alpha / <f64>classes;
    for (let i = 0; i < b; i++) {
      loadRow(i, S, ld, cc, F, P, d, finv64, pinv64, row);
      const out = S + ((<usize>i * <usize>ld) << 2), y = i32At(labels, i) - k0;
      for (let k = 0; k < cc; k++) {
        const v = proxyExponent(y, k, f64At(row, k), alpha, margin);
        const a = y == k ? -wp * Math.exp(v - f64At(mp, k)) / f64At(sp, k) : wn * Math.exp(v - f64At(mn, k)) / f64At(sn, k);
        store<f32>(out + ((<usize>k) << 2), <f32>a);
      }
    }
  }
  return pos / <f64>present + neg / <f64>classes;
}

/**
 * Sorts packed keys [n] (u64) ascending in place: a quicksort (median of three; insertion
 * sort below 16 keys). A key is a distance's float64 bits (non-negative floats order as
 * their bits) with the row index in its low `bits` bits.
 */
function sortKeys(keys: usize, lo: i32, hi: i32): void {
  while (hi - lo > 16) {
    const mid = lo + ((hi - lo) >> 1);
    let a = u64At(keys, lo), m = u64At(keys, mid), z = u64At(keys, hi - 1);
    // The median of the three as the pivot.
    const pivot = a < m ? (m < z ? m : a < z ? z : a) : (a < z ? a : m < z ? z : m);
    let i = lo, j = hi - 1;
    while (i <= j) {
      while (u64At(keys, i) < pivot) i++;
      while (u64At(keys, j) > pivot) j--;
      if (i <= j) {
        const t = u64At(keys, i);
        setU64(keys, i, u64At(keys, j));
        setU64(keys, j, t);
        i++;
        j--;
      }
    }
    // Recurse into the smaller side, loop on the larger.
    if (j - lo < hi - 1 - i) {
      sortKeys(keys, lo, j + 1);
      lo = i;
    } else {
      sortKeys(keys, i, hi);
      hi = j + 1;
    }
  }
  for (let i = lo + 1; i < hi; i++) {
    const k = u64At(keys, i);
    let j = i - 1;
    while (j >= lo && u64At(keys, j) > k) {
      setU64(keys, j + 1, u64At(keys, j));
      j--;
    }
    setU64(keys, j + 1, k);
  }
}

// @ts-ignore: decorator
@inline function u64At(p: usize, i: i32): u64 {
  return load<u64>(p + ((<usize>i) << 3));
}

// @ts-ignore: decorator
@inline function setU64(p: usize, i: i32, x: u64): void {
  store<u64>(p + ((<usize>i) << 3), x);
}

/** The number of the first n sorted keys (float64) below x (strict) or at most x. */
function countBelow(sorted: usize, n: i32, x: f64, orEqual: bool): i32 {
  let lo = 0, hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const k = f64At(sorted, mid);
    if (k < x || (orEqual && k == x)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * ||h_a - h_j||^2 in float64 from the raw rows F [*, d] and their inverse norms inv64: the
 * difference of two nearly equal directions, which float32 normalised rows would leave to
 * their rounding.
 */
function nearSqDist(F: usize, inv64: usize, a: i32, j: i32, d: i32): f64 {
  const fa = F + ((<usize>a * <usize>d) << 2), fj = F + ((<usize>j * <usize>d) << 2);
  const ia = f64At(inv64, a), ij = f64At(inv64, j);
  let s: f64 = 0;
  for (let q = 0; q < d; q++) {
    const x = <f64>load<f32>(fa + ((<usize>q) << 2)) * ia - <f64>load<f32>(fj + ((<usize>q) << 2)) * ij;
    s += x * x;
  }
  return s;
}

/** The number of triplets with l > 0 of the last `triplet_rows` call. */
let tripletCount: i32 = 0;

/** The triplet count of the last `triplet_rows` call (the loss's denominator). */
export function triplet_count(): i32 {
  return tripletCount;
}

/**
 * tripletMargin over S [b, ld] (cosines of the normalised rows H [b, d]): returns the loss,
 * the mean over the mined triplets with l > 0 (see the module), whose count is then
 * `triplet_count()`. mining: 0 all,
 * 1 hard, 2 semihard, 3 batchHard. With grad, S becomes A (scaled by upstream / count) and
 * G2 [b, d] float64 gets the near pairs' gradient. Scratch: dist, coef, keys, pre, shares
 * [b + 1] float64, idx [b] int32, norms, diag [b] float64.
 */
export function triplet_rows(
  S: usize, ld: i32, b: i32, H: usize, F: usize, inv64: usize, d: i32, labels: usize, margin: f64, mining: i32, soft: i32, grad: i32,
  upstream: f64, G2: usize, dist: usize, coef: usize, keys: usize, pre: usize, shares: usize, idx: usize, norms: usize,
  diag: usize,
): f64 {
  const rb = (<usize>d) << 2;
  for (let i = 0; i < b; i++) setF64(norms, i, rowDot(H + <usize>i * rb, H + <usize>i * rb, d));
  if (grad) {
    memory.fill(diag, 0, (<usize>b) << 3);
    memory.fill(G2, 0, (<usize>b * <usize>d) << 3);
  }
  let total: f64 = 0, count = 0;
  // The bits of a row index in a packed key.
  const mask: u64 = (<u64>1 << <u64>(32 - clz<i32>(max(b - 1, 1)))) - 1;
  for (let a = 0; a < b; a++) {
    const row = S + ((<usize>a * <usize>ld) << 2), ya = i32At(labels, a), na = f64At(norms, a);
    for (let j = 0; j < b; j++) {
      let d2 = na + f64At(norms, j) - 2 * <f64>load<f32>(row + ((<usize>j) << 2));
      if (d2 < NEAR) d2 = nearSqDist(F, inv64, a, j, d);
      setF64(dist, j, Math.sqrt(max(d2, 0)));
    }
    memory.fill(coef, 0, (<usize>b) << 3);
    if (mining == 3) {
      // The farthest positive and the nearest negative, ties to the smaller index.
      let p = -1, n = -1;
      for (let j = 0; j < b; j++) {
        const dj = f64At(dist, j);
        if (j != a && i32At(labels, j) == ya && (p < 0 || dj > f64At(dist, p))) p = j;
        if (i32At(labels, j) != ya && (n < 0 || dj < f64At(dist, n))) n = j;
      }
      if (p >= 0 && n >= 0) {
        const v = f64At(dist, p) - f64At(dist, n) + margin;
        const l = soft ? softplus(v) : max(v, 0);
        if (l > 0) {
          const g = soft ? sigmoid(v) : 1;
          total += l;
          count++;
          setF64(coef, p, g);
          setF64(coef, n, -g);
        }
      }
    } else {
      // The negatives, sorted by distance (packed keys: the index in the low bits, which
      // moves a distance by at most 2^(bits - 52) of itself), and their prefix sums.
      let nn = 0;
      for (let j = 0; j < b; j++) {
        if (i32At(labels, j) == ya) continue;
        setU64(keys, nn, (reinterpret<u64>(f64At(dist, j)) & ~mask) | <u64>j);
        nn++;
      }
      sortKeys(keys, 0, nn);
      setF64(pre, 0, 0);
      for (let q = 0; q < nn; q++) {
        const j = <i32>(u64At(keys, q) & mask);
        store<i32>(idx + ((<usize>q) << 2), j);
        setF64(keys, q, f64At(dist, j));
        setF64(pre, q + 1, f64At(pre, q) + f64At(keys, q));
      }
      memory.fill(shares, 0, (<usize>nn + 1) << 3);
      for (let p = 0; p < b && nn > 0; p++) {
        if (p == a || i32At(labels, p) != ya) continue;
        const dp = f64At(dist, p), t = dp + margin;
        // The mined interval [lo, hi) of sorted negatives; relu keeps those with d_an < t.
        let lo = 0, hi = nn;
        if (mining == 1) hi = countBelow(keys, nn, dp, true);
        if (mining == 2) {
          lo = countBelow(keys, nn, dp, true);
          hi = countBelow(keys, nn, t, true);
        }
        if (!soft) hi = min(hi, countBelow(keys, nn, t, false));
        if (hi <= lo) continue;
        if (!soft) {
          const k = hi - lo;
          total += <f64>k * t - (f64At(pre, hi) - f64At(pre, lo));
          count += k;
          setF64(coef, p, f64At(coef, p) + <f64>k);
          setF64(shares, lo, f64At(shares, lo) - 1);
          setF64(shares, hi, f64At(shares, hi) + 1);
          continue;
        }
        let g: f64 = 0;
        for (let q = lo; q < hi; q++) {
          const v = t - f64At(keys, q);
          total += softplus(v);
          const s = sigmoid(v);
          g += s;
          setF64(shares, q, f64At(shares, q) - s);
        }
        count += hi - lo;
        setF64(coef, p, f64At(coef, p) + g);
      }
      // The negatives' coefficients: relu's running count of the difference array, soft's sums.
      let run: f64 = 0;
      for (let q = 0; q < nn; q++) {
        const n = i32At(idx, q);
        if (soft) setF64(coef, n, f64At(shares, q));
        else {
          run += f64At(shares, q);
          setF64(coef, n, run);
        }
      }
    }
    if (!grad) continue;
    // dL/dd_aj = coef_j into A_aj = dL/dS_aj, the norms' diagonal, or (near pairs) G2.
    for (let j = 0; j < b; j++) {
      const cj = f64At(coef, j), dj = f64At(dist, j);
      let x: f64 = 0;
      if (cj != 0 && dj > 0) {
        const near = na + f64At(norms, j) - 2 * <f64>load<f32>(row + ((<usize>j) << 2)) < NEAR;
        if (near) {
          const w = cj / dj, fa = F + <usize>a * rb, fj = F + <usize>j * rb, ia = f64At(inv64, a), ij = f64At(inv64, j);
          for (let q = 0; q < d; q++) {
            const o = (<usize>q) << 2;
            const diff = w * (<f64>load<f32>(fa + o) * ia - <f64>load<f32>(fj + o) * ij);
            setF64(G2, a * d + q, f64At(G2, a * d + q) + diff);
            setF64(G2, j * d + q, f64At(G2, j * d + q) - diff);
          }
        } else {
          x = -cj / dj;
          setF64(diag, a, f64At(diag, a) + cj / (2 * dj));
          setF64(diag, j, f64At(diag, j) + cj / (2 * dj));
        }
      }
      setF64(dist, j, x);
    }
    storeRow(a, S, ld, b, dist, 1);
  }
  tripletCount = count;
  if (grad) {
    const s = count ? upstream / <f64>count : 0;
    for (let i = 0; i < b; i++) {
      const row = S + ((<usize>i * <usize>ld) << 2);
      for (let j = 0; j < b; j++) store<f32>(row + ((<usize>j) << 2), <f32>(s * (<f64>load<f32>(row + ((<usize>j) << 2)) + (i == j ? f64At(diag, i) : 0))));
      for (let q = 0; q < d; q++) setF64(G2, i * d + q, s * f64At(G2, i * d + q));
    }
  }
  return count ? total / <f64>count : 0;
}

/** G[at] (float32) + G2[at] (float64; either absent when 0). */
// @ts-ignore: decorator
@inline function gradAt(G: usize, G2: usize, at: usize): f64 {
  return (G ? <f64>load<f32>(G + (at << 2)) : 0) + (G2 ? load<f64>(G2 + (at << 3)) : 0);
}

/**
 * out [rows, d] = the gradient w.r.t. the raw rows F [rows, d] from g = G [rows, d]
 * (float32, or 0) + G2 [rows, d] (float64, or 0), the gradient w.r.t. h = F / max(||F||, 1e-12):
 * (g - h (h . g)) / ||F||, or g / 1e-12 where ||F|| < 1e-12 (as PyTorch), in float64.
 * inv64 [rows]: 1 / max(||F_r||, 1e-12).
 */
export function metric_backward(G: usize, G2: usize, F: usize, inv64: usize, rows: i32, d: i32, out: usize): void {
  for (let r = 0; r < rows; r++) {
    const o = <usize>r * <usize>d, f = F + (o << 2), inv = f64At(inv64, r);
    const project = Math.sqrt(rowDot(f, f, d)) >= 1e-12;
    let dot: f64 = 0;
    if (project) for (let q = 0; q < d; q++) dot += <f64>load<f32>(f + ((<usize>q) << 2)) * inv * gradAt(G, G2, o + <usize>q);
    for (let q = 0; q < d; q++) {
      const h = project ? <f64>load<f32>(f + ((<usize>q) << 2)) * inv : 0;
      store<f32>(out + ((o + <usize>q) << 2), <f32>((gradAt(G, G2, o + <usize>q) - h * dot) * inv));
    }
  }
}

/**
 * acc [rows, n] (float64) = (accumulate ? acc : 0) + sum_k coef[m*sm + k*sk] * src[k*lds + 0..n), the GEMM's product
 * (assembly/gemm.ts) over blocks of DEPTH of the depth, each block's float32 result added in
 * float64 (T [rows, n] float32 scratch): proxyAnchor's products run over up to 1e5 proxies,
 * where one float32 sum would lose about depth * 6e-8 of its size. The rows flagged in skip
 * [rows] (int32, or 0) are left as they were (`metric_relative` forms them).
 */
export function gemm_acc64(
  acc: usize, rows: i32, n: i32, depth: i32, coef: usize, sm: i32, sk: i32, src: usize, lds: i32, T: usize, accumulate: i32,
  skip: usize,
): void {
  if (!accumulate) memory.fill(acc, 0, (<usize>rows * <usize>n) << 3);
  for (let k0 = 0; k0 < depth; k0 += DEPTH) {
    const kc = min(DEPTH, depth - k0);
    gemm(T, n, rows, n, kc, coef + ((<usize>k0 * <usize>sk) << 2), sm, sk, src + ((<usize>k0 * <usize>lds) << 2), lds, 0);
    for (let r = 0; r < rows; r++) {
      if (skip && i32At(skip, r)) continue;
      for (let i = r * n; i < (r + 1) * n; i++) setF64(acc, i, f64At(acc, i) + <f64>load<f32>(T + ((<usize>i) << 2)));
    }
  }
}

/**
 * The gradient products of the rows flagged in near [rows] (int32), relative to each row's own
 * direction (see the module): acc_i += sum_j B_ij q_j - (sum_j B_ij) h_i in float64, with
 * B_ij = scale coef[i sm + j sk] (float32; + coef[j sm + i sk] when sym, the (A + A^T) of ntXent
 * and multiSimilarity), h_i = F_i finv64_i and q_j = Q_j qinv64_j (F [rows, d], Q [cols, d] the raw
 * rows): the same projection as the plain product sum_j B_ij q_j, which G's row i (float32,
 * or 0) held and is zeroed; a row of norm below 1e-12, which the backward does not project,
 * gets the plain product (in float64). acc [rows, d] (float64) is zeroed first unless
 * accumulate (and untouched when no row is flagged). Returns the number of rows flagged. Scratch w [cols] float64.
 */
export function metric_relative(
  coef: usize, sm: i32, sk: i32, sym: i32, rows: i32, cols: i32, F: usize, finv64: usize, Q: usize, qinv64: usize,
  d: i32, near: usize, G: usize, acc: usize, accumulate: i32, w: usize, scale: f64,
): i32 {
  let flagged = 0;
  for (let i = 0; i < rows; i++) flagged += i32At(near, i);
  if (!flagged) return 0;
  if (!accumulate) memory.fill(acc, 0, (<usize>rows * <usize>d) << 3);
  const rb = (<usize>d) << 2;
  for (let i = 0; i < rows; i++) {
    if (!i32At(near, i)) continue;
    const o = <usize>i * <usize>d, out = acc + (o << 3), f = F + (o << 2);
    if (G) memory.fill(G + (o << 2), 0, rb);
    let total: f64 = 0;
    for (let j = 0; j < cols; j++) {
      let c = <f64>load<f32>(coef + ((<usize>i * <usize>sm + <usize>j * <usize>sk) << 2));
      if (sym) c += <f64>load<f32>(coef + ((<usize>j * <usize>sm + <usize>i * <usize>sk) << 2));
      c *= scale;
      total += c;
      setF64(w, j, c * f64At(qinv64, j));
    }
    const hw = Math.sqrt(rowDot(f, f, d)) >= 1e-12 ? -total * f64At(finv64, i) : 0;
    // Eight columns at a time in four float64x2 sums, the rows q_j streamed past them.
    let k = 0;
    for (; k + 8 <= d; k += 8) {
      const ko = (<usize>k) << 2;
      let s0 = f64x2.splat(0), s1 = f64x2.splat(0), s2 = f64x2.splat(0), s3 = f64x2.splat(0);
      let q = Q + ko;
      for (let j = 0; j < cols; j++, q += rb) {
        const vw = f64x2.splat(f64At(w, j));
        s0 = f64x2.add(s0, f64x2.mul(vw, f64x2.promote_low_f32x4(v128.load64_zero(q))));
        s1 = f64x2.add(s1, f64x2.mul(vw, f64x2.promote_low_f32x4(v128.load64_zero(q + 8))));
        s2 = f64x2.add(s2, f64x2.mul(vw, f64x2.promote_low_f32x4(v128.load64_zero(q + 16))));
        s3 = f64x2.add(s3, f64x2.mul(vw, f64x2.promote_low_f32x4(v128.load64_zero(q + 24))));
      }
      const p = out + ((<usize>k) << 3), vh = f64x2.splat(hw), fk = f + ko;
      v128.store(p, f64x2.add(v128.load(p), f64x2.add(s0, f64x2.mul(vh, f64x2.promote_low_f32x4(v128.load64_zero(fk))))));
      v128.store(p + 16, f64x2.add(v128.load(p + 16), f64x2.add(s1, f64x2.mul(vh, f64x2.promote_low_f32x4(v128.load64_zero(fk + 8))))));
      v128.store(p + 32, f64x2.add(v128.load(p + 32), f64x2.add(s2, f64x2.mul(vh, f64x2.promote_low_f32x4(v128.load64_zero(fk + 16))))));
      v128.store(p + 48, f64x2.add(v128.load(p + 48), f64x2.add(s3, f64x2.mul(vh, f64x2.promote_low_f32x4(v128.load64_zero(fk + 24))))));
    }
    for (; k < d; k++) {
      let s = hw * <f64>load<f32>(f + ((<usize>k) << 2));
      for (let j = 0; j < cols; j++) s += f64At(w, j) * <f64>load<f32>(Q + <usize>j * rb + ((<usize>k) << 2));
      setF64(out, k, f64At(out, k) + s);
    }
  }
  return flagged;
}
