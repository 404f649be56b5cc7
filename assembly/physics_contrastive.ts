// Kernel of `physicsContrastive` (a rule-aware supervised contrastive loss; Khosla et al.
// 2020, "Supervised Contrastive Learning"). The host (src/wasm/physics_contrastive.ts)
// forms the B x B logits S_ij = f_i . f_j / tau with the heads' GEMM (assembly/gemm.ts;
// S is symmetric: only its upper blocks are multiplied, then `mirror`ed). Per valid
// anchor i, with w_ij = 1 - R_ij (0 for j = i), P_ij its positives and m_i the largest
// S_ij among the denominator's terms (w_ij > 0):
//   den_i  = sum_j w_ij e^(S_ij - m_i)
//   loss_i = log den_i - sum_j P_ij (S_ij - m_i) / |P_i|
//   A_ij   = s_i (w_ij e^(S_ij - m_i) / den_i - P_ij / |P_i|) / tau     (d loss / d (f_i . f_j))
// and the gradient is (A + A^T) f (`symmetrize`, then one more GEMM). The argmax r of the
// denominator is kept out of its float32 sum (its term is w_ir exactly), so that
// p_ir - 1 = -(the others) / den keeps its accuracy when the anchor's one positive
// dominates, and log den = log1p((w_ir - 1) + others).
import { expNeg } from "./math";

const BLOCK: i32 = 1024;

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

// The B x B passes below (mirror, symmetrize) pair S_ij with S_ji. Walking S by columns
// touches a new row (a new cache line, at B = 4096 a new 16 KB stride) for every float;
// instead they go by TILE x TILE blocks (both blocks of a pair stay in cache) of 4 x 4
// blocks moved as four f32x4 rows, transposed in registers. Same arithmetic as the plain
// loops: a copy, and one float32 addition per pair.
const TILE: i32 = 64;

/** The 4 x 4 block of rows [r0..r3] transposed (its columns as rows). */
// @ts-ignore: decorator
@inline function tr0(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 0, 4, 1, 5), i32x4.shuffle(r2, r3, 0, 4, 1, 5), 0, 1, 4, 5);
}
// @ts-ignore: decorator
@inline function tr1(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 0, 4, 1, 5), i32x4.shuffle(r2, r3, 0, 4, 1, 5), 2, 3, 6, 7);
}
// @ts-ignore: decorator
@inline function tr2(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 2, 6, 3, 7), i32x4.shuffle(r2, r3, 2, 6, 3, 7), 0, 1, 4, 5);
}
// @ts-ignore: decorator
@inline function tr3(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 2, 6, 3, 7), i32x4.shuffle(r2, r3, 2, 6, 3, 7), 2, 3, 6, 7);
}

/**
 * For every pair i > j (S [b, b]): with add 0, S_ij = S_ji (the lower triangle from the
 * upper); with add 1, S_ij = S_ji = S_ij + S_ji.
 */
function pairUp(S: usize, b: i32, add: bool): void {
  const row = (<usize>b) << 2;
  const b4 = b & ~3;
  for (let i0 = 0; i0 < b4; i0 += TILE) {
    const i1 = min(i0 + TILE, b4);
    for (let j0 = 0; j0 <= i0; j0 += TILE) {
      for (let i = i0; i < i1; i += 4) {
        const j1 = min(min(j0 + TILE, i1), i);
        for (let j = j0; j < j1; j += 4) {
          // p: the block at rows i.., columns j.. (below the diagonal); q: rows j.., columns i..
          const p = S + <usize>i * row + ((<usize>j) << 2), q = S + <usize>j * row + ((<usize>i) << 2);
          const q0 = v128.load(q), q1 = v128.load(q + row), q2 = v128.load(q + 2 * row), q3 = v128.load(q + 3 * row);
          let t0 = tr0(q0, q1, q2, q3), t1 = tr1(q0, q1, q2, q3), t2 = tr2(q0, q1, q2, q3), t3 = tr3(q0, q1, q2, q3);
          if (add) {
            t0 = f32x4.add(v128.load(p), t0);
            t1 = f32x4.add(v128.load(p + row), t1);
            t2 = f32x4.add(v128.load(p + 2 * row), t2);
            t3 = f32x4.add(v128.load(p + 3 * row), t3);
            v128.store(q, tr0(t0, t1, t2, t3));
            v128.store(q + row, tr1(t0, t1, t2, t3));
            v128.store(q + 2 * row, tr2(t0, t1, t2, t3));
            v128.store(q + 3 * row, tr3(t0, t1, t2, t3));
          }
          v128.store(p, t0);
          v128.store(p + row, t1);
          v128.store(p + 2 * row, t2);
          v128.store(p + 3 * row, t3);
        }
      }
    }
  }
  // The rest one float at a time: within the 4 x 4 blocks on the diagonal, and rows i >= b4.
  for (let i = 1; i < b; i++) {
    for (let j = i < b4 ? i & ~3 : 0; j < i; j++) {
      const p = S + <usize>i * row + ((<usize>j) << 2), q = S + <usize>j * row + ((<usize>i) << 2);
      const t = add ? load<f32>(p) + load<f32>(q) : load<f32>(q);
      store<f32>(p, t);
      store<f32>(q, t);
    }
  }
}

