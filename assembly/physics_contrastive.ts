// Kernel of `physicsContrastive` (a rule-aware supervised contrastive loss; Khosla et al.
// 2020, "Supervised Contrastive Learning"). `contrastive_dots` forms the B x B dot
// products f_i . f_j with the heads' GEMM (assembly/gemm.ts; S is symmetric: only its
// upper blocks are multiplied, then mirrored); the logits are S_ij / tau. Per valid
// anchor i, with w_ij = 1 - R_ij (0 for j = i), P_ij its positives and m_i the largest
// logit among the denominator's terms (w_ij > 0), `contrastive_rows` takes
//   den_i  = sum_j w_ij e^(S_ij - m_i)
//   loss_i = log den_i - sum_j P_ij (S_ij - m_i) / |P_i|
//   A_ij   = s_i (w_ij e^(S_ij - m_i) / den_i - P_ij / |P_i|) / tau     (d loss / d (f_i . f_j))
// in three passes over the row (weights, positives and the maximum; the exponentials
// and both sums; A), and `contrastive_grad` the gradient (A + A^T) f, block by block. The
// argmax r of the denominator is kept out of its float32 sum (its term is w_ir exactly),
// so that p_ir - 1 = -(the others) / den keeps its accuracy when the anchor's one
// positive dominates, and log den = log1p((w_ir - 1) + others).
//
// S lives in a [b, ld] buffer (ld >= b: the host pads the rows so that walking down a
// column does not map every row to the same cache set).
import { expNeg } from "./math";
import { gemm, transpose, tr0, tr1, tr2, tr3 } from "./gemm";

/** Floats per float32 partial sum (the partial sums add up in float64). */
const BLOCK: i32 = 1024;
/** Columns of S per product of `contrastive_dots`; rows and columns of A per block of `contrastive_grad`. */
const DOTS: i32 = 64;
const GRAD: i32 = 128;
/**
 * Columns per block of the mirror (S_ij = S_ji below the diagonal blocks): walking S by
 * columns touches a new row for every float (at B = 4096 a new 16 KB stride); by blocks
 * of DOTS x TILE both blocks of a pair stay in cache.
 */
const TILE: i32 = 64;

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

/**
 * out[ii * ldo + jj] = (add ? P[ii, jj] : 0) + Q[jj, ii] for ii < ni, jj < nj, with the
 * rows of P and Q `ld` floats apart: 4 x 4 blocks moved as four
 * f32x4 rows and transposed in registers, the edges one float at a time.
 */
function pairBlock(out: usize, ldo: i32, P: usize, Q: usize, ld: i32, ni: i32, nj: i32, add: bool): void {
  const row = (<usize>ld) << 2, orow = (<usize>ldo) << 2;
  const n4 = ni & ~3, m4 = nj & ~3;
  for (let ii = 0; ii < n4; ii += 4) {
    const p = P + <usize>ii * row, o = out + <usize>ii * orow, q = Q + ((<usize>ii) << 2);
    for (let jj = 0; jj < m4; jj += 4) {
      const c = (<usize>jj) << 2, qj = q + <usize>jj * row;
      const q0 = v128.load(qj), q1 = v128.load(qj + row), q2 = v128.load(qj + 2 * row), q3 = v128.load(qj + 3 * row);
      let t0 = tr0(q0, q1, q2, q3), t1 = tr1(q0, q1, q2, q3), t2 = tr2(q0, q1, q2, q3), t3 = tr3(q0, q1, q2, q3);
      if (add) {
        t0 = f32x4.add(v128.load(p + c), t0);
        t1 = f32x4.add(v128.load(p + row + c), t1);
        t2 = f32x4.add(v128.load(p + 2 * row + c), t2);
        t3 = f32x4.add(v128.load(p + 3 * row + c), t3);
      }
      v128.store(o + c, t0);
      v128.store(o + orow + c, t1);
      v128.store(o + 2 * orow + c, t2);
      v128.store(o + 3 * orow + c, t3);
    }
  }
  for (let ii = 0; ii < ni; ii++) {
    for (let jj = ii < n4 ? m4 : 0; jj < nj; jj++) {
      const t = load<f32>(Q + <usize>jj * row + ((<usize>ii) << 2));
      const o = out + <usize>ii * orow + ((<usize>jj) << 2);
      store<f32>(o, add ? load<f32>(P + <usize>ii * row + ((<usize>jj) << 2)) + t : t);
    }
  }
}