/** S[i][j] = S[j][i] for i > j: the lower triangle from the upper (S [b, b]). */
export function mirror(S: usize, b: i32): void {
  pairUp(S, b, false);
}

/** M = A + A^T in place (A [b, b]). */
export function symmetrize(A: usize, b: i32): void {
  pairUp(A, b, true);
  for (let i = 0; i < b; i++) {
    const p = A + ((<usize>i * <usize>b + <usize>i) << 2);
    store<f32>(p, load<f32>(p) + load<f32>(p));
  }
}

/** Anchor i's denominator weights w [b] (w_ii = 0) and positives pm [b] (1 or 0), float32. */
function fillWeights(i: i32, b: i32, labels: usize, rule: usize, k: i32, threshold: f64, w: usize, pm: usize): void {
  const yi = load<i32>(labels + ((<usize>i) << 2));
  const ruleRow = rule ? rule + ((<usize>yi * <usize>k) << 2) : 0;
  for (let j = 0; j < b; j++) {
    const yj = load<i32>(labels + ((<usize>j) << 2));
    const r: f32 = rule ? load<f32>(ruleRow + ((<usize>yj) << 2)) : 0;
    const o = (<usize>j) << 2;
    store<f32>(w + o, j == i ? 0 : 1 - r);
    store<f32>(pm + o, j != i && (yi == yj || <f64>r > threshold) ? 1 : 0);
  }
  store<f32>(w + ((<usize>i) << 2), 0);
}

/** The largest row[j] * scale with w[j] > 0 (-inf if none). */
function maskedMax(row: usize, w: usize, b: i32, scale: f32): f32 {
  const vs = f32x4.splat(scale), ninf = f32x4.splat(-Infinity), zero = f32x4.splat(0);
  let m4 = ninf;
  let j = 0;
  for (; j + 4 <= b; j += 4) {
    const o = (<usize>j) << 2;
    const x = f32x4.mul(v128.load(row + o), vs);
    m4 = f32x4.pmax(m4, v128.bitselect(x, ninf, f32x4.gt(v128.load(w + o), zero)));
  }
  let m = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
  for (; j < b; j++) {
    const o = (<usize>j) << 2;
    if (load<f32>(w + o) > 0) m = max(m, load<f32>(row + o) * scale);
  }
  return m;
}

/**
 * sum_{j in [from, to)} w_j e^(row_j * scale - m) (float64 over float32 blocks); with
 * `out` (may equal row) the terms are stored there. Entries with w_j = 0 (the anchor
 * itself, pairs of rule weight 1) may lie above m: their argument is clamped to 0.
 */
function weightedExpSum(row: usize, w: usize, from: i32, to: i32, m: f32, scale: f32, out: usize): f64 {
  const vs = f32x4.splat(scale), vm = f32x4.splat(m), zero = f32x4.splat(0);
  let total: f64 = 0;
  let j = from;
  while (j + 4 <= to) {
    const end = min(to, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) {
      const o = (<usize>j) << 2;
      const e = f32x4.mul(v128.load(w + o), expNeg(f32x4.pmin(f32x4.sub(f32x4.mul(v128.load(row + o), vs), vm), zero)));
      if (out) v128.store(out + o, e);
      s = f32x4.add(s, e);
    }
    total += hsum(s);
  }
  for (; j < to; j++) {
    const o = (<usize>j) << 2;
    const x = min(load<f32>(row + o) * scale - m, <f32>0);
    const e = load<f32>(w + o) * f32x4.extract_lane(expNeg(f32x4.splat(x)), 0);
    if (out) store<f32>(out + o, e);
    total += <f64>e;
  }
  return total;
}