/**
 * S [b, ld] = F F^T (F [b, d]): the blocks of DOTS columns on and above the diagonal by
 * the GEMM (each against that block's transpose, in FT [b * d]), then the rest of the
 * lower triangle from the upper by TILE x TILE blocks.
 */
export function contrastive_dots(S: usize, ld: i32, F: usize, b: i32, d: i32, FT: usize): void {
  const row = (<usize>ld) << 2, fr = (<usize>d) << 2;
  for (let j0 = 0; j0 < b; j0 += DOTS) {
    const cols = min(DOTS, b - j0), ft = FT + <usize>j0 * fr;
    transpose(F + <usize>j0 * fr, cols, d, ft);
    gemm(S + ((<usize>j0) << 2), ld, j0 + cols, cols, d, F, d, 1, ft, cols, 0);
  }
  // Below the diagonal blocks: S[i0.., j0..] from S[j0.., i0..] transposed.
  for (let i0 = DOTS; i0 < b; i0 += DOTS) {
    const ni = min(DOTS, b - i0);
    for (let j0 = 0; j0 < i0; j0 += TILE) {
      pairBlock(S + <usize>i0 * row + ((<usize>j0) << 2), ld, 0, S + <usize>j0 * row + ((<usize>i0) << 2), ld, ni, min(TILE, i0 - j0), false);
    }
  }
}

/** The index of the argmax found by `fillRow`. */
let argmax: i32 = 0;

/**
 * Anchor i's denominator weights w [b] (w_ii = 0) and positives pm [b] (1 or 0), float32,
 * from row [b] of S: returns the largest row[j] * scale with w_j > 0 (-inf if none) and
 * sets `argmax` to its first index (0 if none). t32: the largest float32 <= threshold
 * (r > threshold for a float32 r exactly when r > t32).
 */
function fillRow(i: i32, row: usize, b: i32, labels: usize, rule: usize, k: i32, t32: f32, scale: f32, w: usize, pm: usize): f32 {
  const yi = load<i32>(labels + ((<usize>i) << 2));
  const ruleRow = rule ? rule + ((<usize>yi * <usize>k) << 2) : 0;
  const vy = i32x4.splat(yi), vi = i32x4.splat(i), vt = f32x4.splat(t32), vs = f32x4.splat(scale);
  const one = f32x4.splat(1), zero = f32x4.splat(0), ninf = f32x4.splat(-Infinity), four = i32x4.splat(4);
  let m4 = ninf, r4 = i32x4.splat(-1), idx = i32x4(0, 1, 2, 3);
  let j = 0;
  for (; j + 4 <= b; j += 4) {
    const o = (<usize>j) << 2;
    const y = v128.load(labels + o);
    let rv = zero;
    if (ruleRow) {
      rv = v128.load32_splat(ruleRow + ((<usize>i32x4.extract_lane(y, 0)) << 2));
      rv = v128.load32_lane(ruleRow + ((<usize>i32x4.extract_lane(y, 1)) << 2), rv, 1);
      rv = v128.load32_lane(ruleRow + ((<usize>i32x4.extract_lane(y, 2)) << 2), rv, 2);
      rv = v128.load32_lane(ruleRow + ((<usize>i32x4.extract_lane(y, 3)) << 2), rv, 3);
    }
    const other = v128.not(i32x4.eq(idx, vi));
    const wv = v128.and(f32x4.sub(one, rv), other);
    v128.store(w + o, wv);
    v128.store(pm + o, v128.and(v128.and(v128.or(i32x4.eq(y, vy), f32x4.gt(rv, vt)), other), one));
    const x = v128.bitselect(f32x4.mul(v128.load(row + o), vs), ninf, f32x4.gt(wv, zero));
    const up = f32x4.gt(x, m4);
    m4 = v128.bitselect(x, m4, up);
    r4 = v128.bitselect(idx, r4, up);
    idx = i32x4.add(idx, four);
  }
  // The largest lane; among equal lanes, the first index.
  let m: f32 = -Infinity, r: i32 = -1;
  const ml0 = f32x4.extract_lane(m4, 0), ml1 = f32x4.extract_lane(m4, 1), ml2 = f32x4.extract_lane(m4, 2), ml3 = f32x4.extract_lane(m4, 3);
  const rl0 = i32x4.extract_lane(r4, 0), rl1 = i32x4.extract_lane(r4, 1), rl2 = i32x4.extract_lane(r4, 2), rl3 = i32x4.extract_lane(r4, 3);
  if (ml0 > m) { m = ml0; r = rl0; }
  if (ml1 > m || (ml1 == m && rl1 >= 0 && rl1 < r)) { m = ml1; r = rl1; }
  if (ml2 > m || (ml2 == m && rl2 >= 0 && rl2 < r)) { m = ml2; r = rl2; }
  if (ml3 > m || (ml3 == m && rl3 >= 0 && rl3 < r)) { m = ml3; r = rl3; }
  for (; j < b; j++) {
    const o = (<usize>j) << 2;
    const yj = load<i32>(labels + o);
    const rj: f32 = ruleRow ? load<f32>(ruleRow + ((<usize>yj) << 2)) : 0;
    const wj: f32 = j == i ? 0 : 1 - rj;
    store<f32>(w + o, wj);
    store<f32>(pm + o, j != i && (yi == yj || rj > t32) ? 1 : 0);
    const x = load<f32>(row + o) * scale;
    if (wj > 0 && x > m) { m = x; r = j; }
  }
  argmax = max(r, 0);
  return m;
}

/** The largest float32 <= t. */
function floorF32(t: f64): f32 {
  const t32 = <f32>t;
  if (<f64>t32 <= t) return t32;
  const bits = reinterpret<u32>(t32);
  // Down one float32: towards 0 from above 0, away from it below (+0 goes to -2^-149).
  return reinterpret<f32>(t32 > 0 ? bits - 1 : bits == 0 ? 0x80000001 : bits + 1);
}

/** sum_{j: pm_j != 0} (f_i . f_j invTau - shift), in float64 (F [b, d]). */
function precisePositives(i: i32, b: i32, pm: usize, F: usize, d: i32, invTau: f64, shift: f64): f64 {
  const fi = F + ((<usize>i * <usize>d) << 2);
  let pos: f64 = 0;
  for (let j = 0; j < b; j++) {
    if (load<f32>(pm + ((<usize>j) << 2)) == 0) continue;
    const fj = F + ((<usize>j * <usize>d) << 2);
    let dot: f64 = 0;
    for (let q = 0; q < d; q++) dot += <f64>load<f32>(fi + ((<usize>q) << 2)) * <f64>load<f32>(fj + ((<usize>q) << 2));
    pos += dot * invTau - shift;
  }
  return pos;
}

/**
 * For precise logits: off[i] (float64) = the largest S_ij * scale among anchor i's
 * denominator terms (0 for anchors that are not valid). S [b, ld]; scratch w, pm [b].
 */
export function contrastive_max(
  S: usize, ld: i32, b: i32, labels: usize, rule: usize, k: i32, threshold: f64, scale: f32, valid: usize,
  off: usize, w: usize, pm: usize,
): void {
  const t32 = floorF32(threshold);
  for (let i = 0; i < b; i++) {
    let m: f64 = 0;
    if (load<u8>(valid + <usize>i)) m = <f64>fillRow(i, S + ((<usize>i * <usize>ld) << 2), b, labels, rule, k, t32, scale, w, pm);
    store<f64>(off + ((<usize>i) << 3), m);
  }
}

/**
 * S [b, ld]: the logits are S_ij * scale (any per-row offset: the loss does not see it);
 * labels [b]; rule [k, k] float32 or 0 (all 0); valid [b] uint8; positives [b] int32;
 * scales [b] float64 or 0 (no gradient: S is left as is); rowLoss [b] float64 out.
 * With scales, row i of S is overwritten by A_i (see above; invTau = 1 / tau).
 * Scratch: w, pm [b] float32. For precise logits (S_ij = f_i . f_j / tau - off_i, rounded
 * to float32 once), F [b, d] and off [b] float64, else F = 0: then the positives' terms
 * are taken in float64 from F. Unlike the denominator's they need not lie near the
 * maximum (a rule of 1 between two classes takes their pairs out of the denominator), and
 * a float32 logit of 8000 is good only to 5e-4.
 */