/** sum_j pm_j (row_j * scale - m) (float64 over float32 blocks). */
function positiveSum(row: usize, pm: usize, b: i32, m: f32, scale: f32): f64 {
  const vs = f32x4.splat(scale), vm = f32x4.splat(m);
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= b) {
    const end = min(b, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) {
      const o = (<usize>j) << 2;
      s = f32x4.add(s, f32x4.mul(v128.load(pm + o), f32x4.sub(f32x4.mul(v128.load(row + o), vs), vm)));
    }
    total += hsum(s);
  }
  for (; j < b; j++) {
    const o = (<usize>j) << 2;
    if (load<f32>(pm + o) != 0) total += <f64>(load<f32>(row + o) * scale - m);
  }
  return total;
}

/**
 * For precise logits: off[i] (float64) = the largest S_ij * scale among anchor i's
 * denominator terms (0 for anchors that are not valid). S [b, b]; scratch w, pm [b].
 */
export function contrastive_max(
  S: usize, b: i32, labels: usize, rule: usize, k: i32, threshold: f64, scale: f32, valid: usize,
  off: usize, w: usize, pm: usize,
): void {
  for (let i = 0; i < b; i++) {
    let m: f64 = 0;
    if (load<u8>(valid + <usize>i)) {
      fillWeights(i, b, labels, rule, k, threshold, w, pm);
      m = <f64>maskedMax(S + ((<usize>i * <usize>b) << 2), w, b, scale);
    }
    store<f64>(off + ((<usize>i) << 3), m);
  }
}

/**
 * S [b, b]: the logits are S_ij * scale (any per-row offset: the loss does not see it);
 * labels [b]; rule [k, k] float32 or 0 (all 0); valid [b] uint8; positives [b] int32;
 * scales [b] float64 or 0 (no gradient: S is left as is); rowLoss [b] float64 out.
 * With scales, row i of S is overwritten by A_i (see above; invTau = 1 / tau).
 * Scratch: w, pm [b] float32.
 */
export function contrastive_rows(
  S: usize, b: i32, labels: usize, rule: usize, k: i32, threshold: f64, scale: f32, valid: usize,
  positives: usize, scales: usize, invTau: f64, rowLoss: usize, w: usize, pm: usize,
): void {
  for (let i = 0; i < b; i++) {
    const row = S + ((<usize>i * <usize>b) << 2);
    if (!load<u8>(valid + <usize>i)) {
      store<f64>(rowLoss + ((<usize>i) << 3), 0);
      if (scales) memory.fill(row, 0, (<usize>b) << 2);
      continue;
    }
    fillWeights(i, b, labels, rule, k, threshold, w, pm);
    const m = maskedMax(row, w, b, scale);
    // r: the first denominator term at the maximum (its exponential is exactly 1)
    let r = 0;
    while (r < b - 1 && !(load<f32>(w + ((<usize>r) << 2)) > 0 && load<f32>(row + ((<usize>r) << 2)) * scale == m)) r++;
    const np = <f64>load<i32>(positives + ((<usize>i) << 2));
    const pos = positiveSum(row, pm, b, m, scale);
    const out = scales ? row : 0;
    const others = weightedExpSum(row, w, 0, r, m, scale, out) + weightedExpSum(row, w, r + 1, b, m, scale, out);
    const wr = <f64>load<f32>(w + ((<usize>r) << 2));
    const den = wr + others;
    store<f64>(rowLoss + ((<usize>i) << 3), Math.log1p((wr - 1) + others) - pos / np);
    if (!scales) continue;
    const c = load<f64>(scales + ((<usize>i) << 3)) * invTau;
    // A_ij = c (e_j / den - pm_j / |P|) for j != r; A_ir in float64.
    const va = f32x4.splat(<f32>(c / den)), vp = f32x4.splat(<f32>(c / np));
    let j = 0;
    for (; j + 4 <= b; j += 4) {
      const o = (<usize>j) << 2;
      v128.store(row + o, f32x4.sub(f32x4.mul(v128.load(row + o), va), f32x4.mul(v128.load(pm + o), vp)));
    }
    for (; j < b; j++) {
      const o = (<usize>j) << 2;
      store<f32>(row + o, <f32>(c / den) * load<f32>(row + o) - <f32>(c / np) * load<f32>(pm + o));
    }
    const pr = <f64>load<f32>(pm + ((<usize>r) << 2));
    const ar = pr != 0 && np == 1 ? -others / den : wr / den - pr / np;
    store<f32>(row + ((<usize>r) << 2), <f32>(c * ar));
  }
}