export function contrastive_rows(
  S: usize, ld: i32, b: i32, labels: usize, rule: usize, k: i32, threshold: f64, scale: f32, valid: usize,
  positives: usize, scales: usize, invTau: f64, rowLoss: usize, w: usize, pm: usize, F: usize, d: i32, off: usize,
): void {
  const t32 = floorF32(threshold), vs = f32x4.splat(scale), zero = f32x4.splat(0);
  for (let i = 0; i < b; i++) {
    const row = S + ((<usize>i * <usize>ld) << 2);
    if (!load<u8>(valid + <usize>i)) {
      store<f64>(rowLoss + ((<usize>i) << 3), 0);
      if (scales) memory.fill(row, 0, (<usize>b) << 2);
      continue;
    }
    const m = fillRow(i, row, b, labels, rule, k, t32, scale, w, pm);
    // r: the first denominator term at the maximum (its exponential is exactly 1), out of the sum.
    const r = argmax, ro = (<usize>r) << 2;
    const wr = <f64>load<f32>(w + ro), pr = <f64>load<f32>(pm + ro);
    store<f32>(w + ro, 0);
    // others = sum_{j != r} w_j e^(S_j - m) and pos = sum_j pm_j (S_j - m), float64 over
    // float32 blocks; with a gradient the terms e_j are stored in the row. Entries with
    // w_j = 0 (the anchor itself, pairs of rule weight 1) may lie above m: their argument
    // is clamped to 0.
    const vm = f32x4.splat(m);
    let others: f64 = 0, pos: f64 = 0;
    let j = 0;
    while (j + 4 <= b) {
      const end = min(b, j + BLOCK);
      let se = zero, sp = zero;
      for (; j + 4 <= end; j += 4) {
        const o = (<usize>j) << 2;
        const x = f32x4.sub(f32x4.mul(v128.load(row + o), vs), vm);
        const e = f32x4.mul(v128.load(w + o), expNeg(f32x4.pmin(x, zero)));
        if (scales) v128.store(row + o, e);
        se = f32x4.add(se, e);
        sp = f32x4.add(sp, f32x4.mul(v128.load(pm + o), x));
      }
      others += hsum(se);
      pos += hsum(sp);
    }
    for (; j < b; j++) {
      const o = (<usize>j) << 2;
      const x = load<f32>(row + o) * scale - m;
      const e = load<f32>(w + o) * f32x4.extract_lane(expNeg(f32x4.splat(min(x, <f32>0))), 0);
      if (scales) store<f32>(row + o, e);
      others += <f64>e;
      if (load<f32>(pm + o) != 0) pos += <f64>x;
    }
    if (F) pos = precisePositives(i, b, pm, F, d, invTau, load<f64>(off + ((<usize>i) << 3)) + <f64>m);
    const np = <f64>load<i32>(positives + ((<usize>i) << 2));
    const den = wr + others;
    store<f64>(rowLoss + ((<usize>i) << 3), Math.log1p((wr - 1) + others) - pos / np);
    if (!scales) continue;
    const c = load<f64>(scales + ((<usize>i) << 3)) * invTau;
    // A_ij = c (e_j / den - pm_j / |P|) for j != r; A_ir in float64.
    const va = f32x4.splat(<f32>(c / den)), vp = f32x4.splat(<f32>(c / np));
    for (j = 0; j + 4 <= b; j += 4) {
      const o = (<usize>j) << 2;
      v128.store(row + o, f32x4.sub(f32x4.mul(v128.load(row + o), va), f32x4.mul(v128.load(pm + o), vp)));
    }
    for (; j < b; j++) {
      const o = (<usize>j) << 2;
      store<f32>(row + o, <f32>(c / den) * load<f32>(row + o) - <f32>(c / np) * load<f32>(pm + o));
    }
    const ar = pr != 0 && np == 1 ? -others / den : wr / den - pr / np;
    store<f32>(row + ro, <f32>(c * ar));
  }
}

/**
 * G [b, d] = (A + A^T) F for A [b, ld] (the rows' coefficients) and F [b, d]: for each
 * pair of GRAD x GRAD blocks I >= J, T = A_IJ + A_JI^T (scratch T [GRAD * GRAD]), then
 * G_I += T F_J and, below the diagonal, G_J += T^T F_I, by the GEMM.
 */
export function contrastive_grad(A: usize, ld: i32, b: i32, F: usize, d: i32, G: usize, T: usize): void {
  const row = (<usize>ld) << 2, fr = (<usize>d) << 2;
  memory.fill(G, 0, <usize>b * fr);
  for (let i0 = 0; i0 < b; i0 += GRAD) {
    const ni = min(GRAD, b - i0);
    for (let j0 = 0; j0 <= i0; j0 += GRAD) {
      const nj = min(GRAD, b - j0);
      pairBlock(T, nj, A + <usize>i0 * row + ((<usize>j0) << 2), A + <usize>j0 * row + ((<usize>i0) << 2), ld, ni, nj, true);
      gemm(G + <usize>i0 * fr, d, ni, d, nj, T, nj, 1, F + <usize>j0 * fr, d, 1);
      if (j0 < i0) gemm(G + <usize>j0 * fr, d, nj, d, ni, T, 1, nj, F + <usize>i0 * fr, d, 1);
    }
  }
}
